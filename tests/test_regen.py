"""compare_tables: the check that CI's regenerated smoke tables match the committed ones."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from uotisp_lib import reporting
from uotisp_lib.regen import Difference, compare_tables, flatten, format_differences, values_match

TABLE = pd.DataFrame({
    "method": ["ot", "knn", "random"],
    "psnr": [20.0, 18.5, 15.25],
    "max_in_degree": [1, 4, 2],
    "seconds": [0.5, 0.1, 0.2],
})
META = {"run": {"seed": 0, "results_dir": "/tmp/a", "profile": {"patch": 32}}, "versions": {"torch": "2.1"},
        "wall_seconds_notebook": 9.1, "study_wall_seconds": 5.7, "backends": {"gram": "vgg19"}}


def _write(folder, df=TABLE, meta=META, name="t"):
    reporting.write_table(df, folder, name, metadata=meta)
    return folder


def test_identical_tables_have_no_differences(tmp_path):
    a, b = _write(tmp_path / "a"), _write(tmp_path / "b")
    assert compare_tables(a, b) == []
    assert compare_tables(a / "tables", b / "tables") == []  # a tables folder works too
    assert format_differences([]) == "no differences"


def test_changed_cells_are_reported_with_table_row_column_and_both_values(tmp_path):
    a = _write(tmp_path / "a")
    changed = TABLE.copy()
    changed.loc[1, "psnr"] = 18.6  # relative change 5e-3 > rtol 1e-3
    changed.loc[2, "method"] = "uniform"
    changed.loc[0, "max_in_degree"] = 2
    b = _write(tmp_path / "b", changed)
    diffs = compare_tables(a, b)
    assert diffs == [
        Difference("t.csv", "0 (method=ot)", "max_in_degree", "1", "2"),
        Difference("t.csv", "1 (method=knn)", "psnr", "18.5", "18.6"),
        Difference("t.csv", "2 (method=random)", "method", "'random'", "'uniform'"),
    ]
    text = format_differences(diffs)
    assert text.splitlines()[0].startswith("3 difference(s)")
    assert "t.csv | 1 (method=knn) | psnr | 18.5 | 18.6" in text


def test_tolerance_is_respected(tmp_path):
    a = _write(tmp_path / "a")
    near = TABLE.copy()
    near["psnr"] = near["psnr"] * (1 + 5e-4)  # inside rtol=1e-3
    assert compare_tables(a, _write(tmp_path / "b", near)) == []
    assert len(compare_tables(a, tmp_path / "b", rtol=1e-4)) == 3  # every psnr cell beyond 1e-4
    assert values_match(0.0, 5e-7) and not values_match(0.0, 5e-6)  # atol=1e-6 near zero
    assert values_match(float("nan"), float("nan")) and not values_match(float("nan"), 0.0)


def test_timing_columns_and_nondeterministic_metadata_are_ignored(tmp_path):
    a = _write(tmp_path / "a")
    other = TABLE.copy()
    other["seconds"] = [9.0, 9.0, 9.0]
    meta = json.loads(json.dumps(META))
    meta["run"]["results_dir"] = "/tmp/b"
    meta["versions"]["torch"] = "2.9"
    meta["wall_seconds_notebook"] = 99.0
    meta["study_wall_seconds"] = 4.1  # the wall time of the executions that trained a study
    b = _write(tmp_path / "b", other, meta)
    assert compare_tables(a, b) == []
    # not ignored: every one of them is found
    found = {(d.table, d.column) for d in compare_tables(a, b, ignore_columns=())}
    assert found == {("t.csv", "seconds"), ("t.json", "run.results_dir"), ("t.json", "versions.torch"),
                     ("t.json", "wall_seconds_notebook"), ("t.json", "study_wall_seconds")}


def test_metadata_changes_are_reported_by_dotted_key(tmp_path):
    a = _write(tmp_path / "a")
    meta = json.loads(json.dumps(META))
    meta["run"]["profile"]["patch"] = 64
    meta["backends"] = {"gram": "efficientnet_lite0"}
    meta["new_key"] = 1
    diffs = compare_tables(a, _write(tmp_path / "b", meta=meta))
    assert [(d.column, d.committed, d.regenerated) for d in diffs] == [
        ("backends.gram", "'vgg19'", "'efficientnet_lite0'"),
        ("new_key", "(absent)", "1"),
        ("run.profile.patch", "32", "64"),
    ]
    assert flatten({"a": [1, {"b": 2}], "c": {}}) == {"a.0": 1, "a.1.b": 2, "c": {}}


def test_missing_and_extra_tables_and_shape_changes_are_reported(tmp_path):
    a = _write(tmp_path / "a")
    _write(a, name="only_committed")
    b = _write(tmp_path / "b", TABLE.iloc[:2].drop(columns="max_in_degree").assign(extra=1.0))
    _write(b, name="only_regenerated")
    diffs = compare_tables(a, b)
    by_table = {}
    for d in diffs:
        by_table.setdefault(d.table, []).append(d)
    assert {d.regenerated for d in by_table["only_committed.csv"]} == {"(missing: not regenerated)"}
    assert {d.committed for d in by_table["only_regenerated.md"]} == {"(missing: not committed)"}
    assert len(by_table["only_committed.json"]) == len(by_table["only_regenerated.json"]) == 1
    shape = [(d.row, d.column) for d in by_table["t.csv"]]
    assert shape == [("", "(columns)"), ("(rows)", "")]
    assert by_table["t.csv"][1].committed == "3" and by_table["t.csv"][1].regenerated == "2"
    with pytest.raises(FileNotFoundError, match="no tables folder"):
        compare_tables(a, tmp_path / "nowhere")
