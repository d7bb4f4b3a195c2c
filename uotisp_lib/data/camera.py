"""A documented camera model: sRGB scene -> packed 10-bit RAW, and the benchmark's target look.

The forward model follows Brooks et al. 2019, "Unprocessing Images for Learned Raw Denoising"
(CVPR), Section 3: undo the tone curve and the sRGB gamma, undo the colour correction (linear sRGB
-> camera RGB), undo the white balance (divide by per-image illuminant gains), sample the RGGB
mosaic, add heteroscedastic shot + read noise, quantise. Our default camera is "Pixel-6-like":
packed ``[R, Gr, Gb, B]``, 10 bits, black level 0, white level 1023 (UP-ISP, docs/references.md).

Constants of the default :class:`CameraModel` (all documented choices, not measured on a Pixel 6):

- tone: ``"none"`` (plain inverse sRGB gamma). Brooks' inverse smoothstep
  ``x = 0.5 - sin(asin(1 - 2y) / 3)`` is available as ``tone="smoothstep"``; it is not the default
  because its derivative is infinite at 0 and 1, which would hurt the UOTIP cost that
  differentiates this forward model.
- ``rgb_to_cam`` (linear sRGB -> camera RGB), rows sum to 1 so white maps to white before the
  illuminant; its inverse is the camera's colour-correction matrix (CCM)::

      [[0.60, 0.33, 0.07],        CCM = inverse ~ [[ 1.83, -0.79, -0.04],
       [0.12, 0.75, 0.13],                         [-0.30,  1.58, -0.28],
       [0.04, 0.30, 0.66]]                         [ 0.02, -0.67,  1.64]]   (condition number 2.5)

- illuminant gains (R, G, B) = (U[1.9, 2.4], 1, U[1.5, 1.9]) per image (Brooks); the sensor sees
  camera RGB divided by the gains.
- noise variance ``shot * x + read`` (x in [0,1]); ``log(shot) ~ U[log 1e-4, log 4e-3]`` (Brooks'
  range truncated at the bright end to daylight phone captures) and
  ``log(read) = 2.18 log(shot) + 1.20 + N(0, 0.26^2)`` (Brooks' fit).

The *target look* (:class:`TargetLook`, :func:`render_target`) is what "the phone's ISP" does to a
white-balanced scene: its own white-balance tint, a saturation matrix, exposure, sRGB gamma and an
S-shaped tone curve. It deliberately differs from :func:`camera_linear_to_srgb` (the exact inverse
of the camera), so the benchmark's ISP is not the camera inverse. :data:`OUTLIER_LOOKS` are
atypical looks given to a fraction of the target JPEGs (unbalanced transport can leave them out).

All functions take and return float tensors ``[B,C,H,W]`` on any device and are differentiable
unless they sample noise or quantise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import kornia.color as kc
import torch

from uotisp_lib.preprocessing.raw import mosaic, pack_bayer, unpack_bayer

Tensor = torch.Tensor

TONES = ("none", "smoothstep")

#: Rec. 709 luminance weights of linear sRGB (used by the saturation matrix of the target look).
LUMA_709 = (0.2126, 0.7152, 0.0722)


@dataclass(frozen=True)
class CameraModel:
    """Constants of a simulated camera (defaults: our "Pixel-6-like" camera; see module docstring).

    Attributes:
        rgb_to_cam: 3x3 linear sRGB -> camera RGB, rows summing to 1 (white stays white).
        tone: ``"none"`` (inverse sRGB gamma only) or ``"smoothstep"`` (Brooks' inverse tone first).
        red_gain, blue_gain: uniform ranges of the per-image illuminant gains (green gain is 1).
        shot_range: range of the shot-noise slope, sampled log-uniformly.
        read_slope, read_intercept, read_jitter: ``log read = slope * log shot + intercept + N(0, jitter^2)``.
        black_level, white_level: RAW code values of black and white (10-bit: 0 and 1023).
    """

    name: str = "pixel6-like"
    rgb_to_cam: tuple[tuple[float, float, float], ...] = (
        (0.60, 0.33, 0.07),
        (0.12, 0.75, 0.13),
        (0.04, 0.30, 0.66),
    )
    tone: str = "none"
    red_gain: tuple[float, float] = (1.9, 2.4)
    blue_gain: tuple[float, float] = (1.5, 1.9)
    shot_range: tuple[float, float] = (1e-4, 4e-3)
    read_slope: float = 2.18
    read_intercept: float = 1.20
    read_jitter: float = 0.26
    black_level: int = 0
    white_level: int = 1023

    def __post_init__(self) -> None:
        m = torch.tensor(self.rgb_to_cam, dtype=torch.float64)
        if m.shape != (3, 3):
            raise ValueError(f"CameraModel: rgb_to_cam must be 3x3, got shape {tuple(m.shape)}")
        if not torch.allclose(m.sum(1), torch.ones(3, dtype=torch.float64), atol=1e-6):
            raise ValueError(
                f"CameraModel: rows of rgb_to_cam must sum to 1 (white -> white), got {m.sum(1).tolist()}"
            )
        if abs(float(torch.linalg.det(m))) < 1e-6:
            raise ValueError("CameraModel: rgb_to_cam must be invertible")
        if self.tone not in TONES:
            raise ValueError(f"CameraModel: unknown tone {self.tone!r}; expected one of {', '.join(TONES)}")
        for name in ("red_gain", "blue_gain", "shot_range"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"CameraModel: {name} must satisfy 0 < low <= high, got {(lo, hi)}")
        if not 0 <= self.black_level < self.white_level <= 65535:
            raise ValueError(
                f"CameraModel: expected 0 <= black_level < white_level <= 65535, got {self.black_level}, {self.white_level}"
            )


@dataclass(frozen=True)
class TargetLook:
    """A fixed rendering of white-balanced linear sRGB (see :func:`render_target`).

    Attributes:
        wb: per-channel multipliers (R, G, B) on linear sRGB; ``(1, 1, 1)`` is neutral.
        saturation: ``s`` of the matrix ``s I + (1 - s) 1 l^T`` (l: Rec. 709 luminance); 1 = unchanged.
        exposure: linear gain before clipping.
        contrast: ``c`` of the tone curve ``y = x + c (smoothstep(x) - x)`` after the sRGB gamma;
            0 = none, > 0 S-shaped, < 0 flattening; monotone for ``-2 <= c <= 1``.
    """

    name: str = "phone"
    wb: tuple[float, float, float] = (1.04, 1.0, 0.95)
    saturation: float = 1.25
    exposure: float = 1.1
    contrast: float = 0.4

    def __post_init__(self) -> None:
        if len(self.wb) != 3 or min(self.wb) <= 0:
            raise ValueError(f"TargetLook {self.name!r}: wb must be 3 positive values, got {self.wb}")
        if self.saturation < 0 or self.exposure <= 0:
            raise ValueError(f"TargetLook {self.name!r}: expected saturation >= 0 and exposure > 0")
        if not -2.0 <= self.contrast <= 1.0:
            raise ValueError(f"TargetLook {self.name!r}: contrast must lie in [-2, 1] (monotone), got {self.contrast}")


DEFAULT_CAMERA = CameraModel()
DEFAULT_LOOK = TargetLook()

#: Atypical looks for outlier target images.
OUTLIER_LOOKS: dict[str, TargetLook] = {
    look.name: look
    for look in (
        TargetLook(name="sepia", wb=(1.30, 1.0, 0.70), saturation=0.25, exposure=1.05, contrast=0.2),
        TargetLook(name="washed", wb=(1.0, 1.0, 1.0), saturation=0.45, exposure=1.4, contrast=-0.6),
        TargetLook(name="cyan", wb=(0.70, 1.0, 1.30), saturation=1.1, exposure=1.0, contrast=0.3),
        TargetLook(name="punchy", wb=(1.0, 1.0, 1.0), saturation=1.8, exposure=0.9, contrast=1.0),
    )
}


# ----------------------------------------------------------------------------------------- checks
def _check_image(x: object, fn: str, channels: int | None, what: str) -> Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{fn}: expected a torch.Tensor {what}, got {type(x).__name__}")
    if x.ndim != 4 or (channels is not None and x.shape[1] != channels):
        raise ValueError(f"{fn}: expected {what}, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{fn}: expected a floating-point tensor {what}, got dtype {x.dtype}")
    return x


def _check_rgb(x: object, fn: str) -> Tensor:
    return _check_image(x, fn, 3, "an RGB image of shape [B,3,H,W]")


def _matrix(m: tuple[tuple[float, ...], ...] | Tensor, like: Tensor) -> Tensor:
    return torch.as_tensor(m, dtype=like.dtype, device=like.device)


def apply_matrix(x: Tensor, m: Tensor) -> Tensor:
    """``out[:, i] = sum_j m[i, j] x[:, j]`` for ``x`` ``[B,3,H,W]`` and ``m`` ``[3,3]``.

    Written out as three elementwise multiply-adds instead of a BLAS matmul so results are
    bit-identical across thread counts (the benchmark promises byte-identical files) and no
    ``[B,3,3,H,W]`` temporary is made.
    """
    x0, x1, x2 = x[:, 0], x[:, 1], x[:, 2]
    return torch.stack([m[i, 0] * x0 + m[i, 1] * x1 + m[i, 2] * x2 for i in range(3)], dim=1)


# ------------------------------------------------------------------------------------------ tone
def smoothstep(x: Tensor) -> Tensor:
    """Brooks' tone curve ``3x^2 - 2x^3`` on [0,1]."""
    x = x.clamp(0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def inverse_smoothstep(y: Tensor) -> Tensor:
    """Inverse of :func:`smoothstep`: ``0.5 - sin(asin(1 - 2y) / 3)`` (Brooks et al. 2019, eq. 1).

    The argument of asin is kept one machine epsilon inside [-1, 1] so the gradient stays finite.
    """
    eps = torch.finfo(y.dtype).eps
    u = (1.0 - 2.0 * y).clamp(-1.0 + eps, 1.0 - eps)
    return 0.5 - torch.sin(torch.asin(u) / 3.0)


def scene_to_linear(srgb: Tensor, cam: CameraModel = DEFAULT_CAMERA) -> Tensor:
    """sRGB ``[B,3,H,W]`` in [0,1] -> linear sRGB (undo the camera's tone, then the sRGB gamma)."""
    _check_rgb(srgb, "scene_to_linear")
    x = srgb.clamp(0.0, 1.0)
    if cam.tone == "smoothstep":
        x = inverse_smoothstep(x)
    return kc.rgb_to_linear_rgb(x)


def linear_to_scene(lin: Tensor, cam: CameraModel = DEFAULT_CAMERA) -> Tensor:
    """Linear sRGB ``[B,3,H,W]`` -> sRGB (sRGB gamma, then the camera's tone); inverse of
    :func:`scene_to_linear` on [0,1]. Not clipped."""
    _check_rgb(lin, "linear_to_scene")
    x = kc.linear_rgb_to_rgb(lin)
    if cam.tone == "smoothstep":
        x = smoothstep(x)
    return x


# ------------------------------------------------------------------------------- colour / camera
def srgb_to_camera_linear(srgb: Tensor, cam: CameraModel = DEFAULT_CAMERA) -> Tensor:
    """sRGB ``[B,3,H,W]`` in [0,1] -> linear camera RGB ``[B,3,H,W]`` before the illuminant gains."""
    lin = scene_to_linear(srgb, cam)
    return apply_matrix(lin, _matrix(cam.rgb_to_cam, lin))


def camera_linear_to_linear_srgb(lin_cam: Tensor, cam: CameraModel = DEFAULT_CAMERA) -> Tensor:
    """Linear camera RGB ``[B,3,H,W]`` -> linear sRGB through the CCM (inverse of ``rgb_to_cam``)."""
    _check_rgb(lin_cam, "camera_linear_to_linear_srgb")
    ccm = torch.linalg.inv(torch.tensor(cam.rgb_to_cam, dtype=torch.float64))
    return apply_matrix(lin_cam, ccm.to(dtype=lin_cam.dtype, device=lin_cam.device))


def camera_linear_to_srgb(lin_cam: Tensor, cam: CameraModel = DEFAULT_CAMERA, clip: bool = False) -> Tensor:
    """The camera's exact inverse ("ground-truth ISP"): linear camera RGB -> sRGB ``[B,3,H,W]``.

    Inverse of :func:`srgb_to_camera_linear` on [0,1]; ``clip`` clamps the result to [0,1].
    """
    out = linear_to_scene(camera_linear_to_linear_srgb(lin_cam, cam), cam)
    return out.clamp(0.0, 1.0) if clip else out


# ----------------------------------------------------------------------------------------- Bayer
def mosaic_pack(rgb: Tensor) -> Tensor:
    """RGB ``[B,3,H,W]`` (H, W even) -> packed RGGB ``[B,4,H/2,W/2]`` as ``[R, Gr, Gb, B]``.

    R is sampled at (even, even), Gr at (even, odd), Gb at (odd, even), B at (odd, odd); the
    Bayer convention is :mod:`uotisp_lib.preprocessing.raw`'s, reused here.
    """
    _check_rgb(rgb, "mosaic_pack")
    h, w = rgb.shape[-2:]
    if h % 2 or w % 2:
        raise ValueError(f"mosaic_pack: expected even height and width, got {h}x{w}")
    return pack_bayer(mosaic(rgb))


def unpack_mosaic(packed: Tensor) -> Tensor:
    """Packed ``[B,4,h,w]`` ``[R, Gr, Gb, B]`` -> Bayer plane ``[B,1,2h,2w]`` (RGGB)."""
    _check_image(packed, "unpack_mosaic", 4, "packed RAW of shape [B,4,h,w]")
    return unpack_bayer(packed)


# ----------------------------------------------------------------------------------- sampling
def _uniform(n: int, lo: float, hi: float, generator: torch.Generator | None) -> Tensor:
    u = torch.rand(n, generator=generator, dtype=torch.float64, device=_gen_device(generator))
    return (lo + (hi - lo) * u).cpu()


def _gen_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def sample_gains(n: int, cam: CameraModel = DEFAULT_CAMERA, generator: torch.Generator | None = None) -> Tensor:
    """Per-image illuminant gains ``[n,3]`` (R, 1, B), float32 on CPU (Brooks et al. 2019)."""
    r = _uniform(n, *cam.red_gain, generator)
    b = _uniform(n, *cam.blue_gain, generator)
    return torch.stack([r, torch.ones_like(r), b], dim=1).float()


def sample_noise_levels(
    n: int, cam: CameraModel = DEFAULT_CAMERA, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Per-image ``(shot [n], read [n])`` noise levels, float32 on CPU, sampled log-linearly (Brooks)."""
    lo, hi = (math.log(v) for v in cam.shot_range)
    log_shot = _uniform(n, lo, hi, generator)
    jitter = torch.randn(n, generator=generator, dtype=torch.float64, device=_gen_device(generator)).cpu()
    log_read = cam.read_slope * log_shot + cam.read_intercept + cam.read_jitter * jitter
    return log_shot.exp().float(), log_read.exp().float()


def _per_image(v: float | Tensor, like: Tensor, name: str) -> Tensor:
    t = torch.as_tensor(v, dtype=like.dtype, device=like.device)
    if t.ndim == 0:
        t = t.expand(like.shape[0])
    if t.shape != (like.shape[0],):
        raise ValueError(
            f"add_noise: {name} must be a scalar or have one value per image ({like.shape[0]}), "
            f"got shape {tuple(t.shape)}"
        )
    return t.view(-1, 1, 1, 1)


def add_noise(x: Tensor, shot: float | Tensor, read: float | Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Heteroscedastic Gaussian noise: ``x + N(0, shot * x + read)`` per pixel, for ``x`` ``[B,C,H,W]``.

    ``shot``/``read`` are scalars or ``[B]`` (variances in [0,1] units). Noise is drawn on the
    generator's device (CPU by default) and moved to ``x``'s, so a seed gives the same noise
    on every device. Not clipped.
    """
    _check_image(x, "add_noise", None, "an image of shape [B,C,H,W]")
    var = _per_image(shot, x, "shot") * x.clamp_min(0.0) + _per_image(read, x, "read")
    z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=_gen_device(generator)).to(x.device)
    return x + var.sqrt() * z


def forward(
    srgb: Tensor,
    gains: Tensor,
    cam: CameraModel = DEFAULT_CAMERA,
    generator: torch.Generator | None = None,
    noise: bool = True,
    shot: float | Tensor | None = None,
    read: float | Tensor | None = None,
) -> Tensor:
    """sRGB scene ``[B,3,H,W]`` -> packed RAW ``[B,4,H/2,W/2]`` in [0,1] (clipped).

    Args:
        srgb: scene in [0,1], H and W even.
        gains: illuminant gains ``[B,3]`` or ``[3]`` (R, G, B); the sensor sees camera RGB / gains.
        generator: seeds the noise (and its levels when ``shot``/``read`` are not given).
        noise: False gives the clean, differentiable RAW.
        shot, read: noise levels (scalar or ``[B]``); sampled with :func:`sample_noise_levels` if None.
    """
    lin = srgb_to_camera_linear(srgb, cam)
    g = torch.as_tensor(gains, dtype=lin.dtype, device=lin.device)
    if g.ndim == 1:
        g = g.unsqueeze(0)
    if g.ndim != 2 or g.shape[1] != 3 or g.shape[0] not in (1, lin.shape[0]):
        raise ValueError(f"forward: expected gains of shape [3] or [{lin.shape[0]},3] (R, G, B), got {tuple(g.shape)}")
    if bool((g <= 0).any()):
        raise ValueError("forward: illuminant gains must be positive")
    packed = mosaic_pack(lin / g[:, :, None, None])
    if noise:
        if shot is None or read is None:
            s, r = sample_noise_levels(packed.shape[0], cam, generator)
            shot = s if shot is None else shot
            read = r if read is None else read
        packed = add_noise(packed, shot, read, generator)
    return packed.clamp(0.0, 1.0)


def quantize(raw01: Tensor, cam: CameraModel = DEFAULT_CAMERA) -> Tensor:
    """RAW in [0,1] -> integer codes ``black + round(x (white - black))`` as a ``torch.uint16`` tensor
    (values outside [0,1] are clipped first)."""
    if not isinstance(raw01, torch.Tensor) or not raw01.is_floating_point():
        raise TypeError(f"quantize: expected a floating-point torch.Tensor in [0,1], got {getattr(raw01, 'dtype', type(raw01))}")
    span = cam.white_level - cam.black_level
    codes = (raw01.clamp(0.0, 1.0) * span).round() + cam.black_level
    return codes.to(torch.uint16)


def dequantize(codes: Tensor, cam: CameraModel = DEFAULT_CAMERA, dtype: torch.dtype = torch.float32) -> Tensor:
    """Integer RAW codes -> [0,1] float: ``(codes - black) / (white - black)``, clipped."""
    x = codes.to(dtype)
    return ((x - cam.black_level) / (cam.white_level - cam.black_level)).clamp(0.0, 1.0)


# ----------------------------------------------------------------------------------- target look
def saturation_matrix(s: float, like: Tensor) -> Tensor:
    """``s I + (1 - s) 1 l^T`` with l the Rec. 709 luminance weights; rows sum to 1 (grays kept)."""
    luma = torch.tensor(LUMA_709, dtype=like.dtype, device=like.device)
    eye = torch.eye(3, dtype=like.dtype, device=like.device)
    return s * eye + (1.0 - s) * luma.expand(3, 3)


def render_target(lin_rgb: Tensor, look: TargetLook = DEFAULT_LOOK) -> Tensor:
    """The target look: white-balanced linear sRGB ``[B,3,H,W]`` -> sRGB ``[B,3,H,W]`` in [0,1].

    Steps: ``x * wb`` -> saturation matrix -> ``* exposure`` -> clip [0,1] -> sRGB gamma ->
    ``y = x + contrast (smoothstep(x) - x)`` -> clip [0,1]. With neutral ``wb`` grays stay gray.
    """
    _check_rgb(lin_rgb, "render_target")
    wb = torch.tensor(look.wb, dtype=lin_rgb.dtype, device=lin_rgb.device).view(1, 3, 1, 1)
    x = apply_matrix(lin_rgb * wb, saturation_matrix(look.saturation, lin_rgb))
    x = kc.linear_rgb_to_rgb((x * look.exposure).clamp(0.0, 1.0))
    y = x + look.contrast * (smoothstep(x) - x)
    return y.clamp(0.0, 1.0)


def camera_linear_to_target(
    lin_cam: Tensor, look: TargetLook = DEFAULT_LOOK, cam: CameraModel = DEFAULT_CAMERA
) -> Tensor:
    """The benchmark's ISP on white-balanced camera RGB ``[B,3,H,W]``: CCM, then :func:`render_target`."""
    return render_target(camera_linear_to_linear_srgb(lin_cam, cam), look)


def srgb_to_target(srgb: Tensor, look: TargetLook = DEFAULT_LOOK, cam: CameraModel = DEFAULT_CAMERA) -> Tensor:
    """Ground truth of an sRGB scene ``[B,3,H,W]``: :func:`render_target` of its linear sRGB."""
    return render_target(scene_to_linear(srgb, cam), look)
