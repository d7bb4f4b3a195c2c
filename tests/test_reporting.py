from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import pytest

from uotisp_lib import reporting


def test_table_round_trip_and_markdown(tmp_path):
    df = pd.DataFrame({"method": ["ot", "knn"], "psnr": [22.5, 20.25]})
    paths = reporting.write_table(df, tmp_path / "smoke", "pairs", metadata={"seed": 1})
    assert sorted(paths) == ["csv", "json", "md"]
    pd.testing.assert_frame_equal(reporting.read_table(tmp_path / "smoke", "pairs"), df)
    md = paths["md"].read_text().splitlines()
    assert md[0].replace(" ", "") == "|method|psnr|" and "22.5" in md[2] and "20.25" in md[3]
    assert json.loads(paths["json"].read_text()) == {"seed": 1}
    assert not list((tmp_path / "smoke" / "tables").glob(".*.tmp"))


def test_bad_names_and_empty_tables_are_refused(tmp_path):
    with pytest.raises(ValueError, match="must match"):
        reporting.write_table(pd.DataFrame({"a": [1]}), tmp_path, "../escape")
    with pytest.raises(ValueError, match="is empty"):
        reporting.write_table(pd.DataFrame({"a": []}), tmp_path, "empty")
    with pytest.raises(FileNotFoundError, match="run the notebook that writes 'nothing'"):
        reporting.read_table(tmp_path, "nothing")


def test_figure_and_index(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    png = reporting.save_figure(fig, tmp_path / "cpu", "curve")
    plt.close(fig)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    reporting.write_table(pd.DataFrame({"x": [1]}), tmp_path / "cpu", "t1")
    index = reporting.write_index(tmp_path / "cpu")
    assert index == tmp_path / "cpu" / "README.md"
    text = index.read_text()
    assert "# Results: profile `cpu`" in text and "[t1.md](tables/t1.md)" in text
    assert "| 1 |" in text.replace("|   1 |", "| 1 |") and "[curve](figures/curve.png)" in text


def test_to_display_and_grid():
    import numpy as np
    import torch

    t = torch.zeros(3, 4, 5)
    t[0] = 2.0  # out of range: clipped for display
    arr = reporting.to_display(t)
    assert arr.shape == (4, 5, 3) and arr[..., 0].max() == 1.0
    assert reporting.to_display(torch.ones(1, 2, 2)).shape == (2, 2)
    u8 = np.full((2, 2, 3), 200, np.uint8)
    assert reporting.to_display(u8).dtype == np.uint8
    fig = reporting.image_grid([t, u8, torch.ones(1, 2, 2)], ["a", "b", "c"], ncols=2)
    assert len(fig.axes) == 4 and fig.axes[1].get_title() == "b"
    plt.close(fig)
    with pytest.raises(ValueError, match="at least one image"):
        reporting.image_grid([])


def test_table_without_markdown(tmp_path):
    import pandas as pd

    from uotisp_lib import reporting

    paths = reporting.write_table(pd.DataFrame({"a": [1, 2]}), tmp_path, "long", markdown=False)
    assert set(paths) == {"csv"} and not (tmp_path / "tables" / "long.md").exists()
    assert reporting.read_table(tmp_path, "long").a.tolist() == [1, 2]


def test_discuss_table_known_sentences():
    df = pd.DataFrame(
        {"pairing": ["random", "kNN", "OT"], "psnr": [16.0, 16.5, 18.0], "de2000": [15.0, 15.5, 12.0], "n": [4, 4, 4]}
    )
    text = reporting.discuss_table(
        df, {"psnr": "higher", "de2000": "lower", "n": "higher"}, label="pairing", baseline="random"
    )
    assert text.splitlines() == [
        "- **psnr** (higher is better): best `OT` (18), worst `random` (16), spread 2."
        " Against `random` (16): the best is +2, and 2 of 2 other rows beat it.",
        "- **de2000** (lower is better): best `OT` (12), worst `kNN` (15.5), spread 3.5."
        " Against `random` (15): the best is -3, and 1 of 2 other rows beat it.",
        "- **n** (higher is better): every row has 4.",
    ]


def test_discuss_table_index_labels_ties_nans_and_errors():
    df = pd.DataFrame({"acc": [1.0, 1.0, 0.5, float("nan")], "x": [float("nan")] * 4},
                      index=pd.Index(["a", "b", "c", "d"], name="method"))
    text = reporting.discuss_table(df, {"acc": "higher", "x": "lower"})
    assert text == "- **acc** (higher is better): best `a`, `b` (1), worst `c` (0.5), spread 0.5.\n- **x** (lower is better): no values.\n"
    many = pd.DataFrame({"v": [1, 1, 1, 1, 1, 0]}, index=list("abcdef"))
    assert reporting.discuss_table(many, {"v": "higher"}).startswith(
        "- **v** (higher is better): best `a`, `b`, `c` and 2 more (1), worst `f` (0), spread 1.")
    two = pd.DataFrame({"m": ["u", "u"], "k": ["raw", "rgb"], "v": [2.0, 1.0]})
    assert "best `u / raw` (2)" in reporting.discuss_table(two, {"v": "higher"}, label=["m", "k"])
    with pytest.raises(ValueError, match="exactly one row"):
        reporting.discuss_table(two, {"v": "higher"}, label="m", baseline="u")
    with pytest.raises(ValueError, match="'higher' or 'lower'"):
        reporting.discuss_table(two, {"v": "up"})
    with pytest.raises(KeyError, match="no column 'w'"):
        reporting.discuss_table(two, {"w": "higher"})


def test_backends_note_names_fallbacks():
    note = reporting.backends_note(
        {"cache": "off", "hist_y": "soft_hist_y64", "gram": "efficientnet_lite0", "backbone": "dinov2"}
    )
    assert note == (
        "Backends that ran: descriptor backbone **dinov2** (DINOv2 ViT-S/14, as in the paper); "
        "descriptor Gram features **efficientnet_lite0** (fallback: no local VGG19 weights); "
        "Y histogram **soft_hist_y64** (64 bins, as in the paper); cache **off**."
    )
    assert "**efficientnet_lite0** (offline fallback" in reporting.backends_note({"backbone": "efficientnet_lite0"})
    with pytest.raises(ValueError, match="no backends"):
        reporting.backends_note({})


def test_table_note_and_smoke_readme(tmp_path):
    df = pd.DataFrame({"x": [1]})
    paths = reporting.write_table(df, tmp_path / "smoke", "t", note="Backends that ran: none.")
    assert paths["md"].read_text().endswith("|\n\nBackends that ran: none.\n")
    text = reporting.write_index(tmp_path / "smoke").read_text()
    assert "check the plumbing, not the method" in text and "[results/cpu](../cpu/README.md)" in text
    assert "Backends that ran: none." in text
    reporting.write_table(df, tmp_path / "cpu", "t")
    assert "plumbing" not in reporting.write_index(tmp_path / "cpu").read_text()


def test_reproduce_says_smoke_checks_the_plumbing(tmp_path, monkeypatch, capsys):
    import functools

    import uotisp_lib.data
    from uotisp_lib.cli import reproduce
    from uotisp_lib.config import resolve_run

    ran = []
    monkeypatch.setattr(reproduce, "resolve_run", functools.partial(resolve_run, results_dir=tmp_path / "smoke"))
    monkeypatch.setattr(uotisp_lib.data, "ensure_dataset", lambda run: tmp_path / "data")
    monkeypatch.setattr(reproduce, "run_notebook", lambda nb, out, params: ran.append(nb.name))
    args = reproduce.add_parser(__import__("argparse").ArgumentParser().add_subparsers()).parse_args(["--only", "00"])
    reporting.write_table(pd.DataFrame({"x": [1]}), tmp_path / "smoke", "t")
    assert reproduce.run(args) == 0 and ran == ["00_data.ipynb"]
    out = capsys.readouterr().out
    assert "## t" in out and "NOTE (smoke profile): Smoke numbers check the plumbing, not the method" in out
    assert "`results/cpu`" in out


def test_discuss_data_summary():
    rows = pd.DataFrame([
        {"split": "train", "raw_images": 4, "raw_patches": 56, "jpeg_images": 4, "jpeg_patches": 42,
         "gt_images": 0, "gt_patches": 0, "raw_min": 0, "raw_max": 1023},
        {"split": "test", "raw_images": 2, "raw_patches": 28, "jpeg_images": 0, "jpeg_patches": 0,
         "gt_images": 2, "gt_patches": 28, "raw_min": 3, "raw_max": 900},
    ])
    assert reporting.discuss_data_summary(rows).splitlines() == [
        "- **train**: 4 RAW images (56 patches), 4 target JPEG images (42 patches).",
        "- **test**: 2 RAW images (28 patches), 2 ground-truth images (28 patches).",
        "- RAW codes span 0..1023: inside the 10-bit range 0..1023.",
    ]
    rows.loc[1, "raw_max"] = 4095
    assert "OUTSIDE the expected range 0..1023" in reporting.discuss_data_summary(rows)


def test_smoke_index_states_the_ci_tolerance_and_does_not_link_uncommitted_figures(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from uotisp_lib.regen import ATOL, RTOL

    fig = plt.figure()
    for prof in ("smoke", "cpu"):
        reporting.write_table(pd.DataFrame({"x": [1]}), tmp_path / prof, "t")
        reporting.save_figure(fig, tmp_path / prof, "f")
    plt.close(fig)
    smoke = reporting.write_index(tmp_path / "smoke").read_text()
    assert f"rtol = {RTOL:g}, atol = {ATOL:g}" in smoke and "`seconds`" in smoke and "make results-smoke" in smoke
    assert "they are not committed" in smoke and "f.png" not in smoke
    cpu = reporting.write_index(tmp_path / "cpu").read_text()
    assert "- [f](figures/f.png)" in cpu and "rtol" not in cpu
