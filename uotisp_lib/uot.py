"""Semi-dual (unbalanced) optimal transport for ISP learning: conjugates, transport costs, objective.

The recipe is UOTM (Choi, Choi and Kang, "Generative Modeling through the Semi-dual Formulation of
Unbalanced Optimal Transport", NeurIPS 2023), as restated in docs/references.md. With a map ``T`` (the
ISP: packed RAW ``x`` -> sRGB) and a potential ``v`` on the *target* (sRGB) space:

- potential step, **minimised** over ``v``::

      L_v = E_y Psi2*(-v(y)) + E_x Psi1*(v(T(x)) - c(x, T(x))) + (gamma/2) E_y ||grad_y v(y)||^2

  (UOTM eq. 9 with ``-v^c(x) = sup_y [v(y) - c(x, y)] = v(T(x)) - c(x, T(x))`` at the optimal map;
  the semi-dual is a *sup* over ``v`` of ``-L_v`` without R1, so minimising ``L_v`` is the same);
- map step, **minimised** over ``T``: ``L_T = E_x [c(x, T(x)) - v(T(x))]``.

So ``v`` is pushed *up* on real targets and *down* on mapped samples (a WGAN-like critic), and the
map moves towards high ``v`` while paying the transport cost. ``Psi*`` linear on both sides is
balanced OT; a non-linear ``Psi2*`` relaxes the target marginal (targets may be left unmatched:
robustness to outlier targets, EGUOT-ISP), a non-linear ``Psi1*`` the source marginal.

RAW and sRGB live in different spaces, so every cost compares ``y = T(x)`` with a fixed naive ISP
rendering of ``x`` (:func:`naive_isp`), computed once per batch and passed as ``reference``
(Gazdieva et al., "An optimal transport perspective on unpaired image super-resolution": cost vs a
fixed naive up-scaling). Costs have ONE signature ``cost(x, y, *, reference) -> Tensor[B]``.

**tau normalisation.** Every cost here is ``tau * mean`` over pixels and channels (per image), so
``tau`` does not depend on the image size. The EGUOT author's prototype used ``tau = 1e-5`` on the
*summed* squared pixel cost; a sum over ``n`` values equals ``n`` times their mean, so the
equivalent per-pixel-mean tau is ``1e-5 * n``. For UP-ISP's 256 px RAW patches (512x512x3 sRGB
outputs) that is ``1e-5 * 3 * 512 * 512 ~= 7.86`` (:data:`PROTOTYPE_TAU_MEAN`); if "256 px" meant
the sRGB side it would be ``1e-5 * 3 * 256 * 256 ~= 1.97``. UOTM-style code also often scales
images to [-1, 1], which multiplies squared differences by 4; we work in [0, 1].

Everything is a pure function on tensors (any device, float32 or float64) and differentiable.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import kornia
import torch
import torch.nn.functional as F

from uotisp_lib.data.camera import DEFAULT_CAMERA, CameraModel, apply_matrix, forward
from uotisp_lib.preprocessing.demosaicing import demosaic
from uotisp_lib.preprocessing.raw import gray_world_gains, unpack_bayer, white_balance

Tensor = torch.Tensor
Conjugate = Callable[[Tensor], Tensor]
Cost = Callable[..., Tensor]

#: ``tau`` on a per-pixel-mean cost equivalent to the prototype's ``1e-5`` on a summed squared cost
#: of a 512x512x3 output (UP-ISP 256 px RAW patches); see the module docstring.
PROTOTYPE_TAU_MEAN = 1e-5 * 3 * 512 * 512

#: ``exp`` argument ceiling of the KL conjugate (e^50 ~ 5e21 stays finite in float32; beyond it the
#: value is constant and the gradient zero, which only matters for a diverging potential).
KL_MAX_ARG = 50.0


# ------------------------------------------------------------------------------------ conjugates
def psi_linear(t: Tensor) -> Tensor:
    """``Psi*(t) = t``: the convex conjugate of the indicator of ``{1}`` (balanced OT, hard marginal)."""
    return t


def psi_kl(t: Tensor) -> Tensor:
    """``Psi*(t) = e^t - 1``, conjugate of the KL divergence ``Psi(s) = s log s - s + 1`` (UOTM).

    UOTM writes ``e^t``; we subtract 1 so ``Psi*(0) = 0`` (``Psi*'(0) = 1`` either way), which only
    shifts the loss by a constant. The argument is clamped at :data:`KL_MAX_ARG` (no overflow).
    """
    return torch.expm1(t.clamp(max=KL_MAX_ARG))


def psi_chi2(t: Tensor) -> Tensor:
    """``Psi*(t) = s^2/4 + s`` with ``s = max(t, -2)``: conjugate of the chi^2 divergence (UOTM).

    Convex, non-decreasing (slope ``s/2 + 1 >= 0``, 0 below -2); ``Psi*(0) = 0``, ``Psi*'(0) = 1``.
    """
    s = t.clamp(min=-2.0)
    return s * s / 4.0 + s


def psi_softplus(t: Tensor) -> Tensor:
    """``Psi*(t) = log(1 + e^t)`` (UOTM's softplus; ``Psi*(0) = log 2``, ``Psi*'(0) = 1/2``).

    Computed with :func:`torch.nn.functional.softplus` (stable for large ``|t|``).
    """
    return F.softplus(t)


def psi_softplus_norm(t: Tensor) -> Tensor:
    """``Psi*(t) = 2 softplus(t) - 2 log 2``: softplus normalised so ``Psi*(0) = 0`` and
    ``Psi*'(0) = 1`` (so it agrees with the linear conjugate to first order at 0). The EGUOT
    author's prototype used it on both sides (docs/references.md, UOTM)."""
    return 2.0 * F.softplus(t) - 2.0 * math.log(2.0)


CONJUGATES: dict[str, Conjugate] = {
    "linear": psi_linear,
    "kl": psi_kl,
    "chi2": psi_chi2,
    "softplus": psi_softplus,
    "softplus_norm": psi_softplus_norm,
}


def get_conjugate(name: str) -> Conjugate:
    """The conjugate ``Psi*`` called ``name`` (one of :data:`CONJUGATES`)."""
    try:
        return CONJUGATES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown conjugate {name!r}; expected one of {', '.join(CONJUGATES)}") from None


# ----------------------------------------------------------------------------------------- checks
def _check(x: object, fn: str, name: str, channels: int | None, what: str) -> Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{fn}: expected {name} to be a torch.Tensor {what}, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{fn}: expected {name} to be a floating-point tensor {what}, got dtype {x.dtype}")
    if x.ndim != 4 or (channels is not None and x.shape[1] != channels):
        raise ValueError(f"{fn}: expected {name} {what}, got shape {tuple(x.shape)}")
    return x


def _check_pair(x: Tensor, y: Tensor, reference: Tensor, fn: str) -> None:
    """x packed RAW [B,4,h,w]; y and reference sRGB [B,3,2h,2w]."""
    _check(x, fn, "x", 4, "(packed RAW [B,4,h,w] in [0,1])")
    _check(y, fn, "y", 3, "(sRGB [B,3,2h,2w])")
    _check(reference, fn, "reference", 3, "(naive ISP of x, [B,3,2h,2w])")
    b, _, h, w = x.shape
    want = (b, 3, 2 * h, 2 * w)
    if tuple(y.shape) != want or tuple(reference.shape) != want:
        raise ValueError(
            f"{fn}: expected y and reference of shape {want} (twice the RAW size), "
            f"got {tuple(y.shape)} and {tuple(reference.shape)}"
        )


def _check_tau(tau: float, fn: str) -> None:
    if not (isinstance(tau, (int, float)) and math.isfinite(tau) and tau >= 0):
        raise ValueError(f"{fn}: tau must be a finite number >= 0, got {tau!r}")


# -------------------------------------------------------------------------------------- naive ISP
#: White-balance modes of :func:`naive_isp` (besides explicit gains).
REFERENCE_WB = ("camera", "gray_world")


def camera_illuminant(cam: CameraModel = DEFAULT_CAMERA) -> tuple[float, float, float]:
    """The camera's typical illuminant gains (R, 1, B): the midpoints of its gain ranges.

    A fixed white balance for the reference when no per-image illuminant is known. Unlike gray
    world it keeps a warm scene warm; its error is the spread of the per-image illuminant
    (about +-12% in R and B for the default camera).
    """
    return (0.5 * (cam.red_gain[0] + cam.red_gain[1]), 1.0, 0.5 * (cam.blue_gain[0] + cam.blue_gain[1]))


def reference_gains(x_packed01: Tensor, wb: str | Tensor = "camera", cam: CameraModel = DEFAULT_CAMERA) -> Tensor:
    """White-balance gains ``[B,3]`` of the reference rendering.

    ``wb``: ``"camera"`` (the camera's typical illuminant, :func:`camera_illuminant`, the same for
    every image), ``"gray_world"`` (per image, :func:`~uotisp_lib.preprocessing.raw.gray_world_gains`:
    removes the scene's own colour cast too), or explicit gains ``[3]`` / ``[B,3]`` (a DNG's
    ``1 / AsShotNeutral``, when the camera recorded it).
    """
    b = x_packed01.shape[0]
    if isinstance(wb, str):
        if wb == "gray_world":
            return gray_world_gains(x_packed01)
        if wb == "camera":
            g = torch.tensor(camera_illuminant(cam), dtype=x_packed01.dtype, device=x_packed01.device)
            return g.expand(b, 3)
        raise ValueError(f"naive_isp: unknown white balance {wb!r}; expected one of {', '.join(REFERENCE_WB)} or gains [B,3]")
    g = torch.as_tensor(wb, dtype=x_packed01.dtype, device=x_packed01.device)
    if g.ndim == 1:
        g = g.expand(b, -1)
    if g.shape != (b, 3) or not bool(torch.isfinite(g).all()) or bool((g <= 0).any()):
        raise ValueError(f"naive_isp: expected positive gains of shape [3] or [{b},3], got {tuple(g.shape)}")
    return g


def naive_isp(
    x_packed01: Tensor, demosaic_method: str = "bilinear", ccm: bool = True, wb: str | Tensor = "gray_world"
) -> Tensor:
    """A fixed naive rendering of packed RAW ``[B,4,h,w]`` in [0,1] -> sRGB ``[B,3,2h,2w]`` in [0,1].

    Steps (no learnt parameters, deterministic): white balance by ``wb``
    (:func:`reference_gains`: ``"gray_world"``, ``"camera"`` or given gains; result clipped to
    [0,1]) -> RGGB mosaic -> demosaic (``bilinear`` via kornia, or ``malvar``) -> optional colour
    matrix: the CCM of our default camera model (the inverse of its ``rgb_to_cam``; rows sum to 1 so
    grays stay gray; on real data it stands in for "a fixed average CCM") -> clip -> sRGB transfer
    curve. This is the reference the transport costs compare ``T(x)`` with; the UOT trainer uses
    ``wb="camera"`` by default (gray world removed the benchmark's warm scene colour, which put the
    quadratic cost's minimiser 16.5 dB from the ground truth, issue 10).
    """
    _check(x_packed01, "naive_isp", "x", 4, "(packed RAW [B,4,h,w] in [0,1])")
    if x_packed01.shape[-1] < 2 or x_packed01.shape[-2] < 2:
        raise ValueError(f"naive_isp: expected packed RAW at least 2x2, got {tuple(x_packed01.shape)}")
    x = x_packed01.clamp(0.0, 1.0)
    rgb = demosaic(unpack_bayer(white_balance(x, reference_gains(x, wb))), method=demosaic_method, clip=True)
    if ccm:
        m = torch.linalg.inv(torch.tensor(DEFAULT_CAMERA.rgb_to_cam, dtype=torch.float64))
        rgb = apply_matrix(rgb, m.to(dtype=rgb.dtype, device=rgb.device))
    return kornia.color.linear_rgb_to_rgb(rgb.clamp(0.0, 1.0))


# ------------------------------------------------------------------------------------------ costs
def _per_image_mean(t: Tensor) -> Tensor:
    return t.flatten(1).mean(dim=1)


def _safe_sqrt(t: Tensor) -> Tensor:
    """sqrt with value and gradient 0 at t <= 0 (``sqrt`` has an infinite slope at 0, which would
    give NaN gradients when T(x) equals the reference)."""
    pos = t > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, t, torch.ones_like(t))), torch.zeros_like(t))


def quadratic_cost(x: Tensor, y: Tensor, *, reference: Tensor, tau: float = 1.0) -> Tensor:
    """``tau * mean (y - reference)^2`` per image -> ``[B]`` (UOTM's quadratic cost, per-pixel mean).

    ``x`` (packed RAW ``[B,4,h,w]``) is only shape-checked; ``y``, ``reference``: ``[B,3,2h,2w]``.
    """
    _check_pair(x, y, reference, "quadratic_cost")
    _check_tau(tau, "quadratic_cost")
    return tau * _per_image_mean((y - reference) ** 2)


def _luma(rgb: Tensor) -> Tensor:
    """BT.601 luma ``[B,1,H,W]`` (kornia's rgb_to_grayscale weights 0.299, 0.587, 0.114)."""
    return kornia.color.rgb_to_grayscale(rgb)


def luma_cost(
    x: Tensor,
    y: Tensor,
    *,
    reference: Tensor,
    tau: float = 1.0,
    highpass_sigma: float | None = None,
) -> Tensor:
    """``tau * mean (Y(y) - Y(reference))^2`` per image -> ``[B]``: structure only, colour left to
    the potential (our choice; EGUOT-ISP gives no cost).

    ``highpass_sigma``: if set, compare the high-pass ``Y - GaussianBlur_sigma(Y)`` instead, which
    also frees global brightness/contrast (kernel side ``2*ceil(3 sigma)+1``, reflect padding).
    """
    _check_pair(x, y, reference, "luma_cost")
    _check_tau(tau, "luma_cost")
    r = _luma(y) - _luma(reference)
    if highpass_sigma is not None:
        if not highpass_sigma > 0:
            raise ValueError(f"luma_cost: highpass_sigma must be > 0, got {highpass_sigma!r}")
        k = 2 * math.ceil(3 * highpass_sigma) + 1
        r = r - kornia.filters.gaussian_blur2d(r, (k, k), (highpass_sigma, highpass_sigma), border_type="reflect")
    return tau * _per_image_mean(r**2)


def uotip_cost(
    x: Tensor,
    y: Tensor,
    *,
    reference: Tensor,
    tau: float = 1.0,
    lam: float = 1.0,
    cam: CameraModel = DEFAULT_CAMERA,
    gains: Tensor | None = None,
) -> Tensor:
    """UOTIP cost ``tau * (mean ||A(y) - x||^2 + lam * mean ||y - reference||^2)`` -> ``[B]``.

    UOTIP (arXiv 2605.21094) uses ``c = tau (||A(y) - x||^2 + lambda ||y - x||^2)`` with ``A`` the
    degradation; here ``A`` is our camera forward model (:func:`uotisp_lib.data.camera.forward`,
    no noise, differentiable): sRGB ``[B,3,2h,2w]`` -> packed RAW ``[B,4,h,w]`` in [0,1], using
    the illuminant ``gains`` ``[B,3]`` or ``[3]``, or a :func:`reference_gains` mode (``"camera"``,
    ``"gray_world"``). When ``gains`` is None they are estimated by gray world on ``x`` (our
    choice; exact when the scene averages to gray in camera space). Since
    RAW and sRGB differ, the second term compares ``y`` with the naive ISP ``reference``; UOTIP's
    uniqueness argument needs ``lam`` above the Lipschitz constant of the data term.
    """
    _check_pair(x, y, reference, "uotip_cost")
    _check_tau(tau, "uotip_cost")
    if not lam >= 0:
        raise ValueError(f"uotip_cost: lam must be >= 0, got {lam!r}")
    g = reference_gains(x, "gray_world" if gains is None else gains, cam)
    ay = forward(y, g, cam, noise=False)
    return tau * (_per_image_mean((ay - x) ** 2) + lam * _per_image_mean((y - reference) ** 2))


def rcot_cost(x: Tensor, y: Tensor, *, reference: Tensor, tau: float = 1.0, p: int = 2) -> Tensor:
    """RCOT residual cost (ICML 2024) on ``r = y - reference``: ``tau * (RMS(r) + M_p(F(r)))`` -> ``[B]``.

    ``F`` is the orthonormal 2-D FFT per channel and ``M_p(z) = (mean |z|^p)^(1/p)`` the p-power
    mean over all coefficients. Our normalisation: with ``p = 2`` Parseval gives
    ``M_2(F(r)) = ||F(r)||_2 / sqrt(numel) = RMS(r)`` (so the cost is ``2 tau RMS(r)``); ``p = 1``
    (RCOT's choice for sparse degradations) uses the mean modulus, which, unlike
    ``||F(r)||_1 / sqrt(numel)``, does not grow with the image size. Square roots are made safe at
    ``r = 0`` (value 0, gradient 0).
    """
    _check_pair(x, y, reference, "rcot_cost")
    _check_tau(tau, "rcot_cost")
    if p not in (1, 2):
        raise ValueError(f"rcot_cost: p must be 1 or 2, got {p!r}")
    r = y - reference
    rms = _safe_sqrt(_per_image_mean(r**2))
    spec = torch.fft.fft2(r, norm="ortho")
    power = spec.real**2 + spec.imag**2
    if p == 2:
        freq = _safe_sqrt(_per_image_mean(power))
    else:
        freq = _per_image_mean(_safe_sqrt(power))
    return tau * (rms + freq)


def _blur(t: Tensor, sigma: float) -> Tensor:
    """Gaussian blur, kernel side ``2*ceil(3 sigma)+1`` capped at ``2 min(H, W) - 1`` (reflect
    padding needs the half-kernel inside the image; only tiny images are affected)."""
    k = min(2 * math.ceil(3 * sigma) + 1, 2 * min(t.shape[-2:]) - 1)
    return kornia.filters.gaussian_blur2d(t, (k, k), (sigma, sigma), border_type="reflect")


def structure_view(img: Tensor, sigmas: tuple[float, float] = (1.5, 5.0), eps: float = 1e-3) -> Tensor:
    """Colour- and exposure-free structure of sRGB ``[B,3,H,W]`` -> ``[B,1,H,W]``: the band-pass
    (difference of Gaussians) ``G_s1(Y) - G_s2(Y)`` of the BT.601 luma ``Y``, divided by its own
    RMS over the image (``+ eps``).

    Invariant to an affine change of luma ``Y -> a Y + b`` (``a > 0``: exposure, black offset,
    gray white balance) and to every chroma change that keeps luma; up to ``eps``, the division
    also makes it nearly invariant to a per-channel gain (a colour cast), which rescales the luma
    band-pass of most scenes almost uniformly. ``s1`` suppresses sensor noise (the reference
    is rendered from noisy RAW while the truth is clean: with a plain high-pass, noise dominated
    and the truth's cost was half that of an unrelated image; band-pass (1.5, 5) px: 0.04 of it
    on our cpu validation split). Kernel sides ``2*ceil(3 s)+1`` (capped on tiny images), reflect padding.
    """
    s1, s2 = sigmas
    if not 0 <= s1 < s2:
        raise ValueError(f"structure_view: expected sigmas 0 <= s1 < s2, got {sigmas!r}")
    y = _luma(img)
    band = (_blur(y, s1) if s1 > 0 else y) - _blur(y, s2)
    rms = band.pow(2).mean(dim=(-2, -1), keepdim=True).add(1e-12).sqrt()
    return band / (rms + eps)


def structure_cost(
    x: Tensor,
    y: Tensor,
    *,
    reference: Tensor,
    tau: float = 1.0,
    sigmas: tuple[float, float] = (1.5, 5.0),
    eps: float = 1e-3,
) -> Tensor:
    """Structure-only cost ``tau * mean (S(y) - S(reference))^2 / 2`` per image -> ``[B]``, with ``S``
    :func:`structure_view` (ours, issue 10: a cost whose minimiser the truth can be).

    Global colour and exposure are left entirely to the potential and the experts, so a reference
    whose colour is wrong does not pull the map away from the truth; the cost only asks the map
    to keep the RAW's edges and texture where they are. Values lie in [0, 2 tau] (the halved
    squared distance of two unit-RMS fields: 0 for equal structure, about 1 for unrelated ones).
    """
    _check_pair(x, y, reference, "structure_cost")
    _check_tau(tau, "structure_cost")
    d = structure_view(y, tuple(sigmas), eps) - structure_view(reference, tuple(sigmas), eps)
    return tau * 0.5 * _per_image_mean(d**2)


def colour_features(reference: Tensor, degree: int = 2, linear: bool = False) -> Tensor:
    """Per-pixel polynomial colour features of a rendering ``[B,3,H,W]`` -> ``[B,H*W,k]``.

    All monomials of the three channels up to ``degree`` (the constant included: ``k = 4, 10, 20``
    for degree 1, 2, 3), of the linearised rendering (inverse sRGB curve) when ``linear``: every
    global colour transform of it (per-channel gains, a 3x3 matrix, a tone curve) is close to a
    combination of these columns.
    """
    if degree not in (1, 2, 3):
        raise ValueError(f"colour_features: degree must be 1, 2 or 3, got {degree!r}")
    r = kornia.color.rgb_to_linear_rgb(reference.clamp(0.0, 1.0)) if linear else reference
    c = r.flatten(2).transpose(1, 2)  # [B,P,3]
    cols = [torch.ones_like(c[..., :1]), c]
    if degree >= 2:
        i, j = torch.triu_indices(3, 3, device=c.device)
        cols.append(c[..., i] * c[..., j])
    if degree >= 3:
        idx = torch.tensor([(a, b, d) for a in range(3) for b in range(a, 3) for d in range(b, 3)], device=c.device)
        cols.append(c[..., idx[:, 0]] * c[..., idx[:, 1]] * c[..., idx[:, 2]])
    return torch.cat(cols, dim=-1)


def global_colour_cost(
    x: Tensor,
    y: Tensor,
    *,
    reference: Tensor,
    tau: float = 1.0,
    degree: int = 2,
    ridge: float = 1e-6,
    linear: bool = False,
) -> Tensor:
    """Distance to the nearest *global colour transform* of the reference -> ``[B]`` (ours, issue 10):

        ``c(x, y) = tau * min_f mean ||y - f(r(x))||^2``,

    ``f`` ranging over per-image polynomial colour maps of degree ``degree`` of the rendering
    (:func:`colour_features` of ``r(x)``, in sRGB, or linearised when ``linear``), fitted per image
    by least squares (normal equations in float64, ``ridge`` times the identity added to the
    mean-normalised Gram matrix). The camera's per-image illuminant, the colour matrix and the
    target's tone curve are global colour transforms, so the truth's cost is only the reference's
    noise and clipping, whatever the reference's white balance; what the cost charges is *local*
    change (moved edges, lost texture, recolouring that depends on the content). Colour and tone
    are left to the potential. ``c`` is a quadratic form in ``y`` (``y^T (I - H) y / n``), smooth,
    with ``c(x, r(x)) = 0`` up to the ridge.
    """
    _check_pair(x, y, reference, "global_colour_cost")
    _check_tau(tau, "global_colour_cost")
    if not ridge >= 0:
        raise ValueError(f"global_colour_cost: ridge must be >= 0, got {ridge!r}")
    phi = colour_features(reference.detach().double(), degree, linear)  # [B,P,k]
    t = y.flatten(2).transpose(1, 2).double()  # [B,P,3]
    n = phi.shape[1]
    gram = phi.transpose(1, 2) @ phi / n
    gram = gram + ridge * torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    beta = torch.linalg.solve(gram, phi.transpose(1, 2) @ t / n)  # [B,k,3]
    return (tau * _per_image_mean((t - phi @ beta) ** 2)).to(y.dtype)


def wasserstein_1d_sorted(u: Tensor, v: Tensor) -> Tensor:
    """Squared 2-Wasserstein distance between uniform empirical measures on the line, batched:
    ``u`` ``[..., n]`` and ``v`` ``[..., m]`` **sorted** along the last axis -> ``[...]``.

    ``W_2^2 = int_0^1 (F_u^{-1}(t) - F_v^{-1}(t))^2 dt`` exactly: the quantile functions are piecewise
    constant, so the integral is a sum over the merged breakpoints ``{i/n} U {j/m}``. Written here
    because POT's ``wasserstein_1d`` sorts along the first axis of an ``[n, P]`` array, a strided
    sort in torch that took seconds on a test split's 61k colour points; the values agree (tested).
    """
    n, m = u.shape[-1], v.shape[-1]
    t = torch.cat([torch.arange(1, n + 1, dtype=torch.float64) / n, torch.arange(1, m + 1, dtype=torch.float64) / m])
    t = torch.unique(t)  # sorted, merged breakpoints; the last is 1
    dt = torch.diff(t, prepend=t.new_zeros(1))
    mid = t - dt / 2
    iu = torch.clamp(torch.ceil(mid * n).long() - 1, 0, n - 1).to(u.device)
    iv = torch.clamp(torch.ceil(mid * m).long() - 1, 0, m - 1).to(v.device)
    return ((u[..., iu] - v[..., iv]) ** 2 * dt.to(device=u.device, dtype=u.dtype)).sum(-1)


def colour_sliced_wasserstein(
    fake: Tensor,
    target: Tensor,
    *,
    n_projections: int = 32,
    pool: int = 2,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Sliced 2-Wasserstein distance between the *colour distributions* of two batches -> scalar.

    ``fake`` ``[B,3,H,W]`` and ``target`` ``[B',3,H',W']`` (sRGB in [0, 1]; sizes may differ) are
    reduced to ``pool x pool`` block means, and each block becomes one point of R^3; the distance
    between the two point clouds is the sliced Wasserstein distance
    ``(E_theta W_2^2(theta^T a, theta^T b))^(1/2)`` over ``n_projections`` random unit directions
    drawn from ``generator`` (Rabin, Peyre, Delon and Bernot, "Wasserstein barycenter and its
    application to texture mixing", 2011; Bonneel et al. 2015; the same value as POT's
    ``ot.sliced_wasserstein_distance`` with these directions, computed by :func:`wasserstein_1d_sorted`).
    It is an exact, parameter-free transport of the batch's colour marginal, which the learned
    potential only approximates; in UOT training it is an extra expert that gives the map a direct
    colour gradient (ours, issue 10). Differentiable in both arguments; float32 or float64.
    """
    for name, t in (("fake", fake), ("target", target)):
        if not isinstance(t, Tensor) or t.ndim != 4 or t.shape[1] != 3:
            got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"colour_sliced_wasserstein: expected {name} of shape [B,3,H,W], got {got}")
    if n_projections < 1 or pool < 1:
        raise ValueError(f"colour_sliced_wasserstein: expected n_projections >= 1 and pool >= 1, got {n_projections}, {pool}")
    a = F.avg_pool2d(fake, pool).permute(0, 2, 3, 1).reshape(-1, 3)
    b = F.avg_pool2d(target.to(fake.dtype), pool).permute(0, 2, 3, 1).reshape(-1, 3)
    theta = torch.randn(3, n_projections, generator=generator, dtype=torch.float64)
    theta = (theta / theta.norm(dim=0, keepdim=True)).to(device=fake.device, dtype=fake.dtype)
    pa = torch.sort((a @ theta).T.contiguous(), dim=-1).values  # [P, n]
    pb = torch.sort((b @ theta).T.contiguous(), dim=-1).values  # [P, m]
    return _safe_sqrt(wasserstein_1d_sorted(pa, pb).mean())


COSTS: dict[str, Cost] = {
    "quadratic": quadratic_cost,
    "luma": luma_cost,
    "uotip": uotip_cost,
    "rcot": rcot_cost,
    "structure": structure_cost,
    "global_colour": global_colour_cost,
}


def get_cost(name: str, **kw: Any) -> Cost:
    """Cost ``name`` with its keywords (``tau``, ``lam``, ``p``, ...) bound: ``cost(x, y, *, reference)``."""
    if name not in COSTS:
        raise ValueError(f"unknown cost {name!r}; expected one of {', '.join(COSTS)}")
    return functools.partial(COSTS[name], **kw)


# ----------------------------------------------------------------------------------------- config
R1_SCALES = ("pixels", "none")


#: Training objectives of :class:`UOTConfig`: the semi-dual UOT, or the content-regularised GAN baseline.
OBJECTIVES: tuple[str, ...] = ("uot", "gan")


@dataclass(frozen=True)
class UOTConfig:
    """Configuration of the semi-dual UOT objective.

    Attributes:
        psi_source: ``Psi1*`` on the source (RAW) marginal; ``linear`` keeps it hard.
        psi_target: ``Psi2*`` on the target (sRGB) marginal.
        tau: cost weight on the per-pixel-mean cost (see module docstring; default
            :data:`PROTOTYPE_TAU_MEAN`).
        alpha: weight of the marginal divergences, ``alpha * D_Psi``: the conjugates are used as
            ``alpha * Psi*(t / alpha)`` (linear ones are unchanged). Smaller is a looser marginal;
            it only acts when ``t`` (potential and cost values) is of order ``alpha`` or larger.
        r1_gamma: R1 weight on the potential (UOTM prototype: 5).
        r1_scale: ``"pixels"`` multiplies the R1 penalty by the number of pixels ``H*W`` of the
            target images (ours, issue 10): our potential mean-pools a patch-logit map, so its
            gradient per pixel is about ``1/(H W)`` and a plain R1 is ``O(1/(H W))``, i.e. inert
            (1e-4 at 64 px). Scaled, it is the R1 of the sum-pooled potential divided by ``H W``:
            size-independent. ``"none"``: the plain penalty.
        reference_wb: white balance of the cost's reference rendering (:func:`naive_isp`):
            ``"camera"`` (the camera's typical illuminant) or ``"gray_world"``.
        map_steps_per_potential: map updates per potential update (UOTM: 1; Gazdieva et al. ~15).
        potential_steps: potential updates per training step, each on a fresh draw of targets, before
            the map's updates (WGAN's n_critic; default 1 as UOTM). More keep the potential ahead of
            the map, so its gap does not collapse to zero (issue 10).
        cost: name in :data:`COSTS`; cost_kwargs: its extra keywords besides ``tau`` (a dict is
            accepted and stored as sorted ``(key, value)`` pairs so the config stays hashable).
        objective: ``"uot"`` (the semi-dual above) or ``"gan"``: the content-regularised GAN that
            Gazdieva et al. (arXiv 2202.01116) compare the OT map with: the same networks, a
            non-saturating GAN loss for ``v`` (the cost plays no part in it, and the conjugates and
            ``alpha`` are unused) and ``c(x, T(x)) + softplus(-v(T(x)))`` for the map. Its map is
            biased: it minimises content loss plus divergence, not a transport cost under the
            target marginal (see :func:`potential_loss`, :func:`map_loss`; notebook 06's ``bias`` group).
    """

    psi_source: str = "linear"
    psi_target: str = "softplus_norm"
    tau: float = PROTOTYPE_TAU_MEAN
    alpha: float = 1.0
    r1_gamma: float = 5.0
    r1_scale: str = "pixels"
    reference_wb: str = "camera"
    map_steps_per_potential: int = 1
    potential_steps: int = 1
    cost: str = "quadratic"
    cost_kwargs: tuple[tuple[str, Any], ...] = ()
    # added after runs were stored: left out of a setup's JSON at its default, so their hashes hold
    objective: str = dataclasses.field(default="uot", metadata={"omit_default": True})

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"UOTConfig: objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        get_conjugate(self.psi_source)
        get_conjugate(self.psi_target)
        _check_tau(self.tau, "UOTConfig")
        if not (isinstance(self.alpha, (int, float)) and math.isfinite(self.alpha) and self.alpha > 0):
            raise ValueError(f"UOTConfig: alpha must be a finite number > 0, got {self.alpha!r}")
        if not self.r1_gamma >= 0:
            raise ValueError(f"UOTConfig: r1_gamma must be >= 0, got {self.r1_gamma!r}")
        if self.r1_scale not in R1_SCALES:
            raise ValueError(f"UOTConfig: r1_scale must be one of {', '.join(R1_SCALES)}, got {self.r1_scale!r}")
        if self.reference_wb not in REFERENCE_WB:
            raise ValueError(f"UOTConfig: reference_wb must be one of {', '.join(REFERENCE_WB)}, got {self.reference_wb!r}")
        if int(self.map_steps_per_potential) != self.map_steps_per_potential or self.map_steps_per_potential < 1:
            raise ValueError(
                f"UOTConfig: map_steps_per_potential must be an integer >= 1, got {self.map_steps_per_potential!r}"
            )
        if int(self.potential_steps) != self.potential_steps or self.potential_steps < 1:
            raise ValueError(f"UOTConfig: potential_steps must be an integer >= 1, got {self.potential_steps!r}")
        if self.cost not in COSTS:
            raise ValueError(f"UOTConfig: unknown cost {self.cost!r}; expected one of {', '.join(COSTS)}")
        kw = self.cost_kwargs
        if isinstance(kw, Mapping):
            kw = tuple(sorted(kw.items()))
        object.__setattr__(self, "cost_kwargs", tuple(tuple(p) for p in kw))
        if "tau" in dict(self.cost_kwargs):
            raise ValueError("UOTConfig: give tau as UOTConfig.tau, not inside cost_kwargs")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "UOTConfig":
        """``semi`` (linear source, softplus_norm target), ``balanced`` (linear both) or
        ``unbalanced`` (softplus_norm both), with any field overridden."""
        if name not in UOT_PRESETS:
            raise ValueError(f"unknown UOT preset {name!r}; expected one of {', '.join(UOT_PRESETS)}")
        return dataclasses.replace(UOT_PRESETS[name], **overrides)

    def reference(self, x_packed01: Tensor) -> Tensor:
        """The cost's reference rendering of packed RAW ``[B,4,h,w]`` -> sRGB ``[B,3,2h,2w]``."""
        return naive_isp(x_packed01, wb=self.reference_wb)

    def build_cost(self) -> Cost:
        """The configured cost with ``tau`` and ``cost_kwargs`` bound."""
        return get_cost(self.cost, tau=self.tau, **dict(self.cost_kwargs))


UOT_PRESETS: dict[str, UOTConfig] = {
    "semi": UOTConfig(psi_source="linear", psi_target="softplus_norm"),
    "balanced": UOTConfig(psi_source="linear", psi_target="linear"),
    "unbalanced": UOTConfig(psi_source="softplus_norm", psi_target="softplus_norm"),
}


# -------------------------------------------------------------------------------------- objective
def _check_vec(t: object, fn: str, name: str, n: int | None = None) -> Tensor:
    if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.ndim != 1:
        shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"{fn}: expected {name} to be a 1-D floating tensor [B], got {shape}")
    if n is not None and t.shape[0] != n:
        raise ValueError(f"{fn}: expected {name} of length {n}, got {t.shape[0]}")
    return t


def potential_loss(
    v_real: Tensor, v_fake: Tensor, cost_fake: Tensor, cfg: UOTConfig
) -> tuple[Tensor, dict[str, float]]:
    """Potential loss (to **minimise** over ``v``), UOTM eq. 9 without R1:
    ``mean Psi2*(-v(y)) + mean Psi1*(v(T(x)) - c(x, T(x)))``, each ``Psi*`` as
    ``alpha Psi*(. / alpha)`` (the conjugate of ``alpha Psi``, ``cfg.alpha``). With
    ``cfg.objective == "gan"``: ``mean softplus(-v(y)) + mean softplus(v(T(x)))`` (the GAN
    discriminator's logistic loss; ``cost_fake`` is only logged).

    Args:
        v_real: ``[B]`` potential on real targets ``y``.
        v_fake: ``[B']`` potential on mapped samples ``T(x)`` (compute them from ``T(x).detach()``).
        cost_fake: ``[B']`` ``c(x, T(x))``; detached here (it has no potential parameters).
    Returns:
        ``(loss, logs)``; logs (floats): ``loss``, ``real_term``, ``fake_term``, ``cost``,
        ``v_real``, ``v_fake`` (means), ``potential_gap = E v(y) - E v(T(x))`` and
        ``target_weight_cv``, the relative spread of the relaxed target weights ``Psi2*'(-v(y))``.
    """
    _check_vec(v_real, "potential_loss", "v_real")
    _check_vec(v_fake, "potential_loss", "v_fake")
    _check_vec(cost_fake, "potential_loss", "cost_fake", v_fake.shape[0])
    psi1, psi2, a = get_conjugate(cfg.psi_source), get_conjugate(cfg.psi_target), cfg.alpha
    if cfg.objective == "gan":  # the discriminator's logistic loss, v a logit: no cost, no conjugates
        real_term, fake_term = F.softplus(-v_real).mean(), F.softplus(v_fake).mean()
    else:
        real_term = a * psi2(-v_real / a).mean()
        fake_term = a * psi1((v_fake - cost_fake.detach()) / a).mean()
    loss = real_term + fake_term
    logs = {
        "loss": float(loss.detach()),
        "real_term": float(real_term.detach()),
        "fake_term": float(fake_term.detach()),
        "cost": float(cost_fake.detach().mean()),
        "v_real": float(v_real.detach().mean()),
        "v_fake": float(v_fake.detach().mean()),
        "potential_gap": float(v_real.detach().mean() - v_fake.detach().mean()),
        "target_weight_cv": _relaxed_weight_cv(psi2, -v_real.detach() / a),
    }
    return loss, logs


def relaxed_target_weights(v_real: Tensor, psi_target: str = "softplus_norm", alpha: float = 1.0) -> Tensor:
    """Weights ``Psi2*'(-v(y) / alpha)`` ``[N]`` the relaxed target marginal gives each real target
    ``y`` (potential values ``v_real`` ``[N]``): at the UOTM optimum the transported mass has density
    ``Psi2*'(-v(y))`` with respect to the target distribution (Choi et al., arXiv 2305.14777, the
    optimality condition of the semi-dual), so targets the map leaves unmatched get weights below the
    rest. 1 everywhere for ``linear`` (balanced OT)."""
    v = _check_vec(v_real, "relaxed_target_weights", "v_real")
    if not alpha > 0:
        raise ValueError(f"relaxed_target_weights: alpha must be > 0, got {alpha!r}")
    return _conjugate_slope(get_conjugate(psi_target), -v.detach() / alpha)


def _conjugate_slope(psi: Conjugate, t: Tensor) -> Tensor:
    """``Psi*'(t)`` elementwise, by autograd (every conjugate here is elementwise and smooth)."""
    with torch.enable_grad():
        t = t.detach().clone().requires_grad_(True)
        (w,) = torch.autograd.grad(psi(t).sum(), t)
    return w.detach()


def _relaxed_weight_cv(psi: Conjugate, t: Tensor) -> float:
    """Coefficient of variation of ``Psi*'(t)`` over the batch: the relative spread of the weights the
    relaxed target marginal gives the real targets (0 for balanced OT; near 0: the relaxation is idle)."""
    w = _conjugate_slope(psi, t)
    return float(w.std(unbiased=False) / w.mean().abs().clamp_min(1e-12))


def r1_penalty(v_fn: Callable[[Tensor], Tensor], y_real: Tensor, gamma: float = 5.0, scale: float = 1.0) -> Tensor:
    """R1 gradient penalty ``scale * (gamma/2) E_y ||grad_y v(y)||^2`` (Mescheder et al. 2018; UOTM).

    ``scale``: a constant factor (``H*W`` with ``UOTConfig.r1_scale="pixels"``, see there).

    ``v_fn`` maps ``y_real`` ``[B,...]`` to ``[B]``; the squared norm is summed over all non-batch
    dims and averaged over the batch. Built with ``create_graph=True``, so it back-propagates into
    ``v``'s parameters. ``y_real`` is detached and copied first.
    """
    if not isinstance(y_real, torch.Tensor) or not y_real.is_floating_point() or y_real.ndim < 2:
        raise ValueError("r1_penalty: expected y_real to be a floating tensor [B,...]")
    if not gamma >= 0:
        raise ValueError(f"r1_penalty: gamma must be >= 0, got {gamma!r}")
    y = y_real.detach().clone().requires_grad_(True)
    v = v_fn(y)
    _check_vec(v, "r1_penalty", "v_fn(y_real)", y.shape[0])
    (grad,) = torch.autograd.grad(v.sum(), y, create_graph=True)
    return scale * 0.5 * gamma * grad.pow(2).flatten(1).sum(dim=1).mean()


def r1_scale_of(cfg: "UOTConfig", y_real: Tensor) -> float:
    """The R1 factor of ``cfg`` for targets ``[B,C,H,W]``: ``H*W`` (``"pixels"``) or 1."""
    return float(y_real.shape[-2] * y_real.shape[-1]) if cfg.r1_scale == "pixels" else 1.0


def map_loss(v_fake: Tensor, cost_fake: Tensor, cfg: UOTConfig | None = None) -> tuple[Tensor, dict[str, float]]:
    """Map loss (to **minimise** over ``T``): ``mean [c(x, T(x)) - v(T(x))]`` (UOTM eq. 9, inner inf);
    with ``cfg.objective == "gan"`` the content-regularised GAN's ``mean [c(x, T(x)) + softplus(-v(T(x)))]``
    (the non-saturating generator loss plus the cost as a content loss).

    Both ``[B]`` and differentiable w.r.t. the map. Logs: ``loss``, ``cost``, ``v_fake`` (means).
    """
    _check_vec(v_fake, "map_loss", "v_fake")
    _check_vec(cost_fake, "map_loss", "cost_fake", v_fake.shape[0])
    loss = cost_fake.mean() + potential_pull(v_fake, cfg)
    logs = {
        "loss": float(loss.detach()),
        "cost": float(cost_fake.detach().mean()),
        "v_fake": float(v_fake.detach().mean()),
    }
    return loss, logs


def potential_pull(v_fake: Tensor, cfg: UOTConfig | None = None) -> Tensor:
    """The potential's part of the map loss (scalar): ``-mean v(T(x))``, or the GAN's
    ``mean softplus(-v(T(x)))`` (``cfg.objective == "gan"``); the expert committee scales its
    gradients to this one's."""
    _check_vec(v_fake, "potential_pull", "v_fake")
    return F.softplus(-v_fake).mean() if cfg is not None and cfg.objective == "gan" else -v_fake.mean()


def paired_loss(y_hat: Tensor, y_true: Tensor, l1_weight: float = 1.0, ssim_weight: float = 0.0) -> Tensor:
    """Paired mode: ``l1_weight * mean |y_hat - y_true| + ssim_weight * mean (1 - SSIM)`` (scalar).

    ``y_hat``, ``y_true``: sRGB ``[B,3,H,W]`` in [0,1]; SSIM is :func:`uotisp_lib.metrics.ssim`
    (needs H, W >= 11) and is only evaluated when ``ssim_weight > 0``.
    """
    _check(y_hat, "paired_loss", "y_hat", 3, "(sRGB [B,3,H,W])")
    _check(y_true, "paired_loss", "y_true", 3, "(sRGB [B,3,H,W])")
    if y_hat.shape != y_true.shape:
        raise ValueError(f"paired_loss: y_hat {tuple(y_hat.shape)} and y_true {tuple(y_true.shape)} differ in shape")
    loss = l1_weight * (y_hat - y_true).abs().mean()
    if ssim_weight:
        from uotisp_lib.metrics import ssim

        loss = loss + ssim_weight * (1.0 - ssim(y_hat, y_true)).mean()
    return loss


# -------------------------------------------------------------------------------------- cost check
@torch.no_grad()
def cost_check(
    x: Tensor,
    gt: Tensor,
    costs: Mapping[str, Cost],
    references: Mapping[str, Tensor],
    mapped: Tensor | None = None,
    generator: torch.Generator | None = None,
    batch: int = 32,
) -> list[dict[str, float | str]]:
    """Does each cost's minimiser sit at the truth? On paired data (a validation split).

    For every cost (name -> ``cost(x, y, *, reference)``, ``tau`` bound) and reference rendering
    (name -> ``[N,3,2h,2w]``), the per-image means over the ``N`` patches of
    ``c(x, GT)`` (``c_gt``), ``c(x, reference)`` (``c_ref``, the cost's floor), ``c(x, T(x))``
    (``c_map``, when ``mapped`` ``[N,3,2h,2w]`` is given) and ``c(x, GT of another patch)``
    (``c_wrong``, a derangement drawn from ``generator``), and the **truth ratio**
    ``c_gt / c_wrong``: how much cheaper the true output is than a wrong one (scale-free, so costs
    of different units compare; lower is better, 1 means the cost cannot tell the truth apart).
    ``x``: packed RAW ``[N,4,h,w]``; ``gt``: ``[N,3,2h,2w]``. Returns one dict per (cost, reference).
    """
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"cost_check: expected at least 2 patches, got {n}")
    perm = torch.randperm(n, generator=generator)
    # a derangement: shift the permutation by one so no patch keeps its own ground truth
    wrong_idx = torch.empty_like(perm)
    wrong_idx[perm] = perm.roll(1)
    rows: list[dict[str, float | str]] = []
    for ref_name, ref in references.items():
        for cost_name, cost in costs.items():
            acc = {"c_gt": 0.0, "c_ref": 0.0, "c_wrong": 0.0, "c_map": 0.0}
            for i in range(0, n, batch):
                sl = slice(i, i + batch)
                xb, rb = x[sl], ref[sl]
                acc["c_gt"] += float(cost(xb, gt[sl], reference=rb).sum())
                acc["c_ref"] += float(cost(xb, rb, reference=rb).sum())
                acc["c_wrong"] += float(cost(xb, gt[wrong_idx[sl]], reference=rb).sum())
                if mapped is not None:
                    acc["c_map"] += float(cost(xb, mapped[sl], reference=rb).sum())
            row: dict[str, float | str] = {"cost": cost_name, "reference": ref_name}
            row.update({k: v / n for k, v in acc.items()})
            if mapped is None:
                row["c_map"] = float("nan")
            row["truth_ratio"] = row["c_gt"] / row["c_wrong"] if row["c_wrong"] > 0 else float("nan")
            rows.append(row)
    return rows
