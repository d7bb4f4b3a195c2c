"""Test helper: write small CFA DNG files with pidng (shared by the io and infer tests)."""

from __future__ import annotations

import numpy as np
import pytest

#: A made-up camera ColorMatrix1 (XYZ -> camera) written into the test files.
CM = np.array([[0.60, -0.15, -0.05], [-0.40, 1.20, 0.15], [-0.08, 0.20, 0.55]])
#: pidng's CFAPattern codes (0 R, 1 G, 2 B) per 2x2 pattern name.
PIDNG_CFA = {"RGGB": [0, 1, 1, 2], "GRBG": [1, 0, 2, 1], "GBRG": [1, 2, 0, 1], "BGGR": [2, 1, 1, 0]}


def write_dng(path, mosaic, cfa, black, white=1023, neutral=(0.5, 1.0, 0.25)):
    """An uncompressed 16-bit CFA DNG with pidng; ``black``: 4 per-site values (2x2 row-major)."""
    pidng_core = pytest.importorskip("pidng.core")
    from pidng.defs import CalibrationIlluminant, DNGVersion, PhotometricInterpretation

    tag = pidng_core.Tag
    h, w = mosaic.shape
    t = pidng_core.DNGTags()
    for k, v in [
        (tag.ImageWidth, w), (tag.ImageLength, h), (tag.TileWidth, w), (tag.TileLength, h),
        (tag.Orientation, 1), (tag.PhotometricInterpretation, PhotometricInterpretation.Color_Filter_Array),
        (tag.SamplesPerPixel, 1), (tag.BitsPerSample, 16), (tag.CFARepeatPatternDim, [2, 2]),
        (tag.CFAPattern, cfa), (tag.BlackLevelRepeatDim, [2, 2]), (tag.BlackLevel, list(black)),
        (tag.WhiteLevel, white), (tag.ColorMatrix1, [[int(round(v * 10000)), 10000] for v in CM.ravel()]),
        (tag.CalibrationIlluminant1, CalibrationIlluminant.D65),
        (tag.AsShotNeutral, [[int(v * 10000), 10000] for v in neutral]),
        (tag.Make, "uotisp"), (tag.Model, "test"),
        (tag.DNGVersion, DNGVersion.V1_4), (tag.DNGBackwardVersion, DNGVersion.V1_0),
    ]:
        t.set(k, v)
    conv = pidng_core.RAW2DNG()
    conv.options(t, path="", compress=False)
    path.write_bytes(bytes(conv.convert(np.ascontiguousarray(mosaic, dtype=np.uint16))))
    return path
