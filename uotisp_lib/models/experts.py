"""The committee of expert discriminators of EGUOT-ISP (Perevozchikov et al., arXiv 2512.05635).

The paper describes "a committee of expert discriminators" giving targeted gradients for colour
fidelity, structural artifacts and frequency-domain realism, but publishes no design. Everything
below is OUR documented reconstruction:

- each expert is a small spectrally normalised conv net on its own fixed, parameter-free *view*
  of an sRGB image ``[B,3,H,W]`` and returns one logit per image ``[B]`` (the mean of a coarse
  patch-logit map);
- :class:`ColourExpert` sees low-pass chroma (BT.601 U, V averaged over ``pool x pool`` blocks),
  optionally with a soft UV histogram; :class:`StructureExpert` sees Sobel gradients of the gray
  image (colour-blind); :class:`FrequencyExpert` sees the centred log amplitude spectrum
  ``log1p |FFT2(gray)|`` (shift-invariant);
- :class:`ExpertCommittee` sums per-expert hinge losses for the discriminators and, for the
  generator, can rescale each expert's term by the inverse norm of its own gradient (the NTIRE
  organisers' baseline idea, docs/references.md), so none dominates. Given the generator's main loss as
  ``reference`` (the transport objective, plus the paired loss), each expert's gradient is set to
  ``weight`` times the norm of the reference's gradient (the adaptive weight of Esser et al.,
  "Taming Transformers", 2021, per expert), which keeps the committee on the scale of the rest of
  the loss whatever the image size and batch.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Mapping, Sequence

import kornia
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from uotisp_lib.stats import rgb_to_yuv, soft_histogram_uv

Tensor = torch.Tensor

BALANCE_MODES = ("none", "grad_norm")


def _check_rgb(img: object, fn: str) -> Tensor:
    if not isinstance(img, torch.Tensor):
        raise TypeError(f"{fn}: expected an sRGB torch.Tensor [B,3,H,W], got {type(img).__name__}")
    if not img.is_floating_point():
        raise TypeError(f"{fn}: expected a floating-point sRGB tensor [B,3,H,W], got dtype {img.dtype}")
    if img.ndim != 4 or img.shape[1] != 3:
        raise ValueError(f"{fn}: expected an sRGB image of shape [B,3,H,W], got {tuple(img.shape)}")
    return img


def _sn_conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Module:
    return spectral_norm(nn.Conv2d(cin, cout, k, stride, padding=k // 2))


def _trunk(cin: int, width: int) -> nn.Sequential:
    """conv3x3 -> 2x (strided conv3x3) -> conv1x1 to one logit channel; LeakyReLU(0.2); all SN."""
    return nn.Sequential(
        _sn_conv(cin, width),
        nn.LeakyReLU(0.2),
        _sn_conv(width, 2 * width, stride=2),
        nn.LeakyReLU(0.2),
        _sn_conv(2 * width, 2 * width, stride=2),
        nn.LeakyReLU(0.2),
        _sn_conv(2 * width, 1, k=1),
    )


def gray(img: Tensor) -> Tensor:
    """BT.601 luma ``[B,1,H,W]`` of sRGB ``[B,3,H,W]`` (kornia)."""
    return kornia.color.rgb_to_grayscale(img)


class ColourExpert(nn.Module):
    """Colour expert: a discriminator on low-pass chroma.

    View: U and V of BT.601 YUV (:func:`uotisp_lib.stats.rgb_to_yuv`, shifted by +0.5) averaged over
    ``pool x pool`` blocks -> ``[B,2,H/pool,W/pool]``. Since U, V are affine in RGB, the view ignores
    any texture whose colour averages to zero in every block and any luma-only change that adds the
    same amount to R, G and B. With ``hist_bins > 0`` a soft joint UV histogram (``hist_bins^2``
    values, sigma ``hist_sigma``) goes through a spectrally normalised linear layer and is added to
    the logit.
    """

    def __init__(self, width: int = 32, pool: int = 4, hist_bins: int = 0, hist_sigma: float = 0.05) -> None:
        super().__init__()
        if pool < 1 or width < 1 or hist_bins < 0:
            raise ValueError(f"ColourExpert: expected pool >= 1, width >= 1, hist_bins >= 0; got {pool}, {width}, {hist_bins}")
        self.pool, self.hist_bins, self.hist_sigma = pool, hist_bins, hist_sigma
        self.net = _trunk(2, width)
        self.hist_head = spectral_norm(nn.Linear(hist_bins * hist_bins, 1)) if hist_bins else None

    def view(self, img: Tensor) -> Tensor:
        """sRGB ``[B,3,H,W]`` (H, W multiples of ``pool``) -> pooled chroma ``[B,2,H/pool,W/pool]``."""
        _check_rgb(img, "ColourExpert.view")
        h, w = img.shape[-2:]
        if h % self.pool or w % self.pool:
            raise ValueError(f"ColourExpert.view: expected H and W multiples of pool={self.pool}, got {h}x{w}")
        return F.avg_pool2d(rgb_to_yuv(img)[:, 1:], self.pool)

    def forward(self, img: Tensor) -> Tensor:
        """sRGB ``[B,3,H,W]`` -> logits ``[B]``."""
        logit = self.net(self.view(img)).mean(dim=(1, 2, 3))
        if self.hist_head is not None:
            hist = soft_histogram_uv(img, bins=self.hist_bins, sigma=self.hist_sigma)
            logit = logit + self.hist_head(hist).squeeze(1)
        return logit


class StructureExpert(nn.Module):
    """Structure expert: a colour-blind discriminator on gray-image gradients.

    View: Sobel x/y gradients of the BT.601 gray image (:func:`kornia.filters.spatial_gradient`,
    normalised, replicate border) -> ``[B,2,H,W]``; invariant to adding a constant to all channels
    and to any chroma change that keeps luma.
    """

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.net = _trunk(2, width)

    def view(self, img: Tensor) -> Tensor:
        """sRGB ``[B,3,H,W]`` -> Sobel gradients ``[B,2,H,W]`` (d/dx, d/dy)."""
        _check_rgb(img, "StructureExpert.view")
        return kornia.filters.spatial_gradient(gray(img), mode="sobel", order=1, normalized=True)[:, 0]

    def forward(self, img: Tensor) -> Tensor:
        """sRGB ``[B,3,H,W]`` -> logits ``[B]``."""
        return self.net(self.view(img)).mean(dim=(1, 2, 3))


class FrequencyExpert(nn.Module):
    """Frequency expert: a discriminator on the log amplitude spectrum.

    View: ``log1p |FFT2(gray)|`` with the orthonormal FFT (size-independent scale), ``fftshift``-ed
    so the DC term sits at the centre and radius = frequency -> ``[B,1,H,W]``. Amplitudes ignore
    phase, so the view is invariant to circular shifts of the image. The trunk's convolutions see
    local neighbourhoods of frequencies; the logit is their mean.
    """

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.net = _trunk(1, width)

    def view(self, img: Tensor) -> Tensor:
        """sRGB ``[B,3,H,W]`` -> centred log amplitude spectrum ``[B,1,H,W]``."""
        _check_rgb(img, "FrequencyExpert.view")
        spec = torch.fft.fft2(gray(img), norm="ortho")
        # |z| written as sqrt(re^2 + im^2 + eps): torch's complex abs has an undefined gradient at 0.
        amp = torch.sqrt(spec.real**2 + spec.imag**2 + 1e-12)
        return torch.fft.fftshift(torch.log1p(amp), dim=(-2, -1))

    def forward(self, img: Tensor) -> Tensor:
        """sRGB ``[B,3,H,W]`` -> logits ``[B]``."""
        return self.net(self.view(img)).mean(dim=(1, 2, 3))


EXPERTS: dict[str, type[nn.Module]] = {
    "colour": ColourExpert,
    "structure": StructureExpert,
    "frequency": FrequencyExpert,
}


def _grad_norm(loss: Tensor, targets: list[Tensor], loss_scale: float = 1.0) -> float:
    """Norm of ``d loss / d targets`` over all targets (unused ones count 0); the graph is kept.
    ``loss_scale``: the loss is multiplied by it before the backward and the norm divided by it
    after (float16 autocast: keeps small gradients from flushing to zero; when that overflows, the
    unscaled gradient's norm is returned)."""
    grads = torch.autograd.grad(loss * loss_scale if loss_scale != 1.0 else loss, targets, retain_graph=True, allow_unused=True)
    norm = math.sqrt(sum(float(g.detach().float().pow(2).sum()) for g in grads if g is not None))
    if loss_scale != 1.0:
        # scaled too far (float16 overflow): the unscaled gradient instead
        return norm / loss_scale if math.isfinite(norm) else _grad_norm(loss, targets)
    return norm


def _check_logits(out: object, name: str, b: int) -> Tensor:
    if not isinstance(out, torch.Tensor) or out.ndim != 1 or out.shape[0] != b:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"ExpertCommittee: expert {name!r} must return logits of shape [{b}], got {shape}")
    return out


class ExpertCommittee(nn.Module):
    """A weighted committee of expert discriminators (EGUOT-ISP; our reconstruction).

    Args:
        experts: name -> module mapping sRGB ``[B,3,H,W]`` to logits ``[B]``.
        weights: name -> weight of its generator term (missing names get 1.0).
        balance: ``"none"`` (plain weighted sum) or ``"grad_norm"``: each expert's generator term
            is divided by the (detached) norm of its own gradient, so its gradient has norm equal
            to its weight.
        eps: added to gradient norms before dividing.
        max_scale: ceiling of a ``grad_norm`` scale (an expert whose gradient vanishes, e.g. a
            saturated discriminator, must not blow its term up; Esser et al. clamp at 1e4 too).
    """

    def __init__(
        self,
        experts: Mapping[str, nn.Module],
        weights: Mapping[str, float] | None = None,
        balance: str = "grad_norm",
        eps: float = 1e-12,
        max_scale: float = 1e4,
    ) -> None:
        super().__init__()
        if not experts:
            raise ValueError("ExpertCommittee: expected at least one expert")
        if balance not in BALANCE_MODES:
            raise ValueError(f"ExpertCommittee: unknown balance {balance!r}; expected one of {', '.join(BALANCE_MODES)}")
        weights = dict(weights or {})
        unknown = set(weights) - set(experts)
        if unknown:
            raise ValueError(f"ExpertCommittee: weights given for unknown experts {sorted(unknown)}; experts are {sorted(experts)}")
        self.experts = nn.ModuleDict(dict(experts))
        self.weights = {name: float(weights.get(name, 1.0)) for name in experts}
        self.balance = balance
        self.eps = eps
        self.max_scale = float(max_scale)
        # local gradient norms -> the norms to balance with (data-parallel training sets it to
        # uotisp_lib.distributed.global_norms: every rank then uses the global batch's norms); None: as they are
        self.reduce_norms: Callable[[list[float]], list[float]] | None = None
        self.norm_loss_scale = 1.0  # see _grad_norm (the trainer sets the fp16 GradScaler's scale)

    def forward(self, img: Tensor) -> dict[str, Tensor]:
        """Every expert's logits ``[B]`` on ``img``."""
        return {name: _check_logits(e(img), name, img.shape[0]) for name, e in self.experts.items()}

    def d_loss(self, real: Tensor, fake: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Discriminator loss: sum over experts of the hinge ``mean relu(1 - D(real)) + mean relu(1 + D(fake))``.

        ``fake`` is detached. Unweighted: each expert has its own parameters, so a weight would only
        rescale its learning rate. Logs ``<name>/d_loss``, ``<name>/d_real``, ``<name>/d_fake`` and ``d_loss``.
        """
        _check_rgb(real, "ExpertCommittee.d_loss (real)")
        _check_rgb(fake, "ExpertCommittee.d_loss (fake)")
        fake = fake.detach()
        total = real.new_zeros(())
        logs: dict[str, float] = {}
        for name, e in self.experts.items():
            d_real = _check_logits(e(real), name, real.shape[0])
            d_fake = _check_logits(e(fake), name, fake.shape[0])
            loss = F.relu(1.0 - d_real).mean() + F.relu(1.0 + d_fake).mean()
            total = total + loss
            logs[f"{name}/d_loss"] = float(loss.detach())
            logs[f"{name}/d_real"] = float(d_real.detach().mean())
            logs[f"{name}/d_fake"] = float(d_fake.detach().mean())
        logs["d_loss"] = float(total.detach())
        return total, logs

    def g_loss(
        self,
        fake: Tensor,
        params_for_grad_norm: Iterable[Tensor] | None = None,
        reference: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        """Generator loss: ``sum_e w_e s_e (-mean D_e(fake))``.

        ``s_e = 1`` with ``balance="none"``; with ``"grad_norm"`` ``s_e = r / (||g_e|| + eps)``
        (detached, at most :attr:`max_scale`), ``g_e`` the gradient of ``-mean D_e(fake)`` w.r.t.
        ``fake`` (or w.r.t. ``params_for_grad_norm``, e.g. the generator's last layer, when given)
        and ``r`` the norm of the gradient of the scalar ``reference`` loss w.r.t. the same tensors
        (``r = 1`` when ``reference`` is None: each expert's gradient then has norm ``w_e``).
        ``fake`` must require grad for the norms (with ``"none"`` they are then only logged). Logs
        ``<name>/g_loss`` (unscaled), ``<name>/grad_norm``, ``<name>/scale``, ``g_loss`` and, with
        a reference and ``"grad_norm"``, ``reference_grad_norm`` (``"none"`` ignores ``reference``).
        """
        _check_rgb(fake, "ExpertCommittee.g_loss (fake)")
        targets = list(params_for_grad_norm) if params_for_grad_norm is not None else [fake]
        can_grad = all(t.requires_grad for t in targets)
        if self.balance == "grad_norm" and not can_grad:
            raise ValueError(
                "ExpertCommittee.g_loss: balance='grad_norm' needs fake (or params_for_grad_norm) to require grad"
            )
        total = fake.new_zeros(())
        logs: dict[str, float] = {}
        with_ref = reference is not None and self.balance == "grad_norm"
        lossesd = {name: -_check_logits(e(fake), name, fake.shape[0]).mean() for name, e in self.experts.items()}
        norms: list[float] = []
        if can_grad:  # the reference's norm first, then each expert's; reduced together (one all-reduce)
            s = self.norm_loss_scale
            norms = ([_grad_norm(reference, targets, s)] if with_ref else []) + [_grad_norm(v, targets, s) for v in lossesd.values()]
            if self.reduce_norms is not None:
                norms = self.reduce_norms(norms)
        ref_norm = 1.0
        if with_ref:
            ref_norm = norms.pop(0)
            logs["reference_grad_norm"] = ref_norm
        for i, (name, loss) in enumerate(lossesd.items()):
            scale = 1.0
            if can_grad:
                norm = norms[i]
                logs[f"{name}/grad_norm"] = norm
                if self.balance == "grad_norm":
                    scale = min(ref_norm / (norm + self.eps), self.max_scale)
            logs[f"{name}/g_loss"] = float(loss.detach())
            logs[f"{name}/scale"] = scale
            total = total + self.weights[name] * scale * loss
        logs["g_loss"] = float(total.detach())
        return total, logs


def build_committee(
    names: Sequence[str] = ("colour", "structure", "frequency"),
    width: int = 32,
    weights: Mapping[str, float] | None = None,
    balance: str = "grad_norm",
) -> ExpertCommittee:
    """A committee of the named experts (:data:`EXPERTS`), each of trunk ``width``."""
    names = list(names)
    bad = [n for n in names if n not in EXPERTS]
    if bad or not names:
        raise ValueError(f"build_committee: unknown experts {bad}; expected a non-empty subset of {', '.join(EXPERTS)}")
    return ExpertCommittee({n: EXPERTS[n](width=width) for n in names}, weights, balance)
