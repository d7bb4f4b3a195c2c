from __future__ import annotations

import numpy as np
import pytest
import torch

from uotisp_lib import io as uio
from uotisp_lib.config import get_profile
from uotisp_lib.data import build_benchmark
from uotisp_lib.data.datasets import PatchSet, load_raw_patches, load_srgb_patches
from uotisp_lib.data.layouts import scan_upisp


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    return scan_upisp(build_benchmark(tmp_path_factory.mktemp("b") / "smoke", get_profile("smoke").synth, seed=2))


def test_raw_patches_are_normalised_and_keyed_by_stem(layout):
    ps = load_raw_patches(layout, "train")
    cfg = get_profile("smoke").synth
    assert ps.images.shape[1:] == (4, cfg.patch, cfg.patch) and len(ps) == len(layout.paths("train", "raws"))
    stem = ps.stems[3]
    want = uio.read_raw(layout.paths("train", "raws")[stem]).astype(np.float32) / 1023.0
    np.testing.assert_allclose(ps.select([stem])[0].permute(1, 2, 0).numpy(), want, rtol=0, atol=1e-7)
    assert float(ps.images.min()) >= 0 and float(ps.images.max()) <= 1


def test_srgb_patches_and_paired_lookup(layout):
    raw, gt = load_raw_patches(layout, "val"), load_srgb_patches(layout, "val", "gt")
    assert set(raw.stems) == set(gt.stems)
    order = list(reversed(raw.stems))
    pairs = gt.select(order)
    assert pairs.shape == (len(order), 3, 2 * raw.images.shape[2], 2 * raw.images.shape[3])
    ref = torch.from_numpy(uio.read_srgb(layout.paths("val", "gt")[order[0]])).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(pairs[0], ref)


def test_patchset_errors():
    with pytest.raises(ValueError, match="2 stems for 3 images"):
        PatchSet(("a", "b"), torch.zeros(3, 1, 2, 2))
    with pytest.raises(ValueError, match="duplicate stems"):
        PatchSet(("a", "a"), torch.zeros(2, 1, 2, 2))
    with pytest.raises(KeyError, match="unknown stems"):
        PatchSet(("a",), torch.zeros(1, 1, 2, 2)).select(["b"])
