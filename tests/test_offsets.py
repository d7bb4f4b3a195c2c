"""The per-image colour-cast diagnostic of the UOT study (study.remove_image_offsets, offset_free_psnr,
discuss_offsets): known values, invariances, errors."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from uotisp_lib import study as st

STEMS = ["a_0", "a_1", "b_0"]


def _gt():
    g = torch.Generator().manual_seed(0)
    return torch.rand(3, 3, 12, 12, generator=g, dtype=torch.float64) * 0.6 + 0.2


def test_one_cast_per_image_is_removed_exactly():
    gt = _gt()
    cast = torch.tensor([[0.05, -0.02, 0.1], [0.05, -0.02, 0.1], [-0.08, 0.0, 0.03]], dtype=torch.float64)
    preds = gt + cast[:, :, None, None]
    torch.testing.assert_close(st.remove_image_offsets(preds, gt, STEMS), gt)
    p = st.offset_free_psnr(preds, gt, STEMS)
    assert list(p.index) == ["a", "b"] and (p == 100.0).all()  # identical: capped PSNR
    # without the fix: the PSNR of a constant error e is -10 log10(mean e^2)
    plain = st.per_image_scores(preds, gt, STEMS).set_index("image")["psnr"]
    assert plain["b"] == pytest.approx(-10 * math.log10((0.08**2 + 0.03**2) / 3), rel=1e-9)


def test_the_offset_is_the_mean_over_the_patches_of_an_image():
    gt = _gt()
    preds = gt.clone()
    preds[0] += 0.1  # image a: +0.1 on one patch, 0 on the other -> mean cast 0.05
    fixed = st.remove_image_offsets(preds, gt, STEMS)
    torch.testing.assert_close(fixed[0], gt[0] + 0.05)
    torch.testing.assert_close(fixed[1], gt[1] - 0.05)
    torch.testing.assert_close(fixed[2], gt[2])
    assert st.offset_free_psnr(preds, gt, STEMS)["a"] == pytest.approx(-10 * math.log10(0.05**2), rel=1e-9)


def test_local_errors_stay_and_the_fix_never_lowers_the_mse_of_an_image():
    gt = _gt()
    g = torch.Generator().manual_seed(1)
    preds = (gt + 0.05 * torch.randn(gt.shape, generator=g, dtype=torch.float64) + 0.04).clamp(0, 1)
    fixed = st.remove_image_offsets(preds, gt, STEMS)
    for k in range(3):  # subtracting the mean error is the best constant correction (before clipping)
        assert ((fixed[k] - gt[k]) ** 2).mean() <= ((preds[k] - gt[k]) ** 2).mean()
    p, plain = st.offset_free_psnr(preds, gt, STEMS), st.per_image_scores(preds, gt, STEMS).set_index("image")["psnr"]
    assert (p > plain).all() and (p < 40).all()  # noise of SD 0.05 stays: about 26 dB


def test_errors():
    gt = _gt()
    with pytest.raises(ValueError, match="remove_image_offsets: 2 stems"):
        st.remove_image_offsets(gt, gt, STEMS[:2])
    with pytest.raises(ValueError, match="remove_image_offsets"):
        st.remove_image_offsets(gt[:, :2], gt, STEMS)


def test_discuss_offsets_from_the_summary():
    summary = pd.DataFrame([
        {"arch": "colornet", "variant": "paired L1", "psnr": 25.0, "psnr_no_offset": 27.0},
        {"arch": "colornet", "variant": "unpaired UOT", "psnr": 22.0, "psnr_no_offset": 26.5},
    ])
    text = st.discuss_offsets(summary)
    assert "lifts paired L1 from 25.00 to 27.00 dB and unpaired UOT from 22.00 to 26.50 dB" in text
    assert "the gap goes from +3.00 to +0.50 dB, so per-image colour casts account for +2.50 dB of it" in text
    assert st.discuss_offsets(summary.drop(columns="psnr_no_offset")) == ""
    assert st.discuss_offsets(summary.assign(psnr_no_offset=float("nan"))) == ""
