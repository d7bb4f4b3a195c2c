from __future__ import annotations

import pytest
import torch

from uotisp_lib.preprocessing import PreprocessConfig
from uotisp_lib.preprocessing.evaluation import compare_backends, default_backends, synthetic_scenes


def test_scenes_are_deterministic_and_consistent():
    a, b = synthetic_scenes(2, 32, seed=5), synthetic_scenes(2, 32, seed=5)
    assert torch.equal(a.raw, b.raw) and torch.equal(a.clean, b.clean)
    assert a.raw.shape == (2, 4, 16, 16) and a.clean.shape == (2, 3, 32, 32)
    assert float(a.raw.min()) >= 0 and float(a.raw.max()) <= 1023
    assert torch.equal(a.raw, a.raw.round())  # 10-bit integer codes
    with pytest.raises(ValueError, match="size must be even"):
        synthetic_scenes(1, 31, seed=0)


def test_noise_free_scenes_score_high_and_noise_lowers_the_score():
    clean = synthetic_scenes(2, 48, seed=1, noise=False)
    noisy = synthetic_scenes(2, 48, seed=1, noise=True)
    cfg = {"malvar": PreprocessConfig(demosaic="malvar")}
    (c,) = compare_backends(clean, cfg)
    (n,) = compare_backends(noisy, cfg)
    assert c["psnr"] > 25 and c["ssim"] > 0.9 and c["de2000"] < 8
    assert n["psnr"] < c["psnr"] and n["de2000"] > c["de2000"]
    assert c["mp_per_s"] > 0


def test_guided_denoise_helps_on_noisy_scenes_and_names_rows():
    scenes = synthetic_scenes(2, 48, seed=2)
    rows = {r["backend"]: r for r in compare_backends(scenes, default_backends(["malvar"], ["none", "guided"], 0.02))}
    assert set(rows) == {"malvar+none", "malvar+guided"}
    assert rows["malvar+guided"]["psnr"] > rows["malvar+none"]["psnr"]
