"""Image-quality metrics with a stated protocol: PSNR, SSIM and CIEDE2000.

Protocol
--------
The NTIRE 2026 unpaired ISP challenge (UP-ISP) ranks entries by PSNR, then SSIM, then CIEDE2000
(lower is better); its organisers' public code uses torchmetrics PSNR/SSIM and a per-pixel
dE2000 averaged per image, then over images (see docs/references.md; "likely, not confirmed").
This module reproduces that protocol with these explicit choices:

* Inputs: sRGB tensors ``B x 3 x H x W`` (PSNR and SSIM accept any channel count), floating point,
  nominally in [0, 1]. Values are **clamped to [0, 1]** before every metric.
* ``quantize``: if True, values are first rounded to the 256 levels of an 8-bit image
  (``round(255 x) / 255``), as when predictions are saved as PNG/JPEG before scoring. Default
  **False**; the tables in ``results/`` use the default (float predictions vs float-decoded
  targets), unless a table's metadata says ``quantize: true``. Quantising stops gradients.
* PSNR: ``data_range = 1``; the MSE is the mean over all channels and pixels **of one image**, so
  the result is one value per image. Identical images give ``+inf``. (torchmetrics' default,
  ``dim=None``, pools the MSE over a whole batch; we keep per-image values, which is what a mean
  over images needs.)
* SSIM (Wang et al., "Image quality assessment: from error visibility to structural similarity",
  IEEE TIP 2004): Gaussian window of 11 taps, sigma 1.5, K1 = 0.01, K2 = 0.03, data range 1,
  computed per channel on RGB by :func:`kornia.metrics.ssim`; the map is **cropped to the valid
  region** (``window // 2 = 5`` px dropped on each side, ``padding='valid'``), then averaged over
  channels and pixels. This equals torchmetrics' default (reflect-pad, then crop) and
  scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1, channel_axis=...)``. Images must be at least 11x11.
* CIEDE2000 (Sharma, Wu, Dalal, "The CIEDE2000 color-difference formula: implementation notes,
  supplementary test data, and mathematical observations", Color Res. Appl. 30(1), 2005), with
  k_L = k_C = k_H = 1, on CIELAB from :func:`kornia.color.rgb_to_lab` (IEC 61966-2-1 sRGB
  linearisation, D65 white (0.95047, 1, 1.08883), 2 degree observer). The per-pixel map is
  averaged over the pixels of each image. kornia's conversion is scikit-image's ``rgb2lab``
  (rounded CIE constants 7.787 and 0.008856, the 6-digit sRGB matrix); our dE2000 map equals
  ``skimage.color.deltaE_ciede2000(rgb2lab(pred), rgb2lab(target))`` to round-off (tested).
  colour-science's exact pipeline (matrix and white from the xy primaries, white xy =
  (0.3127, 0.3290)) gives Lab values up to ~0.03 apart, so per-pixel dE differs by up to ~0.03
  and per-image means by < 1e-3 (tested); we keep the kornia/scikit-image convention.
* :func:`summarise`: mean over images. PSNR values are capped at :data:`PSNR_CAP` = 100 dB before
  averaging, so an identical image counts as 100 dB instead of making the mean infinite.

All functions are pure, keep the input's device, compute in float32 (float64 if an input is
float64) and return tensors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from kornia.color import rgb_to_lab
from kornia.metrics import ssim as _kornia_ssim

__all__ = [
    "PSNR_CAP",
    "PROTOCOL",
    "psnr",
    "ssim",
    "delta_e2000",
    "delta_e2000_map",
    "ciede2000_lab",
    "evaluate",
    "summarise",
]

#: PSNR (dB) given to identical images in :func:`summarise` (per-image values above it are capped).
PSNR_CAP = 100.0
SSIM_WINDOW = 11
#: Machine-readable summary of the choices above, for run metadata beside result tables.
PROTOCOL: dict[str, object] = {
    "clamp": [0.0, 1.0],
    "quantize_default": False,
    "psnr": {"data_range": 1.0, "reduction": "per-image MSE over C,H,W", "identical": "inf"},
    "ssim": {"window": SSIM_WINDOW, "sigma": 1.5, "k1": 0.01, "k2": 0.03, "border": "valid", "channels": "RGB mean"},
    "de2000": {"lab": "kornia.color.rgb_to_lab (sRGB, D65, 2deg)", "kl_kc_kh": [1, 1, 1], "reduction": "pixel mean"},
    "summary": {"reduction": "mean over images", "psnr_cap_db": PSNR_CAP},
    "ranking": ["psnr desc", "ssim desc", "de2000 asc"],
}


# --------------------------------------------------------------------------- input handling
def _prepare(
    name: str, pred: torch.Tensor, target: torch.Tensor, *, rgb: bool, quantize: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a pair of image batches and return them clamped (and optionally quantised)."""
    for label, x in (("pred", pred), ("target", target)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: expected {label} to be a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 4:
            shape = "Bx3xHxW" if rgb else "BxCxHxW"
            raise ValueError(f"{name}: expected {label} of shape {shape} (4-D), got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(
                f"{name}: expected {label} as a floating-point tensor in [0, 1], got dtype {x.dtype} "
                "(convert uint8 images with x.float() / 255)"
            )
    if pred.shape != target.shape:
        raise ValueError(
            f"{name}: expected pred and target of the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if rgb and pred.shape[1] != 3:
        raise ValueError(f"{name}: expected 3 (RGB) channels, got shape {tuple(pred.shape)}")
    if pred.numel() == 0:
        raise ValueError(f"{name}: expected non-empty images, got shape {tuple(pred.shape)}")
    if pred.device != target.device:
        raise ValueError(f"{name}: pred is on {pred.device} but target is on {target.device}")
    for label, x in (("pred", pred), ("target", target)):
        if not _all_finite(x):
            raise ValueError(f"{name}: {label} contains NaN or inf values")
    dtype = torch.promote_types(torch.promote_types(pred.dtype, target.dtype), torch.float32)
    pred, target = pred.to(dtype).clamp(0.0, 1.0), target.to(dtype).clamp(0.0, 1.0)
    if quantize:
        pred, target = _quantize8(pred), _quantize8(target)
    return pred, target


def _all_finite(x: torch.Tensor) -> bool:
    """True when every value of ``x`` is finite. A NaN or inf anywhere makes the sum non-finite, so a
    finite sum (one fast reduction) settles it; only a non-finite sum (which finite values can also
    give by overflow) is checked value by value."""
    return bool(torch.isfinite(x.sum(dtype=torch.promote_types(x.dtype, torch.float32)))) or bool(torch.isfinite(x).all())


def _quantize8(x: torch.Tensor) -> torch.Tensor:
    """Round [0, 1] values to the nearest of 256 8-bit levels (no gradient)."""
    return torch.round(x * 255.0) / 255.0


# --------------------------------------------------------------------------- PSNR and SSIM
def psnr(pred: torch.Tensor, target: torch.Tensor, *, quantize: bool = False) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, data range 1.

    Args:
        pred, target: ``[B, C, H, W]`` floating tensors in [0, 1] (clamped).
        quantize: round both to 8-bit levels first.

    Returns:
        ``[B]`` PSNR in dB, ``10 log10(1 / MSE)``; ``+inf`` where an image equals its target.
    """
    pred, target = _prepare("psnr", pred, target, rgb=False, quantize=quantize)
    mse = (pred - target).pow(2).mean(dim=(1, 2, 3))
    # kornia.metrics.psnr pools the MSE over the whole batch, so the per-image form is written here.
    return -10.0 * torch.log10(mse)


def ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    padding: str = "valid",
    quantize: bool = False,
) -> torch.Tensor:
    """Mean structural similarity per image (Wang et al. 2004), window 11, sigma 1.5, K = (0.01, 0.03).

    Args:
        pred, target: ``[B, C, H, W]`` floating tensors in [0, 1] (clamped); ``H, W >= 11`` for
            ``padding='valid'`` (the default, as torchmetrics and scikit-image).
        padding: ``'valid'`` (crop 5 px of border) or ``'same'`` (reflect-padded full map).
        quantize: round both to 8-bit levels first.

    Returns:
        ``[B]`` SSIM, the mean of the per-channel map over channels and pixels; 1 for identical images.
    """
    pred, target = _prepare("ssim", pred, target, rgb=False, quantize=quantize)
    if padding not in ("valid", "same"):
        raise ValueError(f"ssim: padding must be 'valid' or 'same', got {padding!r}")
    h, w = pred.shape[-2:]
    minimum = SSIM_WINDOW if padding == "valid" else SSIM_WINDOW // 2 + 1
    if h < minimum or w < minimum:
        raise ValueError(f"ssim: images must be at least {minimum}x{minimum} for padding={padding!r}, got {h}x{w}")
    # eps=0: no stabiliser beyond C1, C2, as in the reference implementations (C1*C2 > 0 already).
    ssim_map = _kornia_ssim(pred, target, SSIM_WINDOW, max_val=1.0, eps=0.0, padding=padding)
    return ssim_map.mean(dim=(1, 2, 3))


# --------------------------------------------------------------------------- CIEDE2000
def _safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """sqrt with gradient 0 (not inf/NaN) at x <= 0; negative round-off is treated as 0."""
    positive = x > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, x, torch.ones_like(x))), torch.zeros_like(x))


def _hue_deg(b: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Hue angle atan2(b, a) in degrees in [0, 360); 0 for a = b = 0 with a finite (zero) gradient."""
    zero = (a == 0) & (b == 0)
    # torch.atan2's gradient at (0, 0) is 0/0 = NaN; evaluate it at a harmless point there instead.
    h = torch.rad2deg(torch.atan2(torch.where(zero, torch.zeros_like(b), b), torch.where(zero, torch.ones_like(a), a)))
    h = torch.remainder(h, 360.0)
    return torch.where(h >= 360.0, h - 360.0, h)  # remainder(-tiny, 360) can round up to 360


def _chroma_weight(c: torch.Tensor) -> torch.Tensor:
    """sqrt(C^7 / (C^7 + 25^7)) for C >= 0, written as C^3.5 / sqrt(C^7 + 25^7) (finite gradient at 0)."""
    return c.pow(3.5) / torch.sqrt(c.pow(7) + 25.0**7)


def ciede2000_lab(
    lab1: torch.Tensor, lab2: torch.Tensor, *, k_l: float = 1.0, k_c: float = 1.0, k_h: float = 1.0
) -> torch.Tensor:
    """CIEDE2000 colour difference of CIELAB colours (Sharma, Wu, Dalal 2005, eqs. 1-22).

    Hue edge cases follow the paper: h' = 0 when a' = b' = 0; dh' = 0 and the mean hue is the plain
    sum when either chroma C' is 0; |dh'| > 180 wraps by 360; the mean hue uses the sum-of-hues
    rule. Gradients are finite everywhere (0 at identical colours).

    Args:
        lab1, lab2: ``[..., 3]`` (L*, a*, b*) tensors of the same shape; L* in 0..100.
        k_l, k_c, k_h: parametric weights (1 for the reference conditions).

    Returns:
        ``[...]`` dE00 (unitless, about 1 = just noticeable).
    """
    if not isinstance(lab1, torch.Tensor) or not isinstance(lab2, torch.Tensor):
        raise TypeError("ciede2000_lab: expected lab1 and lab2 to be torch.Tensors")
    if lab1.shape != lab2.shape or lab1.ndim == 0 or lab1.shape[-1] != 3:
        raise ValueError(
            f"ciede2000_lab: expected two tensors of the same shape [..., 3] (L*, a*, b*), "
            f"got {tuple(lab1.shape)} and {tuple(lab2.shape)}"
        )
    dtype = torch.promote_types(torch.promote_types(lab1.dtype, lab2.dtype), torch.float32)
    l1, a1, b1 = lab1.to(dtype).unbind(-1)
    l2, a2, b2 = lab2.to(dtype).unbind(-1)

    # eqs. 2-5: a' rescaled by G, which depends on the mean chroma of the pair
    c_bar = (_safe_sqrt(a1 * a1 + b1 * b1) + _safe_sqrt(a2 * a2 + b2 * b2)) / 2
    g = 0.5 * (1.0 - _chroma_weight(c_bar))
    a1p, a2p = (1.0 + g) * a1, (1.0 + g) * a2
    c1p, c2p = _safe_sqrt(a1p * a1p + b1 * b1), _safe_sqrt(a2p * a2p + b2 * b2)
    h1p, h2p = _hue_deg(b1, a1p), _hue_deg(b2, a2p)

    # eqs. 8-11: differences
    achromatic = (c1p * c2p) == 0
    dl = l2 - l1
    dc = c2p - c1p
    dh = h2p - h1p
    dh = torch.where(dh > 180.0, dh - 360.0, torch.where(dh < -180.0, dh + 360.0, dh))
    dh = torch.where(achromatic, torch.zeros_like(dh), dh)
    d_big_h = 2.0 * _safe_sqrt(c1p * c2p) * torch.sin(torch.deg2rad(dh) / 2.0)

    # eqs. 12-14: means (the mean hue needs the sum-of-hues rule across the 0/360 cut)
    l_bar = (l1 + l2) / 2
    c_bar_p = (c1p + c2p) / 2
    h_sum = h1p + h2p
    h_bar = torch.where(
        (h1p - h2p).abs() <= 180.0,
        h_sum / 2,
        torch.where(h_sum < 360.0, (h_sum + 360.0) / 2, (h_sum - 360.0) / 2),
    )
    # The paper's zero-chroma rules for dh' and h_bar cannot change the value (dH' and the R_T term
    # carry a factor sqrt(C1' C2') = 0); they are kept to follow the paper step by step.
    h_bar = torch.where(achromatic, h_sum, h_bar)

    # eqs. 15-21: weighting functions and rotation term
    rad = torch.deg2rad
    t = (
        1.0
        - 0.17 * torch.cos(rad(h_bar - 30.0))
        + 0.24 * torch.cos(rad(2.0 * h_bar))
        + 0.32 * torch.cos(rad(3.0 * h_bar + 6.0))
        - 0.20 * torch.cos(rad(4.0 * h_bar - 63.0))
    )
    d_theta = 30.0 * torch.exp(-(((h_bar - 275.0) / 25.0) ** 2))
    r_c = 2.0 * _chroma_weight(c_bar_p)
    l50 = (l_bar - 50.0) ** 2
    s_l = 1.0 + 0.015 * l50 / torch.sqrt(20.0 + l50)
    s_c = 1.0 + 0.045 * c_bar_p
    s_h = 1.0 + 0.015 * c_bar_p * t
    r_t = -torch.sin(rad(2.0 * d_theta)) * r_c

    # eq. 22
    tl, tc, th = dl / (k_l * s_l), dc / (k_c * s_c), d_big_h / (k_h * s_h)
    return _safe_sqrt(tl * tl + tc * tc + th * th + r_t * tc * th)


def delta_e2000_map(pred: torch.Tensor, target: torch.Tensor, *, quantize: bool = False) -> torch.Tensor:
    """Per-pixel CIEDE2000 between two sRGB batches.

    Args:
        pred, target: ``[B, 3, H, W]`` sRGB (D65) tensors in [0, 1] (clamped).
        quantize: round both to 8-bit levels first.

    Returns:
        ``[B, H, W]`` dE00 per pixel.
    """
    pred, target = _prepare("delta_e2000", pred, target, rgb=True, quantize=quantize)
    lab1 = rgb_to_lab(pred).movedim(1, -1)
    lab2 = rgb_to_lab(target).movedim(1, -1)
    return ciede2000_lab(lab1, lab2)


def delta_e2000(pred: torch.Tensor, target: torch.Tensor, *, quantize: bool = False) -> torch.Tensor:
    """Mean per-pixel CIEDE2000 per image (lower is better).

    Args:
        pred, target: ``[B, 3, H, W]`` sRGB (D65) tensors in [0, 1] (clamped).
        quantize: round both to 8-bit levels first.

    Returns:
        ``[B]`` mean dE00 over the pixels of each image.
    """
    return delta_e2000_map(pred, target, quantize=quantize).mean(dim=(1, 2))


# --------------------------------------------------------------------------- evaluation
def evaluate(pred: torch.Tensor, target: torch.Tensor, *, quantize: bool = False) -> dict[str, torch.Tensor]:
    """All challenge metrics for a batch, without gradients.

    Args:
        pred, target: ``[B, 3, H, W]`` sRGB tensors in [0, 1], ``H, W >= 11``.

    Returns:
        ``{"psnr": [B], "ssim": [B], "de2000": [B]}`` per-image values on the input's device.
    """
    with torch.no_grad():
        return {
            "psnr": psnr(pred, target, quantize=quantize),
            "ssim": ssim(pred, target, quantize=quantize),
            "de2000": delta_e2000(pred, target, quantize=quantize),
        }


def summarise(
    metrics: Mapping[str, torch.Tensor | Sequence[torch.Tensor | float]], *, psnr_cap: float = PSNR_CAP
) -> dict[str, float]:
    """Mean over images of each metric; PSNR values are capped at ``psnr_cap`` dB first (inf -> cap).

    Args:
        metrics: name -> per-image values, a ``[B]`` tensor or a list of per-batch tensors / floats
            (e.g. the accumulated outputs of :func:`evaluate`).
        psnr_cap: upper bound applied to the ``"psnr"`` entry before averaging.

    Returns:
        name -> mean as a Python float, plus ``"n"``: the number of images.
    """
    if not metrics:
        raise ValueError("summarise: expected at least one metric, got an empty mapping")
    out: dict[str, float] = {}
    count: int | None = None
    for name, values in metrics.items():
        if isinstance(values, torch.Tensor):
            flat = values.detach().reshape(-1).to("cpu", torch.float64)
        else:
            parts = [torch.as_tensor(v).detach().reshape(-1).to("cpu", torch.float64) for v in values]
            flat = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)
        if flat.numel() == 0:
            raise ValueError(f"summarise: metric {name!r} has no values")
        if count is not None and flat.numel() != count:
            raise ValueError(f"summarise: metric {name!r} has {flat.numel()} values, expected {count} like the others")
        count = flat.numel()
        if name == "psnr":
            flat = flat.clamp(max=psnr_cap)
        if torch.isnan(flat).any() or torch.isinf(flat).any():
            raise ValueError(f"summarise: metric {name!r} contains NaN or inf values")
        out[name] = float(flat.mean())
    out["n"] = int(count or 0)
    return out
