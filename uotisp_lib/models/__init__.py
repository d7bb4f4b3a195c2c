"""Networks: ISP maps (RAW / pseudo-RGB -> sRGB) with a name registry, and discriminators.

``build_isp("colornet" | "tinyraw" | "unet_isp", **kw)`` builds an ISP; every ISP has
``input_kind`` ("rgb" or "packed") and outputs sRGB in [0, 1]. The expert committee of
EGUOT-ISP (issue 6) will live in ``models/experts.py``.
"""

from uotisp_lib.models.discriminators import UNetDiscriminatorSN
from uotisp_lib.models.isp import (
    ISP_REGISTRY,
    ColorNet,
    Lut3d,
    TinyRawNet,
    UNetISP,
    build_isp,
    clamp01,
    count_parameters,
    identity_lut,
)

__all__ = [
    "ISP_REGISTRY",
    "ColorNet",
    "Lut3d",
    "TinyRawNet",
    "UNetDiscriminatorSN",
    "UNetISP",
    "build_isp",
    "clamp01",
    "count_parameters",
    "identity_lut",
]
