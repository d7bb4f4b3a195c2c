"""``uotisp eval`` (issue 11): per-image scores with known answers, the proxy without ground truth,
atomic CSV output, and one-line refusals."""

from __future__ import annotations

import csv
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from uotisp_lib import io as uio
from uotisp_lib.cli import main
from uotisp_lib.inference import export_isp
from uotisp_lib.metrics import PSNR_CAP

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LEVEL = 128  # the model renders every pixel 128/255
GRAY = '''
import torch
from torch import nn


class Gray(nn.Module):
    """Packed RAW [B,4,h,w] -> a constant sRGB [B,3,2h,2w]."""

    input_kind = "packed"

    def __init__(self):
        super().__init__()
        self.level = nn.Parameter(torch.tensor(128.0) / 255.0)

    def forward(self, raw):
        b, _, h, w = raw.shape
        return self.level.expand(b, 3, 2 * h, 2 * w)
'''


@pytest.fixture()
def setup(tmp_path, monkeypatch):
    """An export of :data:`GRAY` and a folder whose test image ``a`` has ground truth 128 (the
    rendering itself) and ``b`` black; train/jpegs are gray 128 too."""
    (tmp_path / "graymod.py").write_text(GRAY)
    monkeypatch.syspath_prepend(str(tmp_path))
    import graymod

    export_isp(tmp_path / "isp", graymod.Gray(), "graymod:Gray")
    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    for image, value in (("a", LEVEL), ("b", 0)):
        for i in range(2):
            uio.save_raw(data / "test" / "raws" / f"{image}_{i}.npy", rng.integers(0, 1024, (8, 8, 4), dtype=np.uint16))
            uio.save_image(data / "test" / "gt" / f"{image}_{i}.png", np.full((16, 16, 3), value, np.uint8))
    for i in range(2):
        uio.save_image(data / "train" / "jpegs" / f"t_{i}.jpg", np.full((16, 16, 3), LEVEL, np.uint8), quality=95)
    yield tmp_path / "isp", data
    sys.modules.pop("graymod", None)


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _lab_l(v: float) -> float:
    """CIE L* of the sRGB gray ``v`` in [0,1]."""
    y = ((v + 0.055) / 1.055) ** 2.4 if v > 0.04045 else v / 12.92
    return 116 * y ** (1 / 3) - 16


def test_per_image_scores_match_known_answers(setup, tmp_path, capsys):
    isp, data = setup
    out = tmp_path / "m.csv"
    assert main(["eval", "--checkpoint", str(isp), "--data", str(data), "--out", str(out)]) == 0
    rows = _rows(out)
    assert list(rows[0]) == ["image", "psnr", "ssim", "de2000"] and [r["image"] for r in rows] == ["a", "b"]
    g = LEVEL / 255
    # a: the rendering is the ground truth. b: a constant g against black
    assert [float(rows[0][k]) for k in ("psnr", "ssim", "de2000")] == pytest.approx([PSNR_CAP, 1.0, 0.0], abs=1e-3)
    psnr_b = 20 * math.log10(1 / g)  # 5.99 dB
    ssim_b = 1e-4 / (g * g + 1e-4)  # luminance term only: C1 / (mu^2 + C1), K1 = 0.01
    l_star = _lab_l(g)  # 53.59; dE2000 of two grays is dL / S_L, S_L at the mean L*
    de_b = l_star / (1 + 0.015 * (l_star / 2 - 50) ** 2 / math.sqrt(20 + (l_star / 2 - 50) ** 2))
    assert float(rows[1]["psnr"]) == pytest.approx(psnr_b, abs=1e-4)
    assert float(rows[1]["ssim"]) == pytest.approx(ssim_b, rel=1e-3)
    assert float(rows[1]["de2000"]) == pytest.approx(de_b, abs=0.05)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (f"{isp} on 4 patches of 2 images in {data / 'test'}: PSNR {(PSNR_CAP + psnr_b) / 2:.2f} dB, "
                        f"SSIM {(1 + ssim_b) / 2:.4f}, dE2000 {de_b / 2:.2f} (means over images)")
    assert lines[1] == f"per-image rows: {out}"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".m.csv")]  # no temporary file left


def test_without_ground_truth_it_says_so_and_reports_the_proxy(setup, tmp_path, capsys):
    isp, data = setup
    shutil.rmtree(data / "test" / "gt")
    out = tmp_path / "p.csv"
    assert main(["eval", "--checkpoint", str(isp), "--data", str(data), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"metrics need ground truth: {data / 'test' / 'gt'} has no images; reporting the ground-truth-free proxy instead"
    assert lines[1].startswith(f"{isp} on 4 patches of 2 images in {data / 'test'}: proxy 0.0000 ")
    rows = _rows(out)
    assert [r["image"] for r in rows] == ["a", "b"] and list(rows[0]) == ["image", "proxy"]
    # the rendering and the targets are the same flat gray: equal moments and colour histograms
    assert [float(r["proxy"]) for r in rows] == pytest.approx([0.0, 0.0], abs=1e-6)
    shutil.rmtree(data / "train")
    assert main(["eval", "--checkpoint", str(isp), "--data", str(data), "--out", str(tmp_path / "q.csv")]) == 0
    assert capsys.readouterr().out.splitlines()[1] == f"no proxy either: {data / 'train' / 'jpegs'} has no target images to compare with"
    assert not (tmp_path / "q.csv").exists()


def test_bad_input_is_one_line_exit_2(setup, tmp_path, capsys):
    isp, data = setup
    (tmp_path / "old.csv").write_text("mine")
    (data / "test" / "gt" / "b_1.png").unlink()
    base = ["eval", "--checkpoint", str(isp), "--data", str(data)]
    cases = {
        ("--out", str(tmp_path / "old.csv")): f"--out {tmp_path / 'old.csv'}: file exists; expected a new file name (or --overwrite)",
        ("--out", str(tmp_path / "m.txt")): f"--out {tmp_path / 'm.txt'}: expected a .csv file name",
        ("--split", "val"): f"--data {data}: no val/raws; splits with RAW patches: test",
        ("--split", "holdout"): "--split holdout: expected one of train, val, dev, test",
        ("--batch", "0"): "--batch 0: expected an integer >= 1",
        (): f"{data / 'test' / 'gt'}: 1 RAW patches have no ground truth <stem>.png: [b_1]",
    }
    for extra, want in cases.items():
        assert main(base + list(extra)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"uotisp eval: error: {want}"], extra
    assert (tmp_path / "old.csv").read_text() == "mine"


def test_a_zurich_folder_is_detected_and_scored_per_image(setup, tmp_path, capsys):
    """A Zurich RAW-to-RGB folder (huawei_raw / canon): each file is one image; the constant-gray
    model against canon images of 128 and of 0 gives the known per-image PSNR."""
    isp, _ = setup
    z = tmp_path / "zurich"
    rng = np.random.default_rng(1)
    import imageio.v3 as iio

    (z / "test" / "huawei_raw").mkdir(parents=True)
    for k, value in enumerate((LEVEL, 0, LEVEL)):
        iio.imwrite(z / "test" / "huawei_raw" / f"{k}.png", rng.integers(0, 1024, (16, 16), dtype=np.uint16))
        uio.save_image(z / "test" / "canon" / f"{k}.jpg", np.full((16, 16, 3), value, np.uint8), quality=100)
    out = tmp_path / "z.csv"
    assert main(["eval", "--checkpoint", str(isp), "--data", str(z), "--out", str(out)]) == 0
    rows = _rows(out)
    assert [r["image"] for r in rows] == ["0", "1", "2"]
    psnr = [float(r["psnr"]) for r in rows]
    assert psnr[0] == pytest.approx(PSNR_CAP, abs=1e-3) and psnr[2] == pytest.approx(PSNR_CAP, abs=1e-3)
    assert psnr[1] == pytest.approx(20 * math.log10(255 / LEVEL), abs=1e-3)
