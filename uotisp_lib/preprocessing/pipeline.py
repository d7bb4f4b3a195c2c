"""The preprocessing pipeline: packed RAW in raw units -> pseudo-RGB ``[B,3,2h,2w]`` in [0,1].

Borelli's chain (docs/references.md "Preprocessing"): normalise ``(x - black) / (white - black)`` and clip
-> white balance (gains 1, 1, 1) -> RGGB mosaic -> DemosaicNet -> FFDNet at sigma 0.01 -> ``x ** (1/2.2)``.
Our default keeps that chain but swaps in Malvar demosaicing and no denoising, so that it runs
offline and fast on a CPU without GPL weights; :meth:`PreprocessConfig.borelli` gives the original.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import torch
from torch import nn

from .demosaicing import DEMOSAIC_METHODS, demosaic
from .denoising import DENOISE_METHODS, denoise
from .raw import BAYER_ORDERS, WB_MODES, apply_white_balance, normalize, reorder_channels, unpack_bayer
from .tone import GAMMA_MODES, apply_gamma

Tensor = torch.Tensor
Level = Union[float, tuple[float, float, float, float]]
WhiteBalance = Union[str, tuple[float, float, float]]


@dataclass(frozen=True)
class PreprocessConfig:
    """Preprocessing choices.

    black, white: levels in raw units, scalars or 4 values in canonical [R, Gr, Gb, B] order
        (UP-ISP: 0 and 1023; data already in [0,1]: 0 and 1).
    order: the 2x2 Bayer pattern of the input packing (``RGGB`` = [R, Gr, Gb, B]).
    wb: ``"none"``, ``"gray_world"`` or (R, G, B) gains.
    demosaic: one of ``bilinear``, ``malvar`` (default), ``menon``, ``demosaicnet`` (Borelli).
    denoise: ``none`` (default), ``guided``, ``ffdnet`` (Borelli; GPL weights from
        ``ffdnet_weights`` or ``$UOTISP_FFDNET_WEIGHTS``).
    denoise_sigma: noise std in [0,1] units given to the denoiser (Borelli: 0.01).
    gamma: ``borelli`` (``x ** (1/2.2)``), ``srgb`` or ``none``.
    """

    black: Level = 0.0
    white: Level = 1023.0
    order: str = "RGGB"
    wb: WhiteBalance = "none"
    demosaic: str = "malvar"
    denoise: str = "none"
    denoise_sigma: float = 0.01
    gamma: str = "borelli"
    ffdnet_weights: str | None = None

    def __post_init__(self) -> None:
        def bad(field: str, value: object, choices: tuple[str, ...]) -> ValueError:
            return ValueError(f"PreprocessConfig: unknown {field} {value!r}; expected one of {', '.join(choices)}")

        if self.order not in BAYER_ORDERS:
            raise bad("order", self.order, tuple(BAYER_ORDERS))
        if isinstance(self.wb, str):
            if self.wb not in WB_MODES:
                raise bad("wb", self.wb, WB_MODES + ("(R, G, B) gains",))
        else:
            gains = tuple(float(g) for g in self.wb)
            if len(gains) != 3 or min(gains) <= 0:
                raise ValueError(f"PreprocessConfig: wb gains must be 3 positive numbers (R, G, B), got {self.wb!r}")
            object.__setattr__(self, "wb", gains)
        if self.demosaic not in DEMOSAIC_METHODS:
            raise bad("demosaic", self.demosaic, DEMOSAIC_METHODS)
        if self.denoise not in DENOISE_METHODS:
            raise bad("denoise", self.denoise, DENOISE_METHODS)
        if self.gamma not in GAMMA_MODES:
            raise bad("gamma", self.gamma, GAMMA_MODES)
        if not self.denoise_sigma >= 0:
            raise ValueError(f"PreprocessConfig: denoise_sigma must be >= 0, got {self.denoise_sigma}")
        for name in ("black", "white"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)):
                v = tuple(float(x) for x in v)
                if len(v) != 4:
                    raise ValueError(f"PreprocessConfig: {name} must be a number or 4 values [R,Gr,Gb,B], got {v!r}")
                object.__setattr__(self, name, v)

    @classmethod
    def borelli(cls, ffdnet_weights: str | None = None) -> "PreprocessConfig":
        """Borelli's published chain: black 0, white 1023, WB (1, 1, 1), DemosaicNet, FFDNet at
        sigma 0.01, gamma 1/2.2. FFDNet needs ``ffdnet_weights`` or ``$UOTISP_FFDNET_WEIGHTS``."""
        return cls(
            black=0.0,
            white=1023.0,
            order="RGGB",
            wb=(1.0, 1.0, 1.0),
            demosaic="demosaicnet",
            denoise="ffdnet",
            denoise_sigma=0.01,
            gamma="borelli",
            ffdnet_weights=ffdnet_weights,
        )


class Preprocessor(nn.Module):
    """Packed RAW ``[B,4,h,w]`` in raw units (any device; float or integer) -> pseudo-RGB
    ``[B,3,2h,2w]`` in [0,1]. No parameters of its own; differentiable except with ``menon``."""

    STAGES = ("normalized", "white_balanced", "bayer", "demosaiced", "denoised", "output")

    def __init__(self, cfg: PreprocessConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg if cfg is not None else PreprocessConfig()

    def stages(self, raw: Tensor) -> dict[str, Tensor]:
        """Every intermediate, in order: ``normalized`` and ``white_balanced`` (packed
        ``[B,4,h,w]``, canonical order), ``bayer`` ``[B,1,2h,2w]``, ``demosaiced``, ``denoised``
        and ``output`` (``[B,3,2h,2w]``)."""
        cfg = self.cfg
        out: dict[str, Tensor] = {}
        canonical = reorder_channels(raw, cfg.order)
        out["normalized"] = normalize(canonical, cfg.black, cfg.white)
        out["white_balanced"] = apply_white_balance(out["normalized"], cfg.wb)
        out["bayer"] = unpack_bayer(out["white_balanced"])
        out["demosaiced"] = demosaic(out["bayer"], cfg.demosaic)
        out["denoised"] = denoise(out["demosaiced"], cfg.denoise, cfg.denoise_sigma, weights=cfg.ffdnet_weights)
        out["output"] = apply_gamma(out["denoised"], cfg.gamma)
        return out

    def forward(self, raw: Tensor) -> Tensor:
        return self.stages(raw)["output"]

    def extra_repr(self) -> str:
        return repr(self.cfg)
