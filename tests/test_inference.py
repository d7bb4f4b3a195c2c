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


def _perturbed(arch: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_isp(arch, **kwargs)
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


@pytest.mark.parametrize("arch,kwargs", [("colornet", {}), ("colornet", {"head": "lut3d"}), ("tinyraw", {}), ("unet_isp", {})])
def test_render_channels_last_equals_the_nchw_forward(tmp_path, arch, kwargs):
    """render (channels_last weights and inputs, inference mode) == the plain NCHW forward pass."""
    model = _perturbed(arch, **kwargs)
    pre = PreprocessConfig(demosaic="malvar")
    export_isp(tmp_path / "isp", model, arch, kwargs, pre)
    bundle = load_isp(tmp_path / "isp")
    conv = next(m for m in bundle.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and conv.weight.shape[1] > 1
    raw = torch.rand(3, 4, 30, 34, generator=torch.Generator().manual_seed(1))
    ref = build_isp(arch, **kwargs).eval()
    ref.load_state_dict(model.state_dict())
    with torch.no_grad():
        want = ref(model_input(raw, ref.input_kind, pre)).clamp(0, 1)
    got = render(bundle, raw, batch=2)
    assert got.shape == want.shape and got.is_contiguous() and not got.is_inference()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=2e-6)
    assert float(got.std()) > 0.01  # a real image, not a constant


def test_cli_infer_files_equal_the_nchw_rendering(tmp_path, bench):
    """`uotisp infer` writes the images of the NCHW forward pass (8-bit codes equal)."""
    from uotisp_lib.stitching import infer_grid, stitch

    model = _perturbed("colornet")
    export_isp(tmp_path / "isp", model, "colornet", {}, PreprocessConfig())
    src = tmp_path / "in"
    src.mkdir()
    layout = scan_upisp(bench)
    for p in layout.paths("val", "raws").values():
        shutil.copy(p, src / p.name)
    out = tmp_path / "out"
    assert main(["infer", "--checkpoint", str(tmp_path / "isp"), "--input", str(src), "--output", str(out), "--threads", "1"]) == 0
    model.eval()
    n_px = n_same = 0
    for image_id, stems in layout.images("val", "raws").items():
        raw = torch.from_numpy(uio.load_raw_batch([src / f"{s}.npy" for s in stems]).astype(np.float32) / uio.RAW_MAX)
        raw = raw.permute(0, 3, 1, 2).contiguous()
        with torch.no_grad():
            rgb = model(model_input(raw, "rgb", PreprocessConfig())).clamp(0, 1)
        grid = infer_grid(raw, kind="raw")
        want = (stitch(rgb, grid.rows, grid.cols).clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        got = uio.read_srgb(out / f"{image_id}.png")
        assert got.shape == want.shape
        diff = np.abs(got.astype(int) - want.astype(int))
        assert diff.max() <= 1  # float rounding may move a value across a .5 code boundary
        n_px, n_same = n_px + diff.size, n_same + int((diff == 0).sum())
    assert n_px > 0 and n_same / n_px > 0.999, n_same / n_px
