"""Data: the camera model, scene sources and the synthetic UP-ISP benchmark.

- :mod:`~uotisp_lib.data.camera`: sRGB -> packed 10-bit RAW forward model (Brooks et al. 2019) and
  the benchmark's target look.
- :mod:`~uotisp_lib.data.sources`: bundled photos, user photo folders, dead-leaves scenes.
- :mod:`~uotisp_lib.data.synth`: :func:`build_benchmark` / :func:`ensure_dataset`.
- :mod:`~uotisp_lib.data.layouts`: folder layouts (UP-ISP, Zurich), keyed by file stem.
"""

from uotisp_lib.data.camera import CameraModel, TargetLook
from uotisp_lib.data.synth import build_benchmark, ensure_dataset

__all__ = ["CameraModel", "TargetLook", "build_benchmark", "ensure_dataset"]
