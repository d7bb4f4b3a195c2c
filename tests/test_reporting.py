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
