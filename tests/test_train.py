from __future__ import annotations

import pytest
import torch

from uotisp_lib.checkpoint import latest_checkpoint
from uotisp_lib.data.datasets import PatchSet
from uotisp_lib.inference import load_isp
from uotisp_lib.train import PseudoPairConfig, PseudoPairTrainer, colour_distance


def _data(n: int = 12, size: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g) * 0.6 + 0.2
    gains = torch.tensor([1.2, 1.0, 0.7]).view(1, 3, 1, 1)
    y = (x * gains).clamp(0, 1) ** 0.8  # a colour transform the colornet can learn
    stems = tuple(f"img_{i}" for i in range(n))
    return PatchSet(stems, x), PatchSet(stems, y)


def _random_pairs(targets: PatchSet):
    def pair(stems, gen):
        idx = torch.randint(0, len(targets), (len(stems),), generator=gen)
        return [targets.stems[i] for i in idx]

    return pair


CFG = PseudoPairConfig(stage1_epochs=1, stage2_epochs=1, batch_size=4, lr=1e-3, d_width=8)


def test_resume_after_interruption_ends_where_an_uninterrupted_run_does(tmp_path):
    src, tgt = _data()
    full = PseudoPairTrainer(CFG, src, tgt, _random_pairs(tgt), tmp_path / "a", val=(src, tgt), proxy_targets=tgt.images)
    hist_full = full.fit()
    assert [h["stage2"] for h in hist_full] == [0.0, 1.0] and "d_loss" in hist_full[1] and "d_loss" not in hist_full[0]

    first = PseudoPairTrainer(CFG, src, tgt, _random_pairs(tgt), tmp_path / "b", val=(src, tgt), proxy_targets=tgt.images)
    first.fit(stop_after_epochs=1)  # "killed" after epoch 1
    assert latest_checkpoint(tmp_path / "b" / "ckpt").name == f"step-{first.steps_per_epoch:08d}"
    resumed = PseudoPairTrainer(CFG, src, tgt, _random_pairs(tgt), tmp_path / "b", val=(src, tgt), proxy_targets=tgt.images)
    hist_resumed = resumed.fit()
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    strip = lambda hs: [{k: v for k, v in h.items() if k != "seconds"} for h in hs]  # noqa: E731
    assert strip(hist_resumed) == strip(hist_full)
    bundle = load_isp(tmp_path / "b" / "export")
    assert bundle.arch == "colornet" and bundle.meta["epoch"] == 2


def test_paired_training_learns_the_colour_transform(tmp_path):
    src, tgt = _data(n=16)
    cfg = PseudoPairConfig(paired=True, stage1_epochs=30, stage2_epochs=0, batch_size=8, lr=3e-3, ssim_weight=0.0)
    trainer = PseudoPairTrainer(cfg, src, tgt, None, tmp_path, val=(src, tgt))
    before = trainer.evaluate()["val_psnr"]
    hist = trainer.fit()
    assert hist[-1]["val_psnr"] > before + 6, (before, hist[-1]["val_psnr"])
    assert hist[-1]["l1"] < hist[0]["l1"]


def test_colour_distance_is_zero_for_identical_sets_and_grows_with_a_cast():
    _, tgt = _data()
    assert colour_distance(tgt.images, tgt.images) == pytest.approx(0.0, abs=1e-6)
    cast = (tgt.images * torch.tensor([1.0, 0.8, 0.6]).view(1, 3, 1, 1))
    assert colour_distance(tgt.images, cast) > colour_distance(tgt.images, tgt.images[:, :, :8]) + 0.05


def test_unpaired_needs_a_sampler(tmp_path):
    src, tgt = _data()
    with pytest.raises(ValueError, match="needs a pair_fn"):
        PseudoPairTrainer(CFG, src, tgt, None, tmp_path)


def test_random_crops_stay_aligned_across_scales():
    from uotisp_lib.train import random_crops

    y = torch.arange(2 * 3 * 16 * 16, dtype=torch.float32).view(2, 3, 16, 16)
    x = y[:, :, ::2, ::2].clone()  # a "packed" input at half resolution
    xc, yc = random_crops(x, 8, torch.Generator().manual_seed(0), scale=2, y=y)
    assert xc.shape == (2, 3, 4, 4) and yc.shape == (2, 3, 8, 8)
    torch.testing.assert_close(xc, yc[:, :, ::2, ::2])
    with pytest.raises(ValueError, match="exceeds the patch size"):
        random_crops(x, 32, torch.Generator(), scale=2)
    with pytest.raises(ValueError, match="multiple of the scale"):
        random_crops(x, 7, torch.Generator(), scale=2)


def test_cropped_unpaired_training_runs_and_resumes(tmp_path):
    import dataclasses

    src, tgt = _data()
    cfg = dataclasses.replace(CFG, crop=8)
    a = PseudoPairTrainer(cfg, src, tgt, _random_pairs(tgt), tmp_path / "a")
    a.fit()
    b = PseudoPairTrainer(cfg, src, tgt, _random_pairs(tgt), tmp_path / "b")
    b.fit(stop_after_epochs=1)
    b = PseudoPairTrainer(cfg, src, tgt, _random_pairs(tgt), tmp_path / "b")
    b.fit()
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
