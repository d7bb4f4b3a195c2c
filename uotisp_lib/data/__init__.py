"""Data: the camera model, scene sources and the synthetic UP-ISP benchmark.

- :mod:`~uotisp_lib.data.camera`: sRGB -> packed 10-bit RAW forward model (Brooks et al. 2019) and
  the benchmark's target look.
- :mod:`~uotisp_lib.data.sources`: bundled photos, user photo folders, dead-leaves scenes.
- :mod:`~uotisp_lib.data.synth`: :func:`build_benchmark` / :func:`ensure_dataset`.
- :mod:`~uotisp_lib.data.layouts`: folder layouts (UP-ISP, Zurich), keyed by file stem.
"""

from __future__ import annotations

import importlib

#: public name -> submodule; loaded on first access, so that ``uotisp_lib.data.layouts`` (NumPy
#: only) can be imported without torch
_LAZY = {
    "CameraModel": "camera",
    "TargetLook": "camera",
    "build_benchmark": "synth",
    "ensure_dataset": "synth",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"uotisp_lib.data.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'uotisp_lib.data' has no attribute {name!r}")
