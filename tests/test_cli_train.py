"""``uotisp train`` (issue 11): configs from the profile and overrides, one-line refusals before any
work, resume / reuse / --fresh on the smoke benchmark, history.csv, and ``uotisp --help/--version``."""

from __future__ import annotations

import csv
import dataclasses
import re
import shutil
from pathlib import Path

import pytest

import uotisp_lib
from cli_helpers import one_line_error
from uotisp_lib.checkpoint import run_lock
from uotisp_lib.cli import main
from uotisp_lib.cli.train import build_config
from uotisp_lib.config import config_dict, get_profile
from uotisp_lib.overrides import load_toml, parse_sets
from uotisp_lib.study import base_config
from uotisp_lib.train import EpochTrainer, PseudoPairConfig, config_hash

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.xdist_group("cli_train")]

SMOKE = get_profile("smoke")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    from uotisp_lib.data import build_benchmark

    return build_benchmark(tmp_path_factory.mktemp("b") / "smoke", SMOKE.synth, seed=3)


def _config(trainer="uot", sets=(), toml=None, mode=None, arch=None, seed=None):
    ov = {"config": load_toml(toml) if toml else {}, "set": parse_sets(list(sets))}
    return build_config(trainer, SMOKE, ov, mode, arch, seed)




def _history(run: Path) -> list[dict]:
    with open(run / "history.csv", newline="") as fh:
        return list(csv.DictReader(fh))


# ------------------------------------------------------------------------------------- configs


def test_defaults_come_from_the_profile_and_overrides_apply_in_order(tmp_path):
    assert _config() == base_config(SMOKE.uot, "tinyraw", 0)  # notebook 05's run, nothing changed
    cfg = _config(sets=["uot.tau=8", "epochs=20", "experts=colour,structure", "crop=none"])
    want = dataclasses.replace(base_config(SMOKE.uot, "tinyraw", 0), epochs=20, experts=("colour", "structure"))
    assert cfg == dataclasses.replace(want, uot=dataclasses.replace(want.uot, tau=8.0))
    toml = tmp_path / "c.toml"
    toml.write_text('arch = "unet_isp"\nepochs = 5\nseed = 4\n[uot]\ntau = 3\n')
    # profile < --config < --arch / --seed < --set
    cfg = _config(sets=["epochs=7"], toml=toml, arch="colornet")
    assert (cfg.arch, cfg.arch_kwargs, cfg.epochs, cfg.seed, cfg.uot.tau) == ("colornet", (), 7, 4, 3.0)
    cfg = _config(toml=toml, seed=9, mode="paired")
    assert (cfg.arch, cfg.arch_kwargs, cfg.epochs, cfg.seed, cfg.mode) == ("unet_isp", (("base", "reference"),), 5, 9, "paired")
    # pseudo-pairs: notebook 04's settings; paired puts every epoch in stage 1
    t = SMOKE.train
    assert _config("pseudo-pairs") == PseudoPairConfig(stage1_epochs=t.stage1_epochs, stage2_epochs=t.stage2_epochs,
                                                        batch_size=t.batch_size, lr=t.lr, d_width=t.d_width, crop=t.crop)
    cfg = _config("pseudo-pairs", mode="paired", sets=["arch_kwargs={head=\"lut3d\"}"])
    assert (cfg.paired, cfg.stage1_epochs, cfg.stage2_epochs, cfg.arch_kwargs) == (True, 2, 0, (("head", "lut3d"),))


def test_config_hash_is_the_hash_of_the_config_fields():
    cfg = _config()
    assert config_hash(cfg) == config_hash(config_dict(cfg))  # what the checkpoint stores
    assert re.fullmatch(r"[0-9a-f]{12}", config_hash(cfg))
    assert config_hash(cfg) != config_hash(dataclasses.replace(cfg, epochs=2))


def test_bad_input_is_one_line_exit_2_before_any_work(tmp_path, smoke, capsys):
    out = tmp_path / "run"
    base = ["train", "--data", str(smoke), "--out", str(out)]
    toml = tmp_path / "bad.toml"
    toml.write_text("[uot]\ntaux = 1\n")
    nogt = tmp_path / "nogt"
    shutil.copytree(smoke / "train" / "raws", nogt / "train" / "raws")
    shutil.copytree(smoke / "train" / "jpegs", nogt / "train" / "jpegs")
    uot_keys = ("psi_source, psi_target, tau, alpha, r1_gamma, r1_scale, reference_wb, map_steps_per_potential, "
                "potential_steps, cost, cost_kwargs, objective")
    cases = {
        "--set uot.taux=8": f"--set uot.taux=8: unknown key 'uot.taux' for UOTConfig; expected one of {uot_keys}",
        "--set epochs=abc": "--set epochs=abc: epochs expects int, got 'abc'",
        "--set lr_map=true": "--set lr_map=true: lr_map expects float, got True",
        "--set mode=sideways": "--set mode=sideways: UOTTrainConfig: mode must be 'unpaired' or 'paired', got 'sideways'",
        "--set epochs": "--set 'epochs': expected key=value, e.g. --set epochs=20",
        f"--config {toml}": f"--config {toml}: uot.taux: unknown key 'uot.taux' for UOTConfig; expected one of {uot_keys}",
        f"--config {tmp_path / 'no.toml'}": f"--config {tmp_path / 'no.toml'}: no such file; expected a TOML file of config fields",
        "--arch resnet9000": "--arch resnet9000: build_isp: unknown ISP 'resnet9000'; expected one of "
                             "['colornet', 'tinyraw', 'unet_isp'] or package.module:Class, or a name registered by a "
                             "--plugin module (or an entry point of group uotisp.isps)",
        "--arch nosuchpkg.nets:Net": "--arch nosuchpkg.nets:Net: ISP class 'nosuchpkg.nets:Net' cannot be found: cannot import "
                                     "'nosuchpkg.nets' (No module named 'nosuchpkg')",
        "--seed -1": "--seed -1: expected an integer >= 0",
        "--device tpu": "--device 'tpu': unknown device type; expected auto, cpu, cuda, cuda:N or mps",
        "--trainer pseudo-pairs --pairs nearest": "--pairs nearest: expected one of fgw, ot, uot, knn, random, or a GRAPH.npz file",
    }
    for extra, want in cases.items():
        assert one_line_error(capsys, base + extra.split()) == f"uotisp train: error: {want}", extra
    line = one_line_error(capsys, ["train", "--data", str(nogt), "--out", str(out), "--mode", "paired"])
    assert line == (f"uotisp train: error: --data {nogt}: no train/gt (--mode paired needs the ground truth); "
                    "expected train/raws/*.npy, train/jpegs/*.jpg, train/gt/*.png")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    line = one_line_error(capsys, ["train", "--data", str(smoke), "--out", str(tmp_path / "full")])
    assert "holds no run (no ckpt/); expected a new folder, an empty one, or a run folder to resume" in line
    assert not out.exists() and (tmp_path / "full" / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------------------------- runs


def test_uot_run_resumes_then_is_reused_and_fresh_moves_it_aside(tmp_path, smoke, capsys, monkeypatch):
    out = tmp_path / "run"
    argv = ["train", "--data", str(smoke), "--out", str(out), "--set", "epochs=2", "--device", "cpu"]
    fit = EpochTrainer.fit
    with monkeypatch.context() as m:  # an interrupted first run: one epoch of two
        m.setattr(EpochTrainer, "fit", lambda self, **kw: fit(self, stop_after_epochs=1, **kw))
        assert main(argv) == 0
    digest = config_hash(dataclasses.replace(base_config(SMOKE.uot, "tinyraw", 0), epochs=2))
    first = capsys.readouterr().out
    assert f"config hash {digest} -> {out}" in first.splitlines()[0]
    assert [(r["epoch"], r["step"]) for r in _history(out)] == [("1", "3")]  # 22 patches, batch 8: 3 steps
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == f"resumed from step 3 (config hash {digest}), epoch 1/2"
    rows = _history(out)
    assert [(r["epoch"], r["step"]) for r in rows] == [("1", "3"), ("2", "6")]
    assert {"val_psnr", "proxy", "map/cost", "potential/potential_gap"} <= set(rows[0])
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == f"finished run reused: {out} is at epoch 2/2, step 6 (config hash {digest}); nothing to train"
    # another configuration in the same folder: refused, naming the fields
    assert main(argv + ["--set", "uot.tau=2"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"uotisp train: error: --out {out}: holds a run of another configuration (uot differ); "
        "use --fresh to move it aside and start over, or another --out")
    # a folder in use by another training: refused in one line
    for extra in ([], ["--fresh"]):  # the trainer's lock, and --fresh's before it moves anything
        with run_lock(out):
            assert main(argv + extra) == 2
        assert re.fullmatch(rf"uotisp train: error: --out {out}: run folder in use by another training \(PID \d+\); "
                            r"wait for it or use another run folder", capsys.readouterr().err.strip()), extra
    # --fresh: the old run moves aside whole, a new one is trained from step 0
    assert main(argv + ["--set", "epochs=1", "--fresh"]) == 0
    lines = capsys.readouterr().out.splitlines()
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(aside) == 1 and lines[0] == f"--fresh: moved the old run {out} aside to {aside[0]}"
    assert [r["step"] for r in _history(aside[0])] == ["3", "6"]
    assert [r["step"] for r in _history(out)] == ["3"]
    assert not any(line.startswith("resumed") for line in lines)


def test_channels_last_and_compile_flags_train_the_same_run_which_resumes_without_them(tmp_path, smoke, capsys, monkeypatch):
    """--channels-last --compile change how the steps run, not the config (same hash, same folder):
    an interrupted run with both resumes without them and ends where a plain run does (weights within
    atol 1e-5, rtol 1e-4: only summation orders differ). --compile's backend is swapped for
    aot_eager here (graph capture without generated C++, which takes ~35 s to compile)."""
    import torch
    from safetensors.torch import load_file

    argv = ["train", "--trainer", "pseudo-pairs", "--mode", "paired", "--data", str(smoke),
            "--set", "stage1_epochs=2", "--set", "batch_size=11", "--device", "cpu"]
    assert main(argv + ["--out", str(tmp_path / "plain")]) == 0
    seen = []
    set_compile, fit = EpochTrainer.set_compile, EpochTrainer.fit
    with monkeypatch.context() as m:
        m.setattr(EpochTrainer, "set_compile", lambda self, backend: seen.append(backend) or set_compile(self, "aot_eager"))
        m.setattr(EpochTrainer, "fit", lambda self, **kw: seen.append(self.channels_last) or fit(self, stop_after_epochs=1, **kw))
        assert main(argv + ["--out", str(tmp_path / "fast"), "--channels-last", "--compile"]) == 0
    assert seen == ["inductor", True]
    assert main(argv + ["--out", str(tmp_path / "fast")]) == 0
    out = capsys.readouterr().out.splitlines()
    firsts = [line.split("config hash ")[1].split()[0] for line in out if line.startswith("train ")]
    assert len(firsts) == 3 and len(set(firsts)) == 1
    assert "resumed from step 2" in "\n".join(out)
    a, b = (load_file(str(tmp_path / r / "export" / "model.safetensors")) for r in ("plain", "fast"))
    assert sorted(a) == sorted(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)
    # --compile without a C++ compiler on the CPU: one line, before any work
    monkeypatch.setenv("CXX", "no-such-compiler")
    assert main(argv + ["--out", str(tmp_path / "x"), "--compile"]) == 2
    assert capsys.readouterr().err.strip() == (
        "uotisp train: error: --compile: torch.compile on the CPU needs a C++ compiler (no-such-compiler on PATH); "
        "none found: install one, or train without --compile")
    assert not (tmp_path / "x").exists()


def test_pseudo_pairs_paired_run_exports_its_config(tmp_path, smoke, capsys):
    import json

    out = tmp_path / "l1"
    argv = ["train", "--trainer", "pseudo-pairs", "--mode", "paired", "--data", str(smoke), "--out", str(out),
            "--set", "stage1_epochs=1", "--set", "batch_size=11", "--device", "cpu"]
    assert main(argv) == 0
    spec = json.loads((out / "export" / "isp.json").read_text())
    assert (spec["arch"], spec["source"], spec["meta"]["trainer"]) == ("colornet", "uotisp_lib.models.isp:ColorNet", "pseudo_pair")
    assert spec["meta"]["config"]["paired"] is True and spec["meta"]["config"]["batch_size"] == 11
    assert [(r["epoch"], r["step"]) for r in _history(out)] == [("1", "2")]  # 22 patches, batch 11
    assert float(_history(out)[0]["l1"]) > 0


def test_random_pairs_unpaired_run(tmp_path, smoke, capsys):
    out = tmp_path / "pp"
    argv = ["train", "--trainer", "pseudo-pairs", "--pairs", "random", "--data", str(smoke), "--out", str(out),
            "--set", "stage2_epochs=0", "--device", "cpu"]
    assert main(argv) == 0
    rows = _history(out)
    assert [(r["epoch"], r["step"], r["stage2"]) for r in rows] == [("1", "3", "0.0")]
    assert (out / "export" / "model.safetensors").is_file()


def test_uot_run_without_any_ground_truth_selects_on_the_proxy(tmp_path, smoke, capsys):
    """Real unpaired data (train/raws, train/jpegs, dev/raws, test/raws; no gt/, no meta.json): the
    proxy is logged every epoch, the best export is the lowest-proxy epoch, eval reports the proxy."""
    import json

    data = tmp_path / "nogt"
    for split, src in (("train", "train"), ("dev", "val"), ("test", "test")):
        shutil.copytree(smoke / src / "raws", data / split / "raws")
    shutil.copytree(smoke / "train" / "jpegs", data / "train" / "jpegs")
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(out), "--set", "epochs=2", "--device", "cpu"]) == 0
    rows = _history(out)
    proxy = [float(r["proxy"]) for r in rows]
    assert len(rows) == 2 and "val_psnr" not in rows[0] and all(0 < p < 10 for p in proxy)
    best = proxy.index(min(proxy)) + 1
    done = capsys.readouterr().out.splitlines()[-2]
    assert f"proxy {proxy[-1]:.4g}; " in done
    assert f"best: {out / 'best'} (epoch {best}, lowest proxy, no val ground truth)" in done
    spec = json.loads((out / "best" / "isp.json").read_text())
    assert spec["meta"]["selected_on"] == "proxy" and spec["meta"]["epoch"] == best
    assert main(["eval", "--checkpoint", str(out / "best"), "--data", str(data), "--split", "test"]) == 0
    said = capsys.readouterr().out.splitlines()
    assert said[0] == f"metrics need ground truth: {data / 'test' / 'gt'} has no images; reporting the ground-truth-free proxy instead"


def test_paired_uot_run_on_a_zurich_folder_then_eval(tmp_path, smoke, capsys, monkeypatch):
    """A Zurich RAW-to-RGB folder (detected): paired UOT trains on huawei_raw / canon pairs, selects
    on the proxy (Zurich has no val split), and eval scores every test image."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    from zurich_writer import write_zurich

    z = write_zurich(smoke, tmp_path / "z")
    out = tmp_path / "run"
    argv = ["train", "--data", str(z), "--out", str(out), "--mode", "paired", "--set", "epochs=1", "--device", "cpu"]
    assert main(argv) == 0
    rows = _history(out)
    assert len(rows) == 1 and 0 < float(rows[0]["proxy"]) < 10
    capsys.readouterr()
    csv_path = tmp_path / "m.csv"
    assert main(["eval", "--checkpoint", str(out / "best"), "--data", str(z), "--out", str(csv_path)]) == 0
    with open(csv_path, newline="") as fh:
        got = list(csv.DictReader(fh))
    n_test = len(list((z / "test" / "huawei_raw").glob("*.png")))
    assert [r["image"] for r in got] == [str(k) for k in range(n_test)]
    assert all(10 < float(r["psnr"]) < 60 for r in got)


# ------------------------------------------------------------------------------------- the command


def test_help_and_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"uotisp {uotisp_lib.__version__}"
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert text.splitlines()[2] == "Learn a camera ISP (packed RAW -> sRGB) with optimal transport, and use it."
    for cmd in ("synth", "stitch", "match", "train", "eval", "infer", "reproduce"):
        assert re.search(rf"^    {cmd}\b", text, re.M), cmd
    assert "One module per subcommand" not in text  # the developers' docstring stays out of it
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for opt in ("--trainer", "--mode", "--arch", "--data", "--out", "--profile", "--seed", "--device", "--set",
                "--config", "--pairs", "--fresh"):
        assert re.search(rf"^  {opt}\b.*\n?\s+\S", text, re.M), opt  # every option has help text
