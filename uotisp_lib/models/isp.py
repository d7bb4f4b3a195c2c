"""ISP networks (RAW or pseudo-RGB -> sRGB) and their registry.

Every model has an ``input_kind`` attribute:

* ``"rgb"``: a preprocessed pseudo-RGB batch ``[B, 3, H, W]`` in [0, 1] (see
  :mod:`uotisp_lib.preprocessing`); the output is sRGB ``[B, 3, H, W]``.
* ``"packed"``: packed RAW ``[B, 4, h, w]`` ([R, Gr, Gb, B], already divided by 1023, in [0, 1]);
  the output is sRGB ``[B, 3, 2h, 2w]``.

Outputs are always in [0, 1]. Models:

* ``colornet``: the 7,055-parameter CNN of Semantic Pseudo-Pairing (Borelli Image, NTIRE 2026
  unpaired ISP challenge, arXiv 2605.07495), with the optional 3-D LUT head (L = 33, +107,811).
* ``tinyraw``: the organisers' 3,060-parameter baseline (Arhire & Timofte style).
* ``unet_isp``: a 3-level U-Net on packed RAW (991,980 parameters with the defaults), meant for
  the UOT trainer (EGUOT-ISP, arXiv 2512.05635, trains "any ISP architecture"; ours is our own
  choice of architecture, not theirs, which is unpublished).

Clamping: ``clamp="hard"`` is ``torch.clamp`` (zero gradient outside [0, 1]);
``clamp="ste"`` gives the same forward values but passes the gradient straight through
(identity), so pixels that overshoot still receive a learning signal.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from uotisp_lib.models.registry import ISP_REGISTRY, build_isp

__all__ = [
    "ISP_REGISTRY",
    "ColorNet",
    "Lut3d",
    "TinyRawNet",
    "UNetISP",
    "build_isp",
    "clamp01",
    "count_parameters",
    "identity_lut",
]

_CLAMP_MODES = ("hard", "ste")
#: What a RAW-input network's output is added to: nothing, or the cost's reference rendering.
_BASES = ("none", "reference")


def _reference(raw: torch.Tensor) -> torch.Tensor:
    """The fixed reference rendering a ``base="reference"`` network learns a residual on:
    :func:`uotisp_lib.uot.naive_isp` with the camera's typical illuminant (the UOT cost's default
    reference), so an untrained network outputs exactly that rendering instead of black."""
    from uotisp_lib.uot import naive_isp

    with torch.no_grad():
        return naive_isp(raw, wb="camera")


def _check_base(name: str, base: str) -> None:
    if base not in _BASES:
        raise ValueError(f"{name}: base must be one of {_BASES}, got {base!r}")


def clamp01(x: torch.Tensor, mode: str = "hard") -> torch.Tensor:
    """Clamp to [0, 1]; ``mode="ste"`` keeps an identity gradient (straight-through estimator)."""
    if mode == "hard":
        return x.clamp(0.0, 1.0)
    if mode == "ste":
        return x + (x.clamp(0.0, 1.0) - x).detach()
    raise ValueError(f"clamp01: mode must be one of {_CLAMP_MODES}, got {mode!r}")


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters of ``module`` (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def _check_input(name: str, x: torch.Tensor, channels: int, what: str) -> None:
    """Raise a clear error unless ``x`` is a floating ``[B, channels, H, W]`` tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor ({what}), got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != channels:
        raise ValueError(f"{name}: expected {what} of shape [B, {channels}, H, W], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor in [0, 1] ({what}), got dtype {x.dtype}")


# --------------------------------------------------------------------------- 3-D LUT
def identity_lut(size: int = 33, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Identity 3-D LUT ``[3, L, L, L]`` indexed ``lut[c, b, g, r]`` (lattice value = (r, g, b)[c])."""
    if size < 2:
        raise ValueError(f"identity_lut: size must be >= 2, got {size}")
    axis = torch.linspace(0.0, 1.0, size, dtype=dtype)
    b, g, r = torch.meshgrid(axis, axis, axis, indexing="ij")
    return torch.stack([r, g, b])


class Lut3d(nn.Module):
    """Learnable 3-D colour LUT with trilinear interpolation, identity at init.

    The table ``lut`` is ``[3, L, L, L]`` indexed ``[channel, b, g, r]``: it is the 5-D input of
    :func:`torch.nn.functional.grid_sample` (depth = blue, height = green, width = red), whose
    sampling grid takes (x, y, z) = (r, g, b) in [-1, 1]; ``align_corners=True`` puts lattice
    point i at i / (L - 1). kornia has no 3-D LUT op, hence this small hand-written wrapper.
    Inputs are clamped to [0, 1] (the LUT's domain) before lookup.
    """

    def __init__(self, size: int = 33) -> None:
        super().__init__()
        self.size = size
        self.lut = nn.Parameter(identity_lut(size))

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> ``[B, 3, H, W]`` looked up in the table."""
        _check_input("Lut3d", rgb, 3, "an RGB batch")
        bsz = rgb.shape[0]
        grid = (rgb.clamp(0.0, 1.0) * 2.0 - 1.0).movedim(1, -1).unsqueeze(1)  # [B, 1, H, W, 3] = (r, g, b)
        table = self.lut.to(rgb.dtype).unsqueeze(0).expand(bsz, -1, -1, -1, -1)
        out = F.grid_sample(table, grid, mode="bilinear", padding_mode="border", align_corners=True)
        return out.squeeze(2)


# --------------------------------------------------------------------------- colornet
#: Pixels per row strip of :class:`ColorNet`'s no-gradient CPU path (see :func:`colornet_strips`).
COLORNET_STRIP_PIXELS = 8192


def colornet_strips(net: ColorNet, x: torch.Tensor, strip_pixels: int = COLORNET_STRIP_PIXELS) -> torch.Tensor:
    """:class:`ColorNet`'s forward pass computed one strip of rows at a time: ``[B,3,H,W] -> [B,3,H,W]``.

    The dense pass writes the whole 128-channel hidden map (512 B per pixel: 128 MiB for one 512x512
    image) to memory and reads it back; a strip of ``strip_pixels // W`` rows (at least 4) keeps it
    in a core's cache. Each strip recomputes conv1 on one halo row above and below it; the reflect
    padding of conv2 is applied where the strip meets the image's top or bottom, so the result is
    the dense pass's, up to float rounding (checked in ``tests/test_models.py``). Written by hand:
    no torch or kornia op fuses two convolutions through a cache-sized tile on the CPU. For
    inference only (no autograd through the strip copies needed or wanted)."""
    _, _, h, w = x.shape
    rows = max(4, strip_pixels // w)
    xp = F.pad(x, (1, 1, 1, 1), mode="reflect")
    out = torch.empty_like(x)
    cl = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    for b in range(x.shape[0]):
        for r0 in range(0, h, rows):
            r1 = min(h, r0 + rows)
            a, z = max(0, r0 - 1), min(h, r1 + 1)  # hidden rows a..z-1 feed output rows r0..r1-1
            xs = xp[b : b + 1, :, a : z + 2]
            if cl:
                xs = xs.contiguous(memory_format=torch.channels_last)
            hid = F.pad(F.relu(F.conv2d(xs, net.conv1.weight, net.conv1.bias)), (1, 1, 0, 0), mode="reflect")
            if r0 == 0 or r1 == h:  # conv2's reflect padding at the image's top / bottom edge
                hid = torch.cat(
                    [hid[:, :, 1:2]] * (r0 == 0) + [hid] + [hid[:, :, -2:-1]] * (r1 == h), dim=2
                )
            out[b : b + 1, :, r0:r1] = net.colour(x[b : b + 1, :, r0:r1], F.conv2d(hid, net.conv2.weight, net.conv2.bias))
    return out


class ColorNet(nn.Module):
    """Borelli's lightweight ISP (arXiv 2605.07495): residual 3x3 CNN + 1x1 colour head.

    ``x -> conv3x3(3->128, reflect) -> ReLU -> conv3x3(128->3, reflect) -> + x -> conv1x1(3->3)
    -> [3-D LUT] -> clamp [0, 1]``. The 1x1 head starts at the identity with zero bias, so a zeroed
    residual branch gives ``clamp(x)``. 7,055 parameters; ``head="lut3d"`` appends a 33^3 LUT after
    the 1x1 head (+107,811 = 3 * 33^3, total 114,866).

    Input: pseudo-RGB ``[B, 3, H, W]`` in [0, 1]; output: sRGB ``[B, 3, H, W]`` in [0, 1].

    Without gradients on the CPU, images of more than ``2 * strip_pixels`` pixels run through
    :func:`colornet_strips` (same outputs, the hidden map kept in cache); ``strip_pixels = 0``
    turns that off. It is an attribute, not a setting: it changes no value.
    """

    input_kind = "rgb"
    strip_pixels: int = COLORNET_STRIP_PIXELS

    def __init__(self, width: int = 128, head: str = "conv1x1", lut_size: int = 33, clamp: str = "hard") -> None:
        super().__init__()
        if head not in ("conv1x1", "lut3d"):
            raise ValueError(f"ColorNet: head must be 'conv1x1' or 'lut3d', got {head!r}")
        if clamp not in _CLAMP_MODES:
            raise ValueError(f"ColorNet: clamp must be one of {_CLAMP_MODES}, got {clamp!r}")
        self.head_kind, self.clamp_mode = head, clamp
        self.conv1 = nn.Conv2d(3, width, 3, padding=1, padding_mode="reflect")
        self.conv2 = nn.Conv2d(width, 3, 3, padding=1, padding_mode="reflect")
        self.head = nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.head.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.head.bias.zero_()
        self.lut = Lut3d(lut_size) if head == "lut3d" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` pseudo-RGB -> ``[B, 3, H, W]`` sRGB in [0, 1] (H, W >= 2 for reflect padding)."""
        _check_input("ColorNet", x, 3, "a pseudo-RGB batch")
        if (
            self.strip_pixels > 0
            and not torch.is_grad_enabled()
            and x.device.type == "cpu"
            and x.shape[2] * x.shape[3] > 2 * self.strip_pixels
        ):
            return colornet_strips(self, x, self.strip_pixels)
        return self.colour(x, self.conv2(F.relu(self.conv1(x))))

    def colour(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """The pointwise tail shared by the dense and strip passes: ``clamp(lut(head(x + residual)))``."""
        y = self.head(x + residual)
        if self.lut is not None:
            y = self.lut(y)
        return clamp01(y, self.clamp_mode)


# --------------------------------------------------------------------------- organisers' baseline
class TinyRawNet(nn.Module):
    """The NTIRE 2026 UP-ISP organisers' baseline (Arhire & Timofte style), 3,060 parameters.

    ``packed RAW [B, 4, h, w] -> conv3x3(4->12) tanh -> conv3x3(12->12) ReLU -> conv3x3(12->12)
    ReLU -> PixelShuffle(2) -> [B, 3, 2h, 2w]`` (zero padding), then a clamp to [0, 1]. The clamp
    defaults to straight-through (``clamp="ste"``): forward values equal ``torch.clamp`` in
    training and inference; the gradient is the identity. ``clamp="hard"`` is a plain clamp.
    Input: RAW / 1023 in [0, 1] (no black-level subtraction, as the organisers' code).

    ``base="reference"`` (ours, issue 10): the network learns a residual on the fixed reference
    rendering (:func:`_reference`); the last ReLU is dropped (a residual must be able to be
    negative) and the last convolution starts at zero, so the untrained network outputs the
    reference, not black. Same 3,060 parameters.
    """

    input_kind = "packed"

    def __init__(self, width: int = 12, clamp: str = "ste", base: str = "none") -> None:
        super().__init__()
        if width % 4 or width < 4:
            raise ValueError(f"TinyRawNet: width must be a positive multiple of 4 (PixelShuffle(2)), got {width}")
        if clamp not in _CLAMP_MODES:
            raise ValueError(f"TinyRawNet: clamp must be one of {_CLAMP_MODES}, got {clamp!r}")
        _check_base("TinyRawNet", base)
        if base == "reference" and width != 12:
            raise ValueError(f"TinyRawNet: base='reference' needs width 12 (a 3-channel residual), got {width}")
        self.clamp_mode, self.base = clamp, base
        self.conv1 = nn.Conv2d(4, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.conv3 = nn.Conv2d(width, width, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)
        if base == "reference":
            nn.init.zeros_(self.conv3.weight)
            nn.init.zeros_(self.conv3.bias)

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        """``[B, 4, h, w]`` packed RAW in [0, 1] -> ``[B, 3 * width / 12, 2h, 2w]`` sRGB in [0, 1]."""
        _check_input("TinyRawNet", raw, 4, "a packed RAW batch [R, Gr, Gb, B]")
        y = torch.tanh(self.conv1(raw))
        y = F.relu(self.conv2(y))
        if self.base == "reference":
            return clamp01(_reference(raw) + self.shuffle(self.conv3(y)), self.clamp_mode)
        y = F.relu(self.conv3(y))
        return clamp01(self.shuffle(y), self.clamp_mode)


# --------------------------------------------------------------------------- U-Net ISP
def _conv_block(cin: int, cout: int, slope: float) -> nn.Sequential:
    """Two 3x3 convolutions with LeakyReLU (no normalisation: batch size 1 must work)."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.LeakyReLU(slope),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.LeakyReLU(slope),
    )


class UNetISP(nn.Module):
    """3-level U-Net on packed RAW with pixel-shuffle upsampling; 991,980 parameters at ``width=32``.

    Levels at h, h/2, h/4 (widths w, 2w, 4w), strided 3x3 convolutions down, conv + PixelShuffle(2)
    up, concatenated skips, LeakyReLU(0.2), no normalisation, and a final conv + PixelShuffle(2)
    to the 2x sRGB grid. Inputs whose sides are not multiples of 4 are replicate-padded and the
    output cropped. Output clamped to [0, 1] (straight-through gradient by default).
    Input ``[B, 4, h, w]`` in [0, 1] -> output ``[B, 3, 2h, 2w]`` in [0, 1].

    ``base="reference"`` (ours, issue 10): the output is the fixed reference rendering
    (:func:`_reference`) plus the network's residual, whose last convolution starts at zero: the
    untrained U-Net renders the reference (unpaired UOT from the default init started near black,
    output mean 0.03, and collapsed).
    """

    input_kind = "packed"

    def __init__(self, width: int = 32, slope: float = 0.2, clamp: str = "ste", base: str = "none") -> None:
        super().__init__()
        if clamp not in _CLAMP_MODES:
            raise ValueError(f"UNetISP: clamp must be one of {_CLAMP_MODES}, got {clamp!r}")
        _check_base("UNetISP", base)
        self.clamp_mode, self.base = clamp, base
        w = width
        self.stem = nn.Sequential(nn.Conv2d(4, w, 3, padding=1), nn.LeakyReLU(slope))
        self.enc1 = _conv_block(w, w, slope)
        self.down1 = nn.Sequential(nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.LeakyReLU(slope))
        self.enc2 = _conv_block(2 * w, 2 * w, slope)
        self.down2 = nn.Sequential(nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.LeakyReLU(slope))
        self.bottom = _conv_block(4 * w, 4 * w, slope)
        self.up2 = nn.Sequential(nn.Conv2d(4 * w, 8 * w, 3, padding=1), nn.PixelShuffle(2), nn.LeakyReLU(slope))
        self.dec2 = _conv_block(4 * w, 2 * w, slope)
        self.up1 = nn.Sequential(nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.PixelShuffle(2), nn.LeakyReLU(slope))
        self.dec1 = _conv_block(2 * w, w, slope)
        self.tail = nn.Sequential(nn.Conv2d(w, 12, 3, padding=1), nn.PixelShuffle(2))
        if base == "reference":
            nn.init.zeros_(self.tail[0].weight)
            nn.init.zeros_(self.tail[0].bias)

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        """``[B, 4, h, w]`` packed RAW in [0, 1] -> ``[B, 3, 2h, 2w]`` sRGB in [0, 1]."""
        _check_input("UNetISP", raw, 4, "a packed RAW batch [R, Gr, Gb, B]")
        h, w = raw.shape[-2:]
        pad_h, pad_w = (-h) % 4, (-w) % 4
        x = F.pad(raw, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else raw
        s1 = self.enc1(self.stem(x))
        s2 = self.enc2(self.down1(s1))
        b = self.bottom(self.down2(s2))
        d2 = self.dec2(torch.cat([self.up2(b), s2], dim=1))
        d1 = self.dec1(torch.cat([self.up1(d2), s1], dim=1))
        y = self.tail(d1)[..., : 2 * h, : 2 * w]
        if self.base == "reference":
            y = _reference(raw) + y
        return clamp01(y, self.clamp_mode)


# --------------------------------------------------------------------------- registry
ISP_REGISTRY.update({"colornet": ColorNet, "tinyraw": TinyRawNet, "unet_isp": UNetISP})
