"""Training losses: unpaired statistic losses, hinge adversarial losses and paired losses.

Statistic losses follow Semantic Pseudo-Pairing (Borelli Image, NTIRE 2026 unpaired ISP challenge,
arXiv 2605.07495): a prediction ``y_hat`` is compared with the target image ``y`` it was
pseudo-paired with, through statistics that ignore pixel alignment (channel moments, soft Y and
joint UV histograms, Gram matrices of deep features), plus total variation on ``y_hat`` and a hinge
GAN term in stage 2.

Conventions
-----------
* Images are ``[B, 3, H, W]`` sRGB in [0, 1]. Statistic losses are **per pair**: ``y_hat[i]`` is
  compared with ``y[i]`` (Borelli matches pseudo-pairs one-to-one), so the batch sizes must agree;
  the spatial sizes may differ (every statistic is pooled over pixels).
* Every loss returns a scalar tensor, the mean over the batch (and over statistic entries, e.g. the
  MSE of histograms is the mean over bins; histograms sum to 1 so these values are small, ~1e-4,
  as in the reference).
* Statistics come from :mod:`uotisp_lib.stats` (BT.601 YUV, soft histograms, Gram matrices).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from kornia.losses import total_variation
from torch import nn

from uotisp_lib import metrics
from uotisp_lib.stats import channel_moments, gram_matrix, soft_histogram_uv, soft_histogram_y

__all__ = [
    "BORELLI_WEIGHTS",
    "LOSS_TERMS",
    "FeatureExtractor",
    "GramLoss",
    "StatisticLoss",
    "de2000_loss",
    "gram_loss",
    "hinge_d_loss",
    "hinge_g_loss",
    "l1_loss",
    "moment_loss",
    "ssim_loss",
    "tv_loss",
    "uv_histogram_loss",
    "y_histogram_loss",
]

#: A callable image batch ``[B, 3, H, W]`` in [0, 1] -> list of feature maps ``[B, C_l, H_l, W_l]``.
FeatureExtractor = Callable[[torch.Tensor], Sequence[torch.Tensor]]

#: Names of the :class:`StatisticLoss` terms, in logging order.
LOSS_TERMS = ("moment", "y_hist", "uv_hist", "gram", "tv", "adv")

#: Borelli Image's loss weights (arXiv 2605.07495): stage 1 without GAN, stage 2 with a hinge GAN.
BORELLI_WEIGHTS: dict[str, dict[str, float]] = {
    "stage1": {"moment": 1.0, "y_hist": 1.0, "uv_hist": 1.5, "gram": 1.0, "tv": 0.05, "adv": 0.0},
    "stage2": {"moment": 0.2, "y_hist": 1.0, "uv_hist": 1.5, "gram": 1.0, "tv": 0.01, "adv": 0.001},
}


# --------------------------------------------------------------------------- input checks
def _check_images(name: str, x: torch.Tensor, label: str) -> None:
    """Raise a clear error unless ``x`` is a non-empty floating ``[B, 3, H, W]`` tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected {label} to be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"{name}: expected {label} of shape [B, 3, H, W] (sRGB), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected {label} as a floating-point tensor in [0, 1], got dtype {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"{name}: expected non-empty {label}, got shape {tuple(x.shape)}")


def _check_pairs(name: str, y_hat: torch.Tensor, y: torch.Tensor) -> None:
    """Check two image batches of pseudo-pairs: same batch size, any spatial size, same device."""
    _check_images(name, y_hat, "y_hat")
    _check_images(name, y, "y")
    if y_hat.shape[0] != y.shape[0]:
        raise ValueError(
            f"{name}: expected y_hat and y with the same batch size (pseudo-pairs are compared one-to-one), "
            f"got {y_hat.shape[0]} and {y.shape[0]}"
        )
    if y_hat.device != y.device:
        raise ValueError(f"{name}: y_hat is on {y_hat.device} but y is on {y.device}")


def _check_logits(name: str, logits: torch.Tensor, label: str) -> None:
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point() or logits.numel() == 0:
        raise ValueError(f"{name}: expected {label} as a non-empty floating-point tensor of discriminator logits")


# --------------------------------------------------------------------------- statistic losses
def moment_loss(y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """L1 distance of per-channel means plus L1 distance of per-channel standard deviations.

    Borelli Image (arXiv 2605.07495), "moment loss". ``y_hat = y + c`` (no clipping) gives ``|c|``.

    Args:
        y_hat, y: ``[B, 3, H, W]`` and ``[B, 3, H', W']`` pseudo-pairs in [0, 1].

    Returns:
        scalar ``mean|mu_hat - mu| + mean|sd_hat - sd|`` (means over B and the 3 channels).
    """
    _check_pairs("moment_loss", y_hat, y)
    mu_hat, sd_hat = channel_moments(y_hat)
    mu, sd = channel_moments(y)
    return F.l1_loss(mu_hat, mu) + F.l1_loss(sd_hat, sd)


def y_histogram_loss(y_hat: torch.Tensor, y: torch.Tensor, bins: int = 64, sigma: float = 0.02) -> torch.Tensor:
    """MSE between soft luma (BT.601 Y) histograms, 64 bins, Gaussian sigma 0.02 (Borelli Image).

    Args:
        y_hat, y: ``[B, 3, H, W]`` and ``[B, 3, H', W']`` pseudo-pairs in [0, 1].

    Returns:
        scalar mean over B and bins of the squared histogram difference (histograms sum to 1).
    """
    _check_pairs("y_histogram_loss", y_hat, y)
    return F.mse_loss(soft_histogram_y(y_hat, bins=bins, sigma=sigma), soft_histogram_y(y, bins=bins, sigma=sigma))


def uv_histogram_loss(y_hat: torch.Tensor, y: torch.Tensor, bins: int = 32, sigma: float = 0.03) -> torch.Tensor:
    """MSE between joint 2-D soft chroma (U, V) histograms, 32x32 bins, sigma 0.03 (Borelli Image).

    Args:
        y_hat, y: ``[B, 3, H, W]`` and ``[B, 3, H', W']`` pseudo-pairs in [0, 1].

    Returns:
        scalar mean over B and the ``bins**2`` cells of the squared histogram difference.
    """
    _check_pairs("uv_histogram_loss", y_hat, y)
    return F.mse_loss(soft_histogram_uv(y_hat, bins=bins, sigma=sigma), soft_histogram_uv(y, bins=bins, sigma=sigma))


def _features(name: str, extractor: FeatureExtractor, x: torch.Tensor, label: str) -> list[torch.Tensor]:
    """Run ``extractor`` and check it returned a non-empty list of 4-D feature maps."""
    feats = extractor(x)
    if isinstance(feats, torch.Tensor):
        feats = [feats]
    feats = list(feats)
    if not feats or any(not isinstance(f, torch.Tensor) or f.ndim != 4 for f in feats):
        shapes = [tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__ for f in feats]
        raise ValueError(f"{name}: the extractor must return a non-empty list of [B, C, H, W] maps for {label}, got {shapes}")
    return feats


def gram_loss(y_hat: torch.Tensor, y: torch.Tensor, extractor: FeatureExtractor) -> torch.Tensor:
    """Sum over feature layers of the MSE between Gram matrices ``F F^T / (C H W)`` (Borelli Image).

    Borelli uses VGG19 relu1_1..relu5_1 (see :func:`uotisp_lib.features.load_gram_extractor`);
    any callable works. The extractor receives [0, 1] images and does its own normalisation.
    Gradients through the target branch are only computed when ``y`` requires them.

    Args:
        y_hat, y: ``[B, 3, H, W]`` and ``[B, 3, H', W']`` pseudo-pairs in [0, 1].
        extractor: image batch -> list of feature maps ``[B, C_l, H_l, W_l]``.

    Returns:
        scalar ``sum_l mean((G_l(y_hat) - G_l(y))^2)``.
    """
    _check_pairs("gram_loss", y_hat, y)
    feats_hat = _features("gram_loss", extractor, y_hat, "y_hat")
    with torch.set_grad_enabled(torch.is_grad_enabled() and y.requires_grad):
        feats = _features("gram_loss", extractor, y, "y")
    if len(feats) != len(feats_hat):
        raise ValueError(f"gram_loss: the extractor returned {len(feats_hat)} maps for y_hat but {len(feats)} for y")
    total = y_hat.new_zeros(())
    for f_hat, f in zip(feats_hat, feats):
        total = total + F.mse_loss(gram_matrix(f_hat), gram_matrix(f))
    return total


def tv_loss(y_hat: torch.Tensor) -> torch.Tensor:
    """Anisotropic L1 total variation of the prediction (Borelli Image), resolution independent.

    Mean |vertical difference| plus mean |horizontal difference| per image and channel
    (:func:`kornia.losses.total_variation`, ``reduction="mean"``), then the mean over B and C.
    A ramp of slope ``s`` per pixel along one axis gives ``s``.

    Args:
        y_hat: ``[B, 3, H, W]``.

    Returns:
        scalar TV in intensity units per pixel.
    """
    _check_images("tv_loss", y_hat, "y_hat")
    return total_variation(y_hat, reduction="mean").mean()


# --------------------------------------------------------------------------- adversarial
def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge discriminator loss ``mean relu(1 - D(y)) + mean relu(1 + D(y_hat))``.

    Used by Borelli Image's stage 2 (Lim & Ye 2017 "Geometric GAN" hinge form). Pass logits of a
    detached ``y_hat``; logits of any shape (per-pixel maps are averaged).
    """
    _check_logits("hinge_d_loss", real_logits, "real_logits")
    _check_logits("hinge_d_loss", fake_logits, "fake_logits")
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def hinge_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge generator loss ``-mean D(y_hat)`` (Borelli Image, stage 2)."""
    _check_logits("hinge_g_loss", fake_logits, "fake_logits")
    return -fake_logits.mean()


# --------------------------------------------------------------------------- paired losses
def _check_same(name: str, pred: torch.Tensor, target: torch.Tensor) -> None:
    _check_images(name, pred, "pred")
    _check_images(name, target, "target")
    if pred.shape != target.shape:
        raise ValueError(
            f"{name}: expected pred and target of the same shape (aligned pairs), "
            f"got {tuple(pred.shape)} and {tuple(target.shape)}"
        )


def l1_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over all pixels and channels of aligned pairs ``[B, 3, H, W]``."""
    _check_same("l1_loss", pred, target)
    return F.l1_loss(pred, target)


def ssim_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 - SSIM`` averaged over the batch (metric protocol of :func:`uotisp_lib.metrics.ssim`).

    Inputs are clamped to [0, 1] by the metric (zero gradient outside); ``H, W >= 11``.
    """
    _check_same("ssim_loss", pred, target)
    return 1.0 - metrics.ssim(pred, target).mean()


def de2000_loss(pred: torch.Tensor, target: torch.Tensor, scale: float = 100.0) -> torch.Tensor:
    """Mean per-pixel CIEDE2000 divided by ``scale`` (default 100, so one dE unit = 0.01).

    Sharma, Wu, Dalal (2005) via :func:`uotisp_lib.metrics.delta_e2000`; inputs clamped to [0, 1].
    """
    _check_same("de2000_loss", pred, target)
    if scale <= 0:
        raise ValueError(f"de2000_loss: scale must be > 0, got {scale}")
    return metrics.delta_e2000(pred, target).mean() / scale


# --------------------------------------------------------------------------- modules
class GramLoss(nn.Module):
    """:func:`gram_loss` with a stored feature extractor (e.g. from ``load_gram_extractor``)."""

    def __init__(self, extractor: FeatureExtractor) -> None:
        super().__init__()
        if not callable(extractor):
            raise TypeError(f"GramLoss: expected a callable feature extractor, got {type(extractor).__name__}")
        self.extractor = extractor

    def forward(self, y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return gram_loss(y_hat, y, self.extractor)


def _resolve_weights(weights: str | Mapping[str, float]) -> dict[str, float]:
    """Stage name or mapping -> a full {term: weight} dict over :data:`LOSS_TERMS` (missing = 0)."""
    if isinstance(weights, str):
        if weights not in BORELLI_WEIGHTS:
            raise ValueError(f"StatisticLoss: unknown stage {weights!r}; expected one of {sorted(BORELLI_WEIGHTS)}")
        weights = BORELLI_WEIGHTS[weights]
    unknown = sorted(set(weights) - set(LOSS_TERMS))
    if unknown:
        raise ValueError(f"StatisticLoss: unknown loss terms {unknown}; expected a subset of {list(LOSS_TERMS)}")
    out = {term: float(weights.get(term, 0.0)) for term in LOSS_TERMS}
    negative = [term for term, w in out.items() if w < 0]
    if negative:
        raise ValueError(f"StatisticLoss: weights must be >= 0, got negative weights for {negative}")
    return out


class StatisticLoss(nn.Module):
    """Weighted sum of Borelli Image's generator losses (arXiv 2605.07495).

    ``total = w_moment * moment + w_y * y_hist + w_uv * uv_hist + w_gram * gram + w_tv * tv
    + w_adv * hinge_g``, with :data:`BORELLI_WEIGHTS` per stage. Terms of weight 0 are skipped
    (not computed, not logged).

    Args:
        weights: ``"stage1"``, ``"stage2"`` or a mapping term -> weight (missing terms are 0).
        extractor: feature extractor for the Gram term (required when its weight is > 0).
        y_bins, y_sigma, uv_bins, uv_sigma: soft-histogram settings (paper: 64 / 0.02, 32 / 0.03).

    Call ``loss(y_hat, y, fake_logits=None) -> (total, terms)``: ``fake_logits = D(y_hat)`` is needed
    when the adversarial weight is > 0; ``terms`` maps each computed term (unweighted) and
    ``"total"`` to a detached Python float, for logging.
    """

    def __init__(
        self,
        weights: str | Mapping[str, float] = "stage1",
        extractor: FeatureExtractor | None = None,
        *,
        y_bins: int = 64,
        y_sigma: float = 0.02,
        uv_bins: int = 32,
        uv_sigma: float = 0.03,
    ) -> None:
        super().__init__()
        self.weights = _resolve_weights(weights)
        if self.weights["gram"] > 0 and extractor is None:
            raise ValueError("StatisticLoss: the gram term has weight > 0, so an extractor is required")
        if extractor is not None and not callable(extractor):
            raise TypeError(f"StatisticLoss: expected a callable feature extractor, got {type(extractor).__name__}")
        self.extractor = extractor
        self.y_bins, self.y_sigma, self.uv_bins, self.uv_sigma = y_bins, y_sigma, uv_bins, uv_sigma

    def forward(
        self, y_hat: torch.Tensor, y: torch.Tensor, fake_logits: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss (scalar tensor) and the unweighted terms as floats."""
        _check_pairs("StatisticLoss", y_hat, y)
        w = self.weights
        if w["adv"] > 0 and fake_logits is None:
            raise ValueError("StatisticLoss: the adv term has weight > 0, so fake_logits = D(y_hat) is required")
        compute: dict[str, Callable[[], torch.Tensor]] = {
            "moment": lambda: moment_loss(y_hat, y),
            "y_hist": lambda: y_histogram_loss(y_hat, y, self.y_bins, self.y_sigma),
            "uv_hist": lambda: uv_histogram_loss(y_hat, y, self.uv_bins, self.uv_sigma),
            "gram": lambda: gram_loss(y_hat, y, self.extractor),  # type: ignore[arg-type]
            "tv": lambda: tv_loss(y_hat),
            "adv": lambda: hinge_g_loss(fake_logits),  # type: ignore[arg-type]
        }
        total = y_hat.new_zeros(())
        terms: dict[str, float] = {}
        for name in LOSS_TERMS:
            if w[name] > 0:
                value = compute[name]()
                total = total + w[name] * value
                terms[name] = float(value.detach())
        terms["total"] = float(total.detach())
        return total, terms

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v:g}" for k, v in self.weights.items())
