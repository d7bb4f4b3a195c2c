"""Denoising backends for demosaiced RGB ``[B,3,H,W]`` in [0,1].

- ``none``: identity.
- ``guided``: self-guided colour filter (He, Sun and Tang, "Guided image filtering", ECCV 2010 /
  TPAMI 2013) via :func:`kornia.filters.guided_blur`, ``eps = 8 sigma^2``, 5x5 window. On skimage
  photos in linear light with shot + read noise and 10-bit quantisation (benchmarks/
  bench_preprocessing.py) it adds +1.4 dB (noise std ~0.015) and +2.7 dB (~0.03) after Malvar
  demosaicing; kornia's bilateral filter at its best range sigma is within 0.1 dB and, on one
  thread at 512x512, about as fast (benchmarks/README.md), and a Gaussian blur loses PSNR at low noise.
- ``ffdnet``: FFDNet (Zhang, Zuo and Zhang, "FFDNet: Toward a fast and flexible solution for
  CNN-based image denoising", IEEE TIP 2018), colour model with KAIR's layout. Its published weights
  (KAIR ``ffdnet_color.pth``) are GPL: never bundled, loaded only from a path the user gives or
  ``$UOTISP_FFDNET_WEIGHTS``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .raw import check_tensor

Tensor = torch.Tensor

DENOISE_METHODS = ("none", "guided", "ffdnet")

#: Environment variable naming KAIR's ``ffdnet_color.pth``.
FFDNET_ENV = "UOTISP_FFDNET_WEIGHTS"
FFDNET_URL = "https://github.com/cszn/KAIR/releases/download/v1.0/ffdnet_color.pth"

#: Guided-filter regulariser as a multiple of the noise variance, and its window (measured best
#: of eps in {1, 4, 8, 16, 32} sigma^2 and windows 5, 7 over noise std 0.005..0.03).
GUIDED_EPS_FACTOR = 8.0
GUIDED_KERNEL = 5


def check_rgb(x: object, fn: str) -> Tensor:
    """Validate an RGB tensor ``[B,3,H,W]`` (floating point)."""
    return check_tensor(x, fn, 4, 3, "an RGB image of shape [B,3,H,W]")


def denoise(rgb: Tensor, method: str = "none", sigma: float = 0.01, weights: str | os.PathLike | None = None) -> Tensor:
    """Denoise RGB ``[B,3,H,W]`` in [0,1] for noise of standard deviation ``sigma`` (in [0,1] units).

    ``weights`` (``ffdnet`` only): path to KAIR's ``ffdnet_color.pth``; else ``$UOTISP_FFDNET_WEIGHTS``.
    """
    check_rgb(rgb, "denoise")
    if method not in DENOISE_METHODS:
        raise ValueError(f"denoise: unknown method {method!r}; expected one of {', '.join(DENOISE_METHODS)}")
    if not sigma >= 0:
        raise ValueError(f"denoise: sigma must be >= 0 (noise std in [0,1] units), got {sigma}")
    if method == "none" or (method == "guided" and sigma == 0):
        return rgb
    if method == "guided":
        return denoise_guided(rgb, sigma).clamp(0.0, 1.0)
    model = load_ffdnet(weights, device=rgb.device, dtype=rgb.dtype)
    return model(rgb, sigma).clamp(0.0, 1.0)


def denoise_guided(rgb: Tensor, sigma: float) -> Tensor:
    """Self-guided colour guided filter (He et al. 2010: the RGB image guides itself through its
    local 3x3 colour covariance) with ``eps = 8 sigma^2`` over a 5x5 window: ``[B,3,H,W]`` ->
    ``[B,3,H,W]``. Smooths where the local variance is below ~eps, keeps edges."""
    from kornia.filters import guided_blur

    check_rgb(rgb, "denoise_guided")
    if not sigma > 0:
        raise ValueError(f"denoise_guided: sigma must be > 0, got {sigma}")
    return guided_blur(rgb, rgb, GUIDED_KERNEL, eps=GUIDED_EPS_FACTOR * sigma**2)


class FFDNet(nn.Module):
    """FFDNet (Zhang, Zuo and Zhang, IEEE TIP 2018), written by hand because no installed library
    provides it; layer names follow KAIR's ``network_ffdnet.py`` so its ``state_dict`` loads.

    Colour model: pixel-unshuffle by 2 (3 -> 12 channels), concatenate a noise-level map, then
    ``n_layers`` 3x3 convs of ``width`` channels with ReLU between them (no batch norm), the last
    giving 12 channels, and pixel-shuffle back. Not residual: the network outputs the clean image.
    KAIR's colour weights: ``width=96, n_layers=12``.
    """

    def __init__(self, in_channels: int = 3, width: int = 96, n_layers: int = 12) -> None:
        super().__init__()
        if n_layers < 2:
            raise ValueError(f"FFDNet: n_layers must be >= 2, got {n_layers}")
        self.in_channels = in_channels
        layers: list[nn.Module] = [nn.Conv2d(4 * in_channels + 1, width, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(n_layers - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(width, 4 * in_channels, 3, padding=1))
        self.model = nn.Sequential(*layers)  # keys model.0, model.2, ..., as in KAIR

    def forward(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """``x``: ``[B,C,H,W]`` in [0,1]; ``sigma``: noise std in [0,1] units, a float, ``[B]`` or
        ``[B,1,1,1]``. Returns ``[B,C,H,W]`` (not clamped)."""
        check_tensor(x, "FFDNet", 4, self.in_channels, f"an image of shape [B,{self.in_channels},H,W]")
        h, w = x.shape[-2:]
        x = F.pad(x, (0, w % 2, 0, h % 2), mode="replicate")  # pixel-unshuffle needs even sides
        s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)
        if s.shape[0] not in (1, x.shape[0]):
            raise ValueError(
                f"FFDNet: sigma must be a scalar or have one value per image ({x.shape[0]}), got {s.shape[0]}"
            )
        down = F.pixel_unshuffle(x, 2)
        noise_map = s.expand(x.shape[0], 1, *down.shape[-2:])
        out = F.pixel_shuffle(self.model(torch.cat([down, noise_map], dim=1)), 2)
        return out[..., :h, :w]


_FFDNET_CACHE: dict[tuple[str, str, torch.dtype], FFDNet] = {}


def ffdnet_weights_path(weights: str | os.PathLike | None = None) -> Path:
    """Resolve FFDNet weights: ``weights`` if given, else ``$UOTISP_FFDNET_WEIGHTS``; raise
    FileNotFoundError saying where to put them when neither names an existing file."""
    src = weights if weights else os.environ.get(FFDNET_ENV)
    if not src:
        raise FileNotFoundError(
            "denoise backend 'ffdnet' needs KAIR's colour weights (GPL-3.0, never bundled): download "
            f"{FFDNET_URL} and pass its path (weights=... / PreprocessConfig.ffdnet_weights) or set ${FFDNET_ENV}"
        )
    path = Path(src).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"denoise backend 'ffdnet': weights file {path} does not exist; expected KAIR's "
            f"ffdnet_color.pth ({FFDNET_URL})"
        )
    return path


def load_ffdnet(
    weights: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> FFDNet:
    """Load a frozen colour FFDNet from ``weights`` or ``$UOTISP_FFDNET_WEIGHTS``; cached per file,
    device and dtype. A state dict that does not fit raises ValueError naming the file."""
    path = ffdnet_weights_path(weights)
    key = (f"{path.resolve()}@{path.stat().st_mtime_ns}", str(torch.device(device)), dtype)
    if key in _FFDNET_CACHE:
        return _FFDNET_CACHE[key]
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for corrupt files
        raise ValueError(f"{path}: not a readable PyTorch state dict for FFDNet ({type(e).__name__}: {e})") from e
    if isinstance(state, dict) and isinstance(state.get("params"), dict):
        state = state["params"]
    if not isinstance(state, dict) or "model.0.weight" not in state:
        raise ValueError(f"{path}: expected an FFDNet state dict with keys model.0.weight ... (KAIR layout)")
    width = state["model.0.weight"].shape[0]
    n_layers = sum(1 for k in state if k.startswith("model.") and k.endswith(".weight"))
    model = FFDNet(in_channels=3, width=width, n_layers=n_layers)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{path}: state dict does not match the colour FFDNet layout: {e}") from e
    model = model.eval().requires_grad_(False).to(device=device, dtype=dtype)
    _FFDNET_CACHE[key] = model
    return model
