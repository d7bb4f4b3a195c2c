"""Config overrides (issue 11): ``key=value`` and TOML values checked against the config dataclasses."""

from __future__ import annotations

import dataclasses

import pytest

from uotisp_lib.overrides import apply_overrides, load_toml, parse_literal, parse_sets
from uotisp_lib.train import PseudoPairConfig, UOTTrainConfig


@pytest.mark.parametrize(
    "text, value",
    [("8", 8), ("1e-3", 1e-3), ("true", True), ('"x y"', "x y"), ("luma", "luma"), ("[0.5, 0.9]", [0.5, 0.9]),
     ('{base = "reference"}', {"base": "reference"}), ("colour,structure", "colour,structure"), ("none", "none")],
)
def test_parse_literal(text, value):
    assert parse_literal(text) == value


def test_every_kind_of_field_round_trips():
    cfg = apply_overrides(UOTTrainConfig(), parse_sets([
        "epochs=3", "lr_map=1", "betas=[0.4, 0.8]", "experts=colour", "crop=32", "arch_kwargs={base=\"reference\"}",
        "uot.cost_kwargs={lam=0.5}", "uot.psi_target=linear",
    ]))
    assert (cfg.epochs, cfg.lr_map, cfg.betas, cfg.experts, cfg.crop) == (3, 1.0, (0.4, 0.8), ("colour",), 32)
    assert isinstance(cfg.lr_map, float) and cfg.arch_kwargs == (("base", "reference"),)
    assert cfg.uot == dataclasses.replace(UOTTrainConfig().uot, cost_kwargs=(("lam", 0.5),), psi_target="linear")
    assert apply_overrides(cfg, parse_sets(["crop=none", "experts="])).crop is None
    assert apply_overrides(cfg, parse_sets(["experts="])).experts == ()  # no committee


def test_toml_tables_are_dotted_keys_and_inline_tables_are_values(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('epochs = 4\narch_kwargs = {base = "reference"}\n[uot]\ntau = 2\ncost_kwargs = {lam = 1}\n')
    ov = load_toml(f)
    assert {k: v for k, (v, _) in ov.items()} == {"epochs": 4, "arch_kwargs": {"base": "reference"}, "uot.tau": 2,
                                                   "uot.cost_kwargs": {"lam": 1}}
    assert ov["uot.tau"][1] == f"--config {f}: uot.tau"
    cfg = apply_overrides(UOTTrainConfig(), ov)
    assert (cfg.epochs, cfg.uot.tau, cfg.uot.cost_kwargs) == (4, 2.0, (("lam", 1),))
    f.write_text("epochs = [\n")
    with pytest.raises(ValueError, match=rf"^--config {f}: not valid TOML \("):
        load_toml(f)


@pytest.mark.parametrize(
    "item, message",
    [
        ("betas=0.5", "--set betas=0.5: betas expects a list of 2 (float, float), got 0.5"),
        ("betas=[0.5, 0.6, 0.7]", "--set betas=[0.5, 0.6, 0.7]: betas expects a list of 2 (float, float), got [0.5, 0.6, 0.7]"),
        ("crop=big", "--set crop=big: crop expects int or none, got 'big'"),
        ("paired=1", "--set paired=1: paired expects a bool (true or false), got 1"),
        ("arch_kwargs=3", "--set arch_kwargs=3: arch_kwargs expects a table of key = value pairs, got 3"),
        ("stage1_epochs.x=1", "--set stage1_epochs.x=1: unknown key 'stage1_epochs.x'; 'stage1_epochs' of PseudoPairConfig has no fields"),
    ],
)
def test_wrong_types_name_the_key_and_what_it_expects(item, message):
    with pytest.raises(ValueError) as err:
        apply_overrides(_cfg_for(item), parse_sets([item]))
    assert str(err.value) == message


def _cfg_for(item: str):
    return UOTTrainConfig() if item.startswith("betas") else PseudoPairConfig()
