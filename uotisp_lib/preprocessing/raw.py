"""Packed-RAW operations: validation, channel order, black/white levels, white balance, Bayer packing.

Packed RAW is ``[B, 4, h, w]``; the canonical channel order is ``[R, Gr, Gb, B]`` (Gr: the green on
the red rows). Its Bayer mosaic is ``[B, 1, 2h, 2w]`` with R at (even, even), Gr at (even, odd),
Gb at (odd, even) and B at (odd, odd), i.e. an RGGB sensor (Borelli; docs/references.md "Preprocessing").
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

Tensor = torch.Tensor

#: Canonical packed channel names.
CANONICAL_CHANNELS = ("R", "Gr", "Gb", "B")

#: For each 2x2 Bayer pattern (read row-major from the top-left pixel) the input channel that holds
#: each canonical channel [R, Gr, Gb, B] when the RAW was packed row-major (TL, TR, BL, BR).
BAYER_ORDERS: dict[str, tuple[int, int, int, int]] = {
    "RGGB": (0, 1, 2, 3),  # [R, Gr, Gb, B]
    "GRBG": (1, 0, 3, 2),  # [Gr, R, B, Gb]
    "BGGR": (3, 2, 1, 0),  # [B, Gb, Gr, R]
    "GBRG": (2, 3, 0, 1),  # [Gb, B, R, Gr]
}

#: White-balance modes besides explicit gains.
WB_MODES = ("none", "gray_world")


def check_tensor(x: object, fn: str, ndim: int, channels: int | None, what: str) -> Tensor:
    """Raise a clear error unless ``x`` is a floating tensor of ``ndim`` dims and ``channels`` channels."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{fn}: expected a torch.Tensor {what}, got {type(x).__name__}")
    if x.ndim != ndim or (channels is not None and x.shape[1] != channels):
        raise ValueError(f"{fn}: expected {what}, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{fn}: expected a floating-point tensor {what}, got dtype {x.dtype}")
    return x


def check_packed(x: object, fn: str) -> Tensor:
    """Validate a packed RAW tensor ``[B, 4, h, w]`` (floating point)."""
    return check_tensor(x, fn, 4, 4, "packed RAW of shape [B,4,h,w]")


def check_bayer(x: object, fn: str, min_side: int = 2) -> Tensor:
    """Validate a Bayer mosaic ``[B, 1, H, W]`` with even H, W >= ``min_side``."""
    x = check_tensor(x, fn, 4, 1, "a Bayer mosaic of shape [B,1,H,W]")
    h, w = x.shape[-2:]
    if h % 2 or w % 2 or h < min_side or w < min_side:
        raise ValueError(
            f"{fn}: expected a Bayer mosaic with even height and width >= {min_side}, got {h}x{w}"
        )
    return x


def _order_perm(order: str, fn: str) -> tuple[int, int, int, int]:
    key = order.upper() if isinstance(order, str) else order
    if key not in BAYER_ORDERS:
        raise ValueError(f"{fn}: unknown Bayer order {order!r}; expected one of {', '.join(BAYER_ORDERS)}")
    return BAYER_ORDERS[key]


def reorder_channels(raw: Tensor, order: str = "RGGB", inverse: bool = False) -> Tensor:
    """Packed RAW ``[B,4,h,w]`` whose channels follow the 2x2 pattern ``order`` -> canonical
    ``[R, Gr, Gb, B]``. ``inverse=True`` maps canonical back to ``order``."""
    _check_packed_any_dtype(raw, "reorder_channels")
    perm = list(_order_perm(order, "reorder_channels"))
    if inverse:
        perm = [perm.index(k) for k in range(4)]
    return raw[:, perm]


def _check_packed_any_dtype(raw: object, fn: str) -> Tensor:
    if not isinstance(raw, torch.Tensor):
        raise TypeError(f"{fn}: expected a torch.Tensor packed RAW of shape [B,4,h,w], got {type(raw).__name__}")
    if raw.ndim != 4 or raw.shape[1] != 4:
        raise ValueError(f"{fn}: expected packed RAW of shape [B,4,h,w], got shape {tuple(raw.shape)}")
    return raw


def _levels(value: float | Sequence[float] | Tensor, like: Tensor, name: str) -> Tensor:
    """Scalar or length-4 level -> tensor [1,4,1,1] on ``like``'s device and dtype."""
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if t.ndim == 0:
        t = t.expand(4)
    if t.shape != (4,):
        raise ValueError(f"normalize: {name} must be a scalar or have 4 values [R,Gr,Gb,B], got shape {tuple(t.shape)}")
    return t.view(1, 4, 1, 1)


def normalize(
    raw: Tensor,
    black: float | Sequence[float] | Tensor = 0.0,
    white: float | Sequence[float] | Tensor = 1023.0,
) -> Tensor:
    """Raw units -> [0,1]: ``(raw - black) / (white - black)`` clipped to [0,1] (Borelli).

    Args:
        raw: packed RAW ``[B,4,h,w]`` in raw units (integer tensors are converted to float32).
            Data already in [0,1] takes ``black=0, white=1``.
        black, white: scalars or 4 per-channel levels, in the channel order of ``raw``.
    Returns:
        ``[B,4,h,w]`` float in [0,1].
    """
    raw = _check_packed_any_dtype(raw, "normalize")
    if not raw.is_floating_point():
        raw = raw.to(torch.float32)
    b = _levels(black, raw, "black")
    w = _levels(white, raw, "white")
    if bool((w <= b).any()):
        raise ValueError(f"normalize: white level must exceed black level, got black={black}, white={white}")
    return ((raw - b) / (w - b)).clamp(0.0, 1.0)


def _gains3(gains: Sequence[float] | Tensor, like: Tensor) -> Tensor:
    """Gains [3] or [B,3] (R, G, B) -> tensor [B or 1, 3] on ``like``'s device/dtype."""
    g = torch.as_tensor(gains, dtype=like.dtype, device=like.device)
    shape = tuple(g.shape)
    if g.ndim == 1:
        g = g.unsqueeze(0)
    if g.ndim != 2 or g.shape[1] != 3 or g.shape[0] not in (1, like.shape[0]):
        raise ValueError(f"white_balance: expected gains of shape [3] or [{like.shape[0]},3] (R, G, B), got {shape}")
    if bool((g <= 0).any()) or not bool(torch.isfinite(g).all()):
        raise ValueError("white_balance: gains must be finite and positive")
    return g


def white_balance(packed01: Tensor, gains: Sequence[float] | Tensor, clip: bool = True) -> Tensor:
    """Multiply packed RAW ``[B,4,h,w]`` (canonical order, [0,1]) by R, G, B gains ([3] or [B,3]);
    both greens take the G gain. ``clip`` clamps the result to [0,1]."""
    check_packed(packed01, "white_balance")
    g = _gains3(gains, packed01)
    out = packed01 * g[:, [0, 1, 1, 2]][:, :, None, None]
    return out.clamp(0.0, 1.0) if clip else out


def gray_world_gains(
    packed01: Tensor, clip_level: float = 0.99, eps: float = 1e-6, max_gain: float = 8.0
) -> Tensor:
    """Gray-world white-balance gains ``[B,3]`` (R, G, B) with G = 1.

    Gains are ``mean(G) / mean(R)``, ``1``, ``mean(G) / mean(B)`` with G = (Gr + Gb) / 2, averaged
    only over 2x2 Bayer quads in which no channel reaches ``clip_level`` (clipped highlights carry no
    colour information). If an image has no such quad, all quads are used. A channel whose mean is
    below ``eps`` gets gain 1; gains are clamped to ``[1/max_gain, max_gain]``.
    """
    check_packed(packed01, "gray_world_gains")
    x = packed01.detach()
    valid = (x.amax(dim=1, keepdim=True) < clip_level).to(x.dtype)  # [B,1,h,w]
    none_valid = valid.sum(dim=(1, 2, 3), keepdim=True) == 0
    valid = torch.where(none_valid, torch.ones_like(valid), valid)
    r, gr, gb, b = x.unbind(dim=1)
    v = valid[:, 0]
    n = v.sum(dim=(1, 2))

    def mean(c: Tensor) -> Tensor:
        return (c * v).sum(dim=(1, 2)) / n

    m_r, m_g, m_b = mean(r), mean((gr + gb) / 2), mean(b)
    one = torch.ones_like(m_g)
    g_r = torch.where(m_r > eps, m_g / m_r.clamp_min(eps), one)
    g_b = torch.where(m_b > eps, m_g / m_b.clamp_min(eps), one)
    gains = torch.stack([g_r, one, g_b], dim=1)
    return gains.clamp(1.0 / max_gain, max_gain)


def apply_white_balance(packed01: Tensor, wb: str | Sequence[float] | Tensor = "none") -> Tensor:
    """White balance by mode: ``"none"``, ``"gray_world"`` (:func:`gray_world_gains`) or given gains."""
    if isinstance(wb, str):
        if wb == "none":
            return check_packed(packed01, "apply_white_balance")
        if wb == "gray_world":
            return white_balance(packed01, gray_world_gains(packed01))
        raise ValueError(f"apply_white_balance: unknown mode {wb!r}; expected 'none', 'gray_world' or 3 gains")
    return white_balance(packed01, wb)


def unpack_bayer(packed: Tensor) -> Tensor:
    """Packed ``[B,4,h,w]`` (canonical [R,Gr,Gb,B]) -> RGGB mosaic ``[B,1,2h,2w]``."""
    check_packed(packed, "unpack_bayer")
    # pixel_shuffle puts channel 2a+b at offset (a, b) of each 2x2 cell: exactly R, Gr, Gb, B.
    return F.pixel_shuffle(packed, 2)


def pack_bayer(bayer: Tensor) -> Tensor:
    """RGGB mosaic ``[B,1,H,W]`` (H, W even) -> packed ``[B,4,H/2,W/2]`` [R,Gr,Gb,B]; inverse of
    :func:`unpack_bayer`."""
    check_bayer(bayer, "pack_bayer")
    return F.pixel_unshuffle(bayer, 2)


def mosaic(rgb: Tensor) -> Tensor:
    """Sample an RGB image ``[B,3,H,W]`` (H, W even) on the RGGB pattern -> ``[B,1,H,W]``.

    Used to build test and benchmark inputs from full-colour images.
    """
    check_tensor(rgb, "mosaic", 4, 3, "an RGB image of shape [B,3,H,W]")
    h, w = rgb.shape[-2:]
    if h % 2 or w % 2:
        raise ValueError(f"mosaic: expected even height and width, got {h}x{w}")
    out = rgb[:, 1:2].clone()
    out[..., 0::2, 0::2] = rgb[:, 0:1, 0::2, 0::2]
    out[..., 1::2, 1::2] = rgb[:, 2:3, 1::2, 1::2]
    return out
