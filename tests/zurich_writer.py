"""Test helper: a Zurich RAW-to-RGB folder made from a UP-ISP benchmark with ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_zurich(src: Path, dst: Path, splits=(("train", "train"), ("test", "test"))) -> Path:
    """Write ``dst/<split>/huawei_raw/<k>.png`` (each packed RAW patch of ``src/<from>/raws`` as its
    16-bit RGGB Bayer mosaic, 2h x 2w) and ``dst/<split>/canon/<k>.jpg`` (its ground truth), ``k``
    counting from 0 per split in the natural order of the stems. Returns ``dst``."""
    import imageio.v3 as iio

    from uotisp_lib import io as uio
    from uotisp_lib.data.layouts import scan_upisp

    lay = scan_upisp(src)
    for split, source in splits:
        (dst / split / "huawei_raw").mkdir(parents=True, exist_ok=True)
        for k, (_, raw_path, gt_path) in enumerate(lay.paired(source)):
            packed = uio.read_raw(raw_path)
            h, w, _ = packed.shape
            mosaic = np.empty((2 * h, 2 * w), np.uint16)
            for c, (dy, dx) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):  # R, Gr, Gb, B
                mosaic[dy::2, dx::2] = packed[..., c]
            iio.imwrite(dst / split / "huawei_raw" / f"{k}.png", mosaic)
            uio.save_image(dst / split / "canon" / f"{k}.jpg", uio.read_srgb(gt_path))
    return dst
