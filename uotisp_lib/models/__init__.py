"""Networks: ISP maps (RAW / pseudo-RGB -> sRGB) with a name registry, and discriminators.

``build_isp("colornet" | "tinyraw" | "unet_isp" | "package.module:Class", **kw)`` builds an ISP;
every ISP has ``input_kind`` ("rgb" or "packed") and outputs sRGB in [0, 1]. Networks of your own
are registered with ``@register_isp("name", input_kind=...)`` or named by import path
(:mod:`~uotisp_lib.models.registry`). The expert committee of
EGUOT-ISP lives in :mod:`~uotisp_lib.models.experts`; the UOT potential in
:mod:`~uotisp_lib.models.discriminators` (:class:`PotentialNet`).
"""

from uotisp_lib.models.discriminators import PotentialNet, UNetDiscriminatorSN
from uotisp_lib.models.experts import (
    EXPERTS,
    ColourExpert,
    ExpertCommittee,
    FrequencyExpert,
    StructureExpert,
    build_committee,
)
from uotisp_lib.models.isp import (
    ISP_REGISTRY,
    ColorNet,
    Lut3d,
    TinyRawNet,
    UNetISP,
    build_isp,
    clamp01,
    colornet_strips,
    count_parameters,
    identity_lut,
)
from uotisp_lib.models.registry import (
    ENTRY_POINT_GROUP,
    ISPNotFoundError,
    isp_source,
    load_plugins,
    register_isp,
    resolve_isp,
)

__all__ = [
    "EXPERTS",
    "ColourExpert",
    "ExpertCommittee",
    "FrequencyExpert",
    "PotentialNet",
    "StructureExpert",
    "build_committee",
    "ISP_REGISTRY",
    "ENTRY_POINT_GROUP",
    "ISPNotFoundError",
    "isp_source",
    "load_plugins",
    "register_isp",
    "resolve_isp",
    "ColorNet",
    "Lut3d",
    "TinyRawNet",
    "UNetDiscriminatorSN",
    "UNetISP",
    "build_isp",
    "clamp01",
    "colornet_strips",
    "count_parameters",
    "identity_lut",
]
