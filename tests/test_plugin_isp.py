"""Plug-in ISPs (issue 11): ``register_isp``, ``--arch package.module:Class``, exports that record
the class's source, and the README's bring-your-own-network example run exactly as written."""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import uotisp_lib
from uotisp_lib.cli import main
from uotisp_lib.data.datasets import load_raw_patches, load_srgb_patches
from uotisp_lib.data.layouts import scan_upisp
from uotisp_lib.inference import export_isp, load_isp, render
from uotisp_lib.models import ISP_REGISTRY, build_isp, register_isp
from uotisp_lib.study import per_image_scores

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.xdist_group("cli_train")]

REPO = Path(uotisp_lib.__file__).resolve().parents[1]

REGISTERED = '''
import torch
from torch import nn

from uotisp_lib.models import register_isp


@register_isp("reg_scale", input_kind="rgb")
class Scale(nn.Module):
    def __init__(self, gain: float = 1.0):
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(float(gain)))

    def forward(self, rgb):
        return (self.gain * rgb).clamp(0, 1)
'''


def _readme_example() -> tuple[str, list[str]]:
    """The README's plug-in module (the python block under "Your own network") and its commands."""
    text = (REPO / "README.md").read_text()
    section = text.split("### Your own network", 1)[1]
    m = re.search(r"```python\n(.*?)```\n", section, re.S)
    shell = re.search(r"```\n(.*?)```", section[m.end():], re.S).group(1)
    module = m.group(1)
    return module, [line for line in shell.splitlines() if line.startswith("uotisp ")]


@pytest.fixture()
def forget(monkeypatch):
    """Names to drop from the registry and sys.modules after the test (they would leak otherwise)."""
    names: list[tuple[str, str]] = []
    yield names
    for reg, module in names:
        ISP_REGISTRY.pop(reg, None)
        sys.modules.pop(module, None)


def test_register_isp_builds_by_name_and_exports_rebuild_it_in_a_fresh_registry(tmp_path, monkeypatch, forget):
    (tmp_path / "regmod.py").write_text(REGISTERED)
    monkeypatch.syspath_prepend(str(tmp_path))
    forget.append(("reg_scale", "regmod"))
    import regmod  # noqa: F401  (registers reg_scale)

    model = build_isp("reg_scale", gain=0.5)
    assert model.input_kind == "rgb" and type(model).__module__ == "regmod"
    export_isp(tmp_path / "isp", model, "reg_scale", {"gain": 0.5})
    spec = json.loads((tmp_path / "isp" / "isp.json").read_text())
    assert (spec["arch"], spec["source"], spec["input_kind"]) == ("reg_scale", "regmod:Scale", "rgb")
    ISP_REGISTRY.pop("reg_scale")  # as in a new process: the name is unknown until its module is imported
    sys.modules.pop("regmod")
    bundle = load_isp(tmp_path / "isp")
    assert "reg_scale" in ISP_REGISTRY and float(bundle.model.gain.detach()) == 0.5
    # a registration that contradicts the class, or takes a used name, is refused
    with pytest.raises(ValueError, match=r"^register_isp\('x'\): input_kind must be one of \('packed', 'rgb'\), got 'raw'$"):
        register_isp("x", input_kind="raw")(type("N", (torch.nn.Module,), {}))
    with pytest.raises(ValueError, match=r"^register_isp\('x'\): Scale.input_kind is 'rgb', not 'packed'$"):
        register_isp("x", input_kind="packed")(ISP_REGISTRY["reg_scale"])
    with pytest.raises(ValueError, match=r"^register_isp: name 'tinyraw' is taken by uotisp_lib.models.isp:TinyRawNet$"):
        register_isp("tinyraw", input_kind="packed")(type("Other", (torch.nn.Module,), {}))
    assert "x" not in ISP_REGISTRY


def test_import_paths_that_are_not_isps_are_one_line_errors(tmp_path, monkeypatch, forget):
    (tmp_path / "notisp.py").write_text("from torch import nn\nclass Plain(nn.Module):\n    pass\nclass Thing:\n    input_kind = 'rgb'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    forget.append(("", "notisp"))
    for arch, want in {
        "notisp:Plain": "ISP class 'notisp:Plain': expected a class attribute input_kind of 'packed' or 'rgb', got None",
        "notisp:Thing": "ISP class 'notisp:Thing': expected a subclass of torch.nn.Module, got type",
        "notisp:Gone": "ISP class 'notisp:Gone' cannot be found: module 'notisp' has no 'Gone'",
    }.items():
        with pytest.raises(ValueError) as err:
            build_isp(arch)
        assert str(err.value) == want


def test_readme_example_trains_evaluates_and_renders_your_own_network(tmp_path, monkeypatch, forget, capsys):
    from uotisp_lib.config import get_profile
    from uotisp_lib.data import build_benchmark

    data = build_benchmark(tmp_path / "data", get_profile("smoke").synth, seed=3)
    module, commands = _readme_example()
    code = tmp_path / "code"
    code.mkdir()
    (code / "mynet.py").write_text(module)
    monkeypatch.syspath_prepend(str(code))
    forget.append(("", "mynet"))
    run = tmp_path / "run"
    argv = {c.split()[1]: shlex.split(c.replace("DATA", str(data)).replace("RUN", str(run)))[1:] for c in commands}
    assert set(argv) == {"train", "eval", "infer"}

    assert main(argv["train"]) == 0
    spec = json.loads((run / "export" / "isp.json").read_text())
    assert (spec["arch"], spec["source"], spec["arch_kwargs"]) == ("mynet:TinyISP", "mynet:TinyISP", {"width": 8})
    rows = list(csv.DictReader(open(run / "history.csv")))
    assert [(r["epoch"], r["step"]) for r in rows] == [("1", "3")]

    assert main(argv["eval"]) == 0
    got = list(csv.DictReader(open(run / "test_metrics.csv")))
    layout = scan_upisp(data)
    raw, gt = load_raw_patches(layout, "test"), load_srgb_patches(layout, "test", "gt")
    want = per_image_scores(render(load_isp(run / "export"), raw.images), gt.select(raw.stems), raw.stems)
    assert [r["image"] for r in got] == list(want.image) == ["s0010", "s0011"]
    for r, (_, w) in zip(got, want.iterrows()):
        assert [float(r[k]) for k in ("psnr", "ssim", "de2000")] == pytest.approx([w.psnr, w.ssim, w.de2000], rel=1e-5)

    # a fresh process renders it with the module on PYTHONPATH, as the README says ...
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(code), str(REPO)]), OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-m", "uotisp_lib.cli", *argv["infer"]], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert sorted(f.name for f in (run / "test_png").iterdir()) == ["s0010.png", "s0011.png"]
    # ... and without it, says which class it cannot find, in one line (exit 2)
    monkeypatch.setattr(sys, "path", [x for x in sys.path if x != str(code)])
    sys.modules.pop("mynet")
    capsys.readouterr()
    assert main(argv["eval"] + ["--overwrite"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"uotisp eval: error: {run / 'export' / 'isp.json'}: ISP class 'mynet:TinyISP' cannot be found: cannot import "
        "'mynet' (No module named 'mynet'); put its package on PYTHONPATH (or install it)")


def test_an_export_whose_class_is_gone_is_one_line_naming_it(tmp_path, capsys):
    from uotisp_lib import io as uio

    export_isp(tmp_path / "isp", build_isp("tinyraw"), "tinyraw")
    spec = json.loads((tmp_path / "isp" / "isp.json").read_text())
    (tmp_path / "isp" / "isp.json").write_text(json.dumps({**spec, "arch": "gonepkg.nets:Net"}))
    uio.save_raw(tmp_path / "in" / "a_0.npy", torch.zeros(8, 8, 4, dtype=torch.int32).numpy().astype("uint16"))
    argv = ["infer", "--checkpoint", str(tmp_path / "isp"), "--input", str(tmp_path / "in"), "--output", str(tmp_path / "o")]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        f"uotisp infer: error: {tmp_path / 'isp' / 'isp.json'}: ISP class 'gonepkg.nets:Net' cannot be found: cannot "
        "import 'gonepkg.nets' (No module named 'gonepkg'); put its package on PYTHONPATH (or install it)")
    assert not (tmp_path / "o").exists()


PLUGIN = '''
import torch
from torch import nn

from uotisp_lib.models import register_isp


@register_isp("gray_plugin", input_kind="packed")
class GrayISP(nn.Module):
    """Packed RAW [B,4,h,w] -> a grey sRGB image [B,3,2h,2w] (one luminance channel, repeated)."""

    def __init__(self, width: int = 4):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(4, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 4, 3, padding=1))
        self.up = nn.PixelShuffle(2)

    def forward(self, raw):
        return torch.sigmoid(self.up(self.body(raw))).repeat(1, 3, 1, 1)
'''


def test_plugin_option_makes_a_registered_name_trainable_and_a_fresh_process_rebuilds_it(tmp_path, monkeypatch, forget, capsys):
    from uotisp_lib.config import get_profile
    from uotisp_lib.data import build_benchmark

    data = build_benchmark(tmp_path / "data", get_profile("smoke").synth, seed=3)
    code = tmp_path / "code"
    code.mkdir()
    (code / "grayplug.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(code))
    forget.append(("gray_plugin", "grayplug"))
    run = tmp_path / "run"
    base = ["train", "--data", str(data), "--out", str(run), "--device", "cpu", "--set", "epochs=1"]
    # without --plugin the name is unknown: one line listing the known names (exit 2), nothing written
    assert "gray_plugin" not in ISP_REGISTRY
    capsys.readouterr()
    assert main(base + ["--arch", "gray_plugin"]) == 2
    assert capsys.readouterr().err.strip() == (
        "uotisp train: error: --arch gray_plugin: build_isp: unknown ISP 'gray_plugin'; expected one of "
        "['colornet', 'tinyraw', 'unet_isp'] or package.module:Class, or a name registered by a --plugin module "
        "(or an entry point of group uotisp.isps)")
    assert main(base + ["--plugin", "nosuchplug", "--arch", "gray_plugin"]) == 2
    assert capsys.readouterr().err.strip() == (
        "uotisp train: error: --plugin: plug-in 'nosuchplug' cannot be imported (No module named 'nosuchplug'); "
        "put its package on PYTHONPATH (or install it)")
    # a misspelt name after --plugin lists the plug-in's name too
    assert main(base + ["--plugin", "grayplug", "--arch", "grey_plugin"]) == 2
    assert "expected one of ['colornet', 'gray_plugin', 'tinyraw', 'unet_isp']" in capsys.readouterr().err
    assert not (run / "export").exists()

    assert main(base + ["--plugin", "grayplug", "--arch", "gray_plugin", "--set", "arch_kwargs={width=2}"]) == 0
    spec = json.loads((run / "export" / "isp.json").read_text())
    assert (spec["arch"], spec["source"], spec["input_kind"], spec["arch_kwargs"]) == (
        "gray_plugin", "grayplug:GrayISP", "packed", {"width": 2})
    assert [r["epoch"] for r in csv.DictReader(open(run / "history.csv"))] == ["1"]

    # fresh processes (no --plugin, an empty registry) rebuild the class from the recorded source
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(code), str(REPO)]), OMP_NUM_THREADS="1")
    cli = [sys.executable, "-m", "uotisp_lib.cli"]
    p = subprocess.run([*cli, "eval", "--checkpoint", str(run / "export"), "--data", str(data), "--out", str(run / "m.csv"),
                        "--device", "cpu"], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    rows = list(csv.DictReader(open(run / "m.csv")))
    assert [r["image"] for r in rows] == ["s0010", "s0011"] and all(float(r["psnr"]) > 0 for r in rows)
    p = subprocess.run([*cli, "infer", "--checkpoint", str(run / "export"), "--input", str(data / "test" / "raws"),
                        "--output", str(run / "png"), "--device", "cpu"], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert sorted(f.name for f in (run / "png").iterdir()) == ["s0010.png", "s0011.png"]


def test_entry_point_names_an_installed_plugin_class_or_module(tmp_path, monkeypatch, forget):
    from importlib.metadata import EntryPoint

    from uotisp_lib.models import registry

    (tmp_path / "epplug.py").write_text(PLUGIN.replace('@register_isp("gray_plugin", input_kind="packed")\n', "").replace(
        "    def __init__", '    input_kind = "packed"\n\n    def __init__'))
    (tmp_path / "epreg.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    forget.extend([("ep_gray", "epplug"), ("gray_plugin", "epreg")])
    eps = [EntryPoint("ep_gray", "epplug:GrayISP", registry.ENTRY_POINT_GROUP),  # a class: registered under its name
           EntryPoint("gray_plugin", "epreg", registry.ENTRY_POINT_GROUP),  # a module that registers the name
           EntryPoint("ep_broken", "epplug", registry.ENTRY_POINT_GROUP)]  # neither
    monkeypatch.setattr(registry, "_entry_points", lambda: eps)
    assert registry.entry_point_names() == ["ep_broken", "ep_gray", "gray_plugin"]
    assert build_isp("ep_gray").input_kind == "packed" and ISP_REGISTRY["ep_gray"].__module__ == "epplug"
    assert type(build_isp("gray_plugin", width=2)).__module__ == "epreg"
    # an export of the entry point's class is rebuilt through the entry point in a fresh registry
    export_isp(tmp_path / "isp", build_isp("ep_gray", width=3), "ep_gray", {"width": 3})
    ISP_REGISTRY.pop("ep_gray")
    sys.modules.pop("epplug")
    assert load_isp(tmp_path / "isp").model.body[0].out_channels == 3 and "ep_gray" in ISP_REGISTRY
    with pytest.raises(ValueError, match=r"^ISP 'ep_broken': entry point 'epplug' of group uotisp.isps neither is an ISP "
                                         r"class nor registers 'ep_broken'$"):
        build_isp("ep_broken")
    with pytest.raises(KeyError, match="unknown ISP 'ep_none'"):
        build_isp("ep_none")
