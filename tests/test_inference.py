from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from uotisp_lib import io as uio
from uotisp_lib.cli import main
from uotisp_lib.config import get_profile
from uotisp_lib.data import build_benchmark
from uotisp_lib.data.layouts import scan_upisp
from uotisp_lib.inference import export_isp, load_isp, model_input, render, render_tiled
from uotisp_lib.models import build_isp
from uotisp_lib.preprocessing import PreprocessConfig


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return build_benchmark(tmp_path_factory.mktemp("b") / "smoke", get_profile("smoke").synth, seed=4)


def _perturbed(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_isp(arch)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("arch", ["colornet", "tinyraw"])
def test_export_load_round_trip(tmp_path, arch):
    model = _perturbed(arch)
    pre = PreprocessConfig(demosaic="bilinear", wb="gray_world")
    export_isp(tmp_path / "isp", model, arch, {}, pre, meta={"run": "test"})
    bundle = load_isp(tmp_path / "isp")
    assert bundle.arch == arch and bundle.meta == {"run": "test"} and bundle.preprocess == pre
    raw = torch.rand(2, 4, 8, 8)
    want = model.eval()(model_input(raw, model.input_kind, pre)).clamp(0, 1)
    torch.testing.assert_close(render(bundle, raw, batch=1), want)
    assert render(bundle, raw).shape == (2, 3, 16, 16)


def test_export_replaces_atomically_and_errors(tmp_path):
    export_isp(tmp_path / "isp", build_isp("tinyraw"), "tinyraw")
    export_isp(tmp_path / "isp", build_isp("tinyraw"), "tinyraw")  # replace an existing export
    assert sorted(p.name for p in tmp_path.iterdir()) == ["isp"]
    with pytest.raises(FileNotFoundError, match="not an exported ISP"):
        load_isp(tmp_path)
    with pytest.raises(ValueError, match="expected packed RAW"):
        render(load_isp(tmp_path / "isp"), torch.rand(1, 3, 4, 4))


def test_tiled_render_matches_whole_image_for_local_models(tmp_path):
    export_isp(tmp_path / "isp", _perturbed("colornet"), "colornet", {}, PreprocessConfig(demosaic="malvar"))
    bundle = load_isp(tmp_path / "isp")
    raw = torch.rand(1, 4, 40, 56)
    whole = render(bundle, raw)
    tiled = render_tiled(bundle, raw, tile=16, overlap=8)
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=0)


def test_cli_infer_patches_and_dng(tmp_path, bench):
    from dng_writer import PIDNG_CFA, write_dng

    export_isp(tmp_path / "isp", _perturbed("colornet"), "colornet", {}, PreprocessConfig())
    layout = scan_upisp(bench)
    src = tmp_path / "in"
    src.mkdir()
    for stem, p in layout.paths("val", "raws").items():
        shutil.copy(p, src / p.name)
    mosaic = np.random.default_rng(0).integers(0, 1024, size=(24, 30), dtype=np.uint16)
    write_dng(src / "shot.dng", mosaic, PIDNG_CFA["RGGB"], black=[0, 0, 0, 0])
    out = tmp_path / "out"
    assert main(["infer", "--checkpoint", str(tmp_path / "isp"), "--input", str(src), "--output", str(out), "--patches"]) == 0
    images = layout.images("val", "raws")
    for image_id, stems in images.items():
        full = uio.read_srgb(out / f"{image_id}.png")
        patches = [uio.read_srgb(out / "patches" / f"{s}.png") for s in stems]
        assert full.size == sum(p.size for p in patches)  # stitched from exactly its patches
        assert patches[0].shape[:2] == (2 * get_profile("smoke").synth.patch,) * 2
    assert uio.read_srgb(out / "shot.png").shape == (24, 30, 3)


def test_cli_infer_failure_writes_nothing(tmp_path, bench, capsys):
    export_isp(tmp_path / "isp", build_isp("colornet"), "colornet", {}, PreprocessConfig())
    layout = scan_upisp(bench)
    src = tmp_path / "in"
    src.mkdir()
    for p in layout.paths("test", "raws").values():
        shutil.copy(p, src / p.name)
    bad = sorted(src.glob("*.npy"))[-1]
    np.save(bad, np.full((4, 4, 4), 5000, np.uint16))
    out = tmp_path / "out"
    assert main(["infer", "--checkpoint", str(tmp_path / "isp"), "--input", str(src), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert bad.name in err and "10-bit range" in err
    assert not out.exists() or not any(out.iterdir())
    assert not list(tmp_path.glob(".out.tmp-*"))
