from __future__ import annotations

import dataclasses

import pytest
import torch

from uotisp_lib.data.datasets import PatchSet
from uotisp_lib.train import UOTTrainConfig, UOTTrainer
from uotisp_lib.uot import UOTConfig, naive_isp


def _data(n: int = 8, size: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    raw = torch.rand(n, 4, size, size, generator=g) * 0.5 + 0.1
    stems = tuple(f"r_{i}" for i in range(n))
    gt = (naive_isp(raw) * torch.tensor([1.1, 1.0, 0.8]).view(1, 3, 1, 1)).clamp(0, 1)  # a learnable look
    return PatchSet(stems, raw), PatchSet(stems, gt), PatchSet(tuple(f"t_{i}" for i in range(n)), gt.flip(0))


CFG = UOTTrainConfig(
    arch="tinyraw", epochs=2, batch_size=4, potential_width=4, expert_width=4, uot=UOTConfig(tau=1.0, r1_gamma=1.0)
)


def test_unpaired_resume_is_exact_and_logs_diagnostics(tmp_path):
    raw, gt, tgt = _data()
    a = UOTTrainer(CFG, raw, tgt, tmp_path / "a", val=(raw, gt), proxy_targets=tgt.images)
    hist = a.fit()
    keys = set(hist[-1])
    assert {"map/cost", "potential/potential_gap", "r1", "val_psnr", "proxy"} <= keys
    assert {f"experts/{e}/grad_norm" for e in ("colour", "structure", "frequency")} <= keys
    b = UOTTrainer(CFG, raw, tgt, tmp_path / "b", val=(raw, gt), proxy_targets=tgt.images)
    b.fit(stop_after_epochs=1)
    b = UOTTrainer(CFG, raw, tgt, tmp_path / "b", val=(raw, gt), proxy_targets=tgt.images)
    b.fit()
    for name in ("map", "ema", "potential", "experts"):
        for p, q in zip(a.state.models[name].state_dict().values(), b.state.models[name].state_dict().values()):
            torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_paired_mode_learns_and_needs_ground_truth(tmp_path):
    raw, gt, tgt = _data(n=8)
    cfg = dataclasses.replace(CFG, mode="paired", epochs=40, lr_map=3e-3, experts=(), uot=UOTConfig(tau=0.1, r1_gamma=1.0))
    with pytest.raises(ValueError, match="paired mode needs the ground truth"):
        UOTTrainer(cfg, raw, tgt, tmp_path)
    cfg = dataclasses.replace(cfg, ema_decay=0.5)
    trainer = UOTTrainer(cfg, raw, tgt, tmp_path, paired=gt, val=(raw, gt))
    before = trainer.evaluate()["val_psnr"]
    hist = trainer.fit()
    assert hist[-1]["val_psnr"] > before + 3, (before, hist[-1]["val_psnr"])
    assert "paired" in hist[-1]


def test_config_errors():
    with pytest.raises(ValueError, match="mode must be"):
        UOTTrainConfig(mode="semi")
    with pytest.raises(ValueError, match="paired_fraction"):
        UOTTrainConfig(paired_fraction=1.5)


def test_export_of_the_ema_map_loads_for_inference(tmp_path):
    from uotisp_lib.inference import load_isp, render

    raw, gt, tgt = _data()
    trainer = UOTTrainer(dataclasses.replace(CFG, epochs=1), raw, tgt, tmp_path)
    trainer.fit()
    bundle = load_isp(tmp_path / "export")
    torch.testing.assert_close(render(bundle, raw.images), trainer.predict(raw))


def test_cropped_paired_training_resumes_exactly(tmp_path):
    raw, gt, tgt = _data(n=8, size=8)
    cfg = dataclasses.replace(CFG, mode="paired", crop=8, experts=("colour",))
    a = UOTTrainer(cfg, raw, tgt, tmp_path / "a", paired=gt)
    a.fit()
    b = UOTTrainer(cfg, raw, tgt, tmp_path / "b", paired=gt)
    b.fit(stop_after_epochs=1)
    b = UOTTrainer(cfg, raw, tgt, tmp_path / "b", paired=gt)
    hist = b.fit()
    assert "paired" in hist[-1]
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_expert_gradients_are_scaled_to_the_objective(tmp_path):
    # each expert's generator gradient (w.r.t. T(x)) is expert_weight x that of the transport + paired
    # objective, whatever the image size, so the committee cannot drown the L1 term in paired mode
    raw, gt, tgt = _data(n=4)
    cfg = dataclasses.replace(CFG, mode="paired", epochs=1, expert_weight=0.25)
    trainer = UOTTrainer(cfg, raw, tgt, tmp_path, paired=gt)
    logs = trainer.train_step(list(raw.stems), epoch=0)
    ref = logs["experts/reference_grad_norm"]
    assert ref > 0 and "paired" in logs
    for e in ("colour", "structure", "frequency"):
        # the logged scale excludes the weight: scale * own norm = the objective's norm
        assert logs[f"experts/{e}/scale"] * logs[f"experts/{e}/grad_norm"] == pytest.approx(ref, rel=1e-4)
        assert trainer.committee.weights[e] == 0.25


def test_resume_refuses_a_checkpoint_of_another_configuration(tmp_path):
    raw, gt, tgt = _data(n=4)
    cfg = dataclasses.replace(CFG, epochs=1)
    UOTTrainer(cfg, raw, tgt, tmp_path).fit()
    other = dataclasses.replace(cfg, epochs=2, uot=UOTConfig.preset("balanced", tau=1.0))
    with pytest.raises(ValueError, match=r"another configuration \(epochs: 1 -> 2, uot: "):
        UOTTrainer(other, raw, tgt, tmp_path).fit()
    # the same configuration resumes (nothing left to do), a fresh start is allowed explicitly
    assert len(UOTTrainer(cfg, raw, tgt, tmp_path).fit()) == 1
    assert len(UOTTrainer(other, raw, tgt, tmp_path).fit(resume=False)) == 2


def test_paired_mode_draws_the_potential_reals_from_the_paired_ground_truth(tmp_path):
    raw, gt, tgt = _data(n=6)
    cfg = dataclasses.replace(CFG, mode="paired", paired_fraction=0.5)
    trainer = UOTTrainer(cfg, raw, tgt, tmp_path / "gt", paired=gt)
    assert len(trainer.paired_stems) == 3 and set(trainer.targets.stems) == trainer.paired_stems
    torch.testing.assert_close(trainer.targets.images, gt.select(list(trainer.targets.stems)))
    unp = UOTTrainer(dataclasses.replace(cfg, paired_targets="unpaired"), raw, tgt, tmp_path / "u", paired=gt)
    assert unp.targets is tgt
    with pytest.raises(ValueError, match="paired_targets must be 'gt' or 'unpaired'"):
        dataclasses.replace(cfg, paired_targets="jpegs")


def test_lr_factor_known_values():
    from uotisp_lib.train import lr_factor

    assert lr_factor("constant", 7, 10) == 1.0
    assert lr_factor("cosine", 0, 11, 0.1) == pytest.approx(1.0)
    assert lr_factor("cosine", 5, 11, 0.1) == pytest.approx(0.55)  # halfway: floor + (1 - floor) / 2
    assert lr_factor("cosine", 10, 11, 0.1) == pytest.approx(0.1)
    assert lr_factor("cosine", 99, 11, 0.1) == pytest.approx(0.1)  # past the end: stays at the floor
    vals = [lr_factor("cosine", s, 20, 0.0) for s in range(20)]
    assert all(a >= b for a, b in zip(vals, vals[1:]))
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_factor("step", 1, 10)
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        UOTTrainConfig(lr_schedule="linear")
    with pytest.raises(ValueError, match="lr_floor must lie in"):
        UOTTrainConfig(lr_floor=2.0)


def test_potential_steps_and_cosine_schedule_resume_exactly(tmp_path):
    from uotisp_lib.train import lr_factor

    raw, gt, tgt = _data()
    cfg = dataclasses.replace(CFG, lr_schedule="cosine", lr_floor=0.2, uot=dataclasses.replace(CFG.uot, potential_steps=3))
    a = UOTTrainer(cfg, raw, tgt, tmp_path / "a", val=(raw, gt))
    a.fit()
    steps = a.epochs * a.steps_per_epoch
    # three potential updates and one map update per step (Adam counts its own steps)
    pot = a.state.optimizers["potential"].state_dict()["state"][0]["step"]
    mp = a.state.optimizers["map"].state_dict()["state"][0]["step"]
    assert (float(pot), float(mp)) == (3.0 * steps, float(steps))
    # the last step ran at the schedule's last factor, for every optimiser
    f = lr_factor("cosine", steps - 1, steps, 0.2)
    assert f == pytest.approx(0.2)
    assert a.state.optimizers["map"].param_groups[0]["lr"] == pytest.approx(cfg.lr_map * f)
    assert a.state.optimizers["potential"].param_groups[0]["lr"] == pytest.approx(cfg.lr_potential * f)
    assert a.state.optimizers["experts"].param_groups[0]["lr"] == pytest.approx(cfg.lr_experts * f)
    b = UOTTrainer(cfg, raw, tgt, tmp_path / "b", val=(raw, gt))
    b.fit(stop_after_epochs=1)
    b = UOTTrainer(cfg, raw, tgt, tmp_path / "b", val=(raw, gt))
    b.fit()
    for name in ("map", "potential", "experts"):
        for p, q in zip(a.state.models[name].state_dict().values(), b.state.models[name].state_dict().values()):
            torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_colour_ot_expert_pulls_the_output_colours_to_the_targets_and_resumes_exactly(tmp_path):
    from uotisp_lib.uot import colour_sliced_wasserstein

    raw, gt, tgt = _data()
    base = dataclasses.replace(CFG, experts=(), epochs=6, lr_map=3e-3, ema_decay=0.5)

    def colour_gap(trainer) -> float:
        out = trainer.predict(trainer.sources)
        return float(colour_sliced_wasserstein(out, tgt.images, n_projections=256, generator=torch.Generator().manual_seed(0)))

    plain = UOTTrainer(base, raw, tgt, tmp_path / "plain")
    start = colour_gap(plain)
    plain.fit()
    cfg = dataclasses.replace(base, colour_ot=3.0, colour_ot_draw=2)
    a = UOTTrainer(cfg, raw, tgt, tmp_path / "a")
    hist = a.fit()
    assert "colour_ot" in hist[-1]
    assert colour_gap(a) < 0.5 * start, (colour_gap(a), start)
    assert colour_gap(a) < colour_gap(plain), (colour_gap(a), colour_gap(plain))
    b = UOTTrainer(cfg, raw, tgt, tmp_path / "b")
    b.fit(stop_after_epochs=3)
    b = UOTTrainer(cfg, raw, tgt, tmp_path / "b")
    b.fit()
    for p, q in zip(a.state.models["map"].state_dict().values(), b.state.models["map"].state_dict().values()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_colour_ot_config_errors():
    with pytest.raises(ValueError, match="colour_ot must be >= 0 and colour_ot_draw >= 1"):
        UOTTrainConfig(colour_ot=-1.0)
    with pytest.raises(ValueError, match="colour_ot must be >= 0 and colour_ot_draw >= 1"):
        UOTTrainConfig(colour_ot_draw=0)
