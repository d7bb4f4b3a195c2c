"""Tone curves applied after demosaicing and denoising: RGB ``[B,3,H,W]`` in [0,1] -> [0,1]."""

from __future__ import annotations

import torch

from .raw import check_tensor

Tensor = torch.Tensor

GAMMA_MODES = ("borelli", "srgb", "none")


def gamma(x: Tensor, exponent: float = 1 / 2.2, eps: float = 1e-6) -> Tensor:
    """Power curve ``x ** exponent`` on ``x`` clamped to [0,1] (Borelli: exponent 1/2.2).

    Below ``eps`` the curve continues as the straight line through 0 and ``(eps, eps**exponent)``,
    so the gradient stays finite at 0 (``x ** (1/2.2)`` has an infinite slope there); the
    difference from the pure power is below ``eps ** exponent`` (2e-3 for 1/2.2, i.e. < 1/255).
    Any shape; values in [0,1].
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"gamma: expected a floating-point torch.Tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if not exponent > 0:
        raise ValueError(f"gamma: exponent must be > 0, got {exponent}")
    x = x.clamp(0.0, 1.0)
    safe = x.clamp_min(eps)
    return torch.where(x > eps, safe**exponent, x * eps ** (exponent - 1.0))


def srgb(x: Tensor) -> Tensor:
    """The sRGB transfer curve (IEC 61966-2-1) via :func:`kornia.color.linear_rgb_to_rgb`, on ``x``
    clamped to [0,1]; ``[B,3,H,W]``."""
    from kornia.color import linear_rgb_to_rgb

    check_tensor(x, "srgb", 4, 3, "an RGB image of shape [B,3,H,W]")
    return linear_rgb_to_rgb(x.clamp(0.0, 1.0))


def apply_gamma(x: Tensor, mode: str = "borelli") -> Tensor:
    """Tone curve by name: ``borelli`` (``x ** (1/2.2)``), ``srgb`` or ``none`` (clamp to [0,1])."""
    if mode == "borelli":
        return gamma(x, 1 / 2.2)
    if mode == "srgb":
        return srgb(x)
    if mode == "none":
        return x.clamp(0.0, 1.0)
    raise ValueError(f"apply_gamma: unknown mode {mode!r}; expected one of {', '.join(GAMMA_MODES)}")
