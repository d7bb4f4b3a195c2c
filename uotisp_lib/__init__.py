"""uotisp_lib: learning a camera ISP (RAW to sRGB) with optimal transport.

Modules (one job each): :mod:`~uotisp_lib.io` (files), :mod:`~uotisp_lib.data` (layouts, camera
model, synthetic benchmark, patch sets), :mod:`~uotisp_lib.preprocessing`,
:mod:`~uotisp_lib.stitching`, :mod:`~uotisp_lib.stats`, :mod:`~uotisp_lib.features`,
:mod:`~uotisp_lib.matching`, :mod:`~uotisp_lib.losses`, :mod:`~uotisp_lib.models`,
:mod:`~uotisp_lib.uot`, :mod:`~uotisp_lib.train`, :mod:`~uotisp_lib.checkpoint`,
:mod:`~uotisp_lib.inference`, :mod:`~uotisp_lib.experiments`, :mod:`~uotisp_lib.metrics`,
:mod:`~uotisp_lib.reporting`, :mod:`~uotisp_lib.config` (and :mod:`~uotisp_lib.overrides` of its
dataclasses), :mod:`~uotisp_lib.cli`.
"""

__version__ = "0.1.0"
