"""The content-regularised GAN objective (UOTConfig.objective = "gan") and notebook 06's bias group:
known values of the losses, a setup JSON that keeps earlier hashes, arms that change one factor, the
paired colour-W difference and its generated discussion."""

from __future__ import annotations

import dataclasses
import math

import pandas as pd
import pytest
import torch

from uotisp_lib import ablations as ab
from uotisp_lib import study as st
from uotisp_lib import uot
from uotisp_lib.config import AblationStudy, UOTStudy, to_jsonable
from uotisp_lib.train import UOTTrainConfig, UOTTrainer

STUDY = UOTStudy(arch="tinyraw", archs=("tinyraw",), epochs=1, batch_size=4, seeds=2, potential_width=4, expert_width=4,
                 alpha=0.5, cost="quadratic")
V_REAL = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
V_FAKE = torch.tensor([-0.3, 1.5], dtype=torch.float64)
COST = torch.tensor([0.2, 0.4], dtype=torch.float64)


def _sp(t: float) -> float:
    return math.log1p(math.exp(t))


def test_gan_potential_loss_is_the_logistic_loss_and_ignores_the_cost():
    cfg = uot.UOTConfig(objective="gan", psi_target="kl", alpha=0.1)  # conjugates and alpha unused
    loss, logs = uot.potential_loss(V_REAL, V_FAKE, COST, cfg)
    want = (_sp(-0.5) + _sp(1.0) + _sp(-2.0)) / 3 + (_sp(-0.3) + _sp(1.5)) / 2
    assert float(loss) == pytest.approx(want, rel=1e-12)
    assert logs["cost"] == pytest.approx(0.3)
    same, _ = uot.potential_loss(V_REAL, V_FAKE, COST * 100, cfg)
    assert float(same) == pytest.approx(want, rel=1e-12)
    # the UOT objective does see the cost
    a, _ = uot.potential_loss(V_REAL, V_FAKE, COST, uot.UOTConfig())
    b, _ = uot.potential_loss(V_REAL, V_FAKE, COST * 100, uot.UOTConfig())
    assert float(a) != pytest.approx(float(b))


def test_gan_map_loss_known_value_and_pull():
    cfg = uot.UOTConfig(objective="gan")
    loss, logs = uot.map_loss(V_FAKE, COST, cfg)
    assert float(loss) == pytest.approx(0.3 + (_sp(0.3) + _sp(-1.5)) / 2, rel=1e-12)
    assert logs["v_fake"] == pytest.approx(0.6)
    loss_uot, _ = uot.map_loss(V_FAKE, COST, uot.UOTConfig())
    assert float(loss_uot) == pytest.approx(0.3 - 0.6, rel=1e-12)
    assert float(uot.potential_pull(V_FAKE)) == pytest.approx(-0.6)
    assert float(uot.potential_pull(V_FAKE, cfg)) == pytest.approx((_sp(0.3) + _sp(-1.5)) / 2)
    # gradients: d/dv of mean softplus(-v) is -sigmoid(-v) / n
    v = V_FAKE.clone().requires_grad_(True)
    uot.map_loss(v, COST, cfg)[0].backward()
    torch.testing.assert_close(v.grad, -torch.sigmoid(-V_FAKE) / 2)
    assert torch.autograd.gradcheck(lambda t: uot.map_loss(t, COST, cfg)[0], (V_FAKE.clone().requires_grad_(True),))
    assert torch.autograd.gradcheck(lambda a, b: uot.potential_loss(a, b, COST, cfg)[0],
                                    (V_REAL.clone().requires_grad_(True), V_FAKE.clone().requires_grad_(True)))


def test_objective_is_checked_and_left_out_of_the_setup_json_at_its_default():
    with pytest.raises(ValueError, match="objective must be one of uot, gan"):
        uot.UOTConfig(objective="wgan")
    assert "objective" not in to_jsonable(uot.UOTConfig())  # earlier stored runs keep their setup hash
    assert to_jsonable(uot.UOTConfig(objective="gan"))["objective"] == "gan"
    assert to_jsonable(uot.UOTConfig(objective="gan")) != to_jsonable(uot.UOTConfig())


def test_gan_trainer_step_descends_the_logistic_loss(tmp_path):
    from uotisp_lib.data.datasets import PatchSet

    g = torch.Generator().manual_seed(0)
    raw = torch.rand(8, 4, 8, 8, generator=g) * 0.5 + 0.1
    tgt = (uot.naive_isp(raw) * torch.tensor([1.2, 1.0, 0.7]).view(1, 3, 1, 1)).clamp(0, 1).flip(0)
    cfg = UOTTrainConfig(arch="tinyraw", epochs=6, batch_size=8, potential_width=4, experts=(), lr_potential=1e-2,
                         uot=uot.UOTConfig(objective="gan", tau=1.0, r1_gamma=0.0))
    tr = UOTTrainer(cfg, PatchSet(tuple(f"r_{i}" for i in range(8)), raw), PatchSet(tuple(f"t_{i}" for i in range(8)), tgt),
                    tmp_path)
    hist = tr.fit()
    first, last = hist[0]["potential/loss"], hist[-1]["potential/loss"]
    # both logistic terms are positive and the discriminator learns to separate (loss below 2 log 2)
    assert hist[-1]["potential/real_term"] > 0 and hist[-1]["potential/fake_term"] > 0
    assert last < first and last < 2 * math.log(2), (first, last)


def test_bias_arms_change_exactly_objective_and_tau(tiny_data_bias):
    ablate = AblationStudy(arch="tinyraw", groups=("bias",), bias_taus=(3.0,))
    arms = ab.ablation_arms(STUDY, ablate)
    assert [a.key for a in arms] == ["bias/OT map, tau 1", "bias/GAN + content, tau 1", "bias/OT map, tau 3",
                                     "bias/GAN + content, tau 3"]
    assert [a.baseline for a in arms] == ["", "OT map, tau 1", "", "OT map, tau 3"]
    base = st.base_config(STUDY, "tinyraw", 0)
    cfgs = [ab.arm_setup(a, STUDY, ablate, "tinyraw", 0, tiny_data_bias)[0] for a in arms]
    assert cfgs[0] == base  # the baseline is the study's own configuration (one stored run with other groups)
    assert cfgs[1] == dataclasses.replace(base, uot=dataclasses.replace(base.uot, objective="gan"))
    assert cfgs[2] == dataclasses.replace(base, uot=dataclasses.replace(base.uot, tau=3.0))
    assert cfgs[3] == dataclasses.replace(base, uot=dataclasses.replace(base.uot, tau=3.0, objective="gan"))
    # the OT arm at tau 3 is the cost group's "quadratic, tau 3": the same setup, so the same stored run
    cost_arm = next(a for a in ab.ablation_arms(STUDY, AblationStudy(groups=("cost",), taus=(3.0,), costs=("quadratic",)))
                    if a.name == "quadratic, tau 3")
    assert ab.arm_setup(cost_arm, STUDY, ablate, "tinyraw", 0, tiny_data_bias)[0] == cfgs[2]


@pytest.fixture(scope="module")
def tiny_data_bias(tmp_path_factory):
    from uotisp_lib.config import SynthConfig
    from uotisp_lib.data import synth
    from uotisp_lib.experiments import load_training_data

    cfg = SynthConfig(patch=8, layouts=((1, 2),), n_train_raw=3, n_train_jpeg=4, n_val=1, n_test=2)
    root = synth.build_benchmark(tmp_path_factory.mktemp("bias") / "b", cfg, 0)
    return load_training_data(root, proxy_fraction=0.25)


def _rows(gan_w, ot_w):
    rows = []
    for arm, ws in (("OT map, tau 1", ot_w), ("GAN + content, tau 1", gan_w)):
        for seed, w in enumerate(ws):
            rows.append({"group": "bias", "arm": arm, "arch": "colornet", "seed": seed, "psnr": 20.0 + seed, "ssim": 0.5,
                         "de2000": 10.0, "colour_w": w, "n_test_images": 2, "n_target_images": 5, "outlier_fraction": 0.0})
    return pd.DataFrame(rows)


def test_seed_paired_colour_w_difference_and_discussion():
    rows = _rows(gan_w=[0.05, 0.07, 0.06], ot_w=[0.03, 0.04, 0.035])
    d, se = ab.seed_paired_difference(rows[rows.arm == "GAN + content, tau 1"], rows[rows.arm == "OT map, tau 1"], "colour_w")
    diffs = [0.02, 0.03, 0.025]
    assert d == pytest.approx(0.025)
    assert se == pytest.approx(pd.Series(diffs).std(ddof=1) / math.sqrt(3))
    per_image = pd.DataFrame([{"arch": "colornet", "variant": f"bias/{r.arm}", "seed": r.seed, "image": i,
                               "psnr": r.psnr + (0.5 if r.arm.startswith("GAN") else 0.0) + 0.1 * i, "ssim": 0.5,
                               "de2000": 10.0} for r in rows.itertuples() for i in range(2)])
    arms = ab.ablation_arms(STUDY, AblationStudy(groups=("bias",), bias_taus=()))
    summary = ab.summarise_ablations(rows, per_image, arms)
    gan = summary[summary.arm == "GAN + content, tau 1"].iloc[0]
    assert gan.d_colour_w == pytest.approx(0.025) and gan.d_psnr == pytest.approx(0.5)
    base = summary[summary.arm == "OT map, tau 1"].iloc[0]
    assert base.d_colour_w == 0.0
    text = ab.discuss(summary)
    assert "colour W +0.0250 +- 0.0029 (farther from the target distribution than the OT map's)" in text
    assert "PSNR +0.50 +- 0.00 dB" in text and "3 seeds x 2 test images" in text
    # a GAN no farther than the OT map: said so
    tie = ab.summarise_ablations(_rows(gan_w=[0.03, 0.05, 0.04], ot_w=[0.04, 0.04, 0.04]), per_image, arms)
    assert "within two standard errors of the OT map's" in ab.discuss(tie)


def test_checkpoints_store_the_config_without_default_later_fields():
    from dataclasses import asdict

    from uotisp_lib.config import config_dict

    cfg = UOTTrainConfig()
    old = asdict(cfg)
    old["uot"].pop("objective")  # what a checkpoint written before the field existed holds
    assert config_dict(cfg) == old  # so such a run still resumes
    assert config_dict(dataclasses.replace(cfg, uot=uot.UOTConfig(objective="gan")))["uot"]["objective"] == "gan"
    assert config_dict(cfg)["experts"] == ("colour", "structure", "frequency")  # tuples kept, as asdict
