"""TensorBoard event files of a training run (issue 11): the per-epoch history of ``history.csv``
as scalars in ``run_dir/tb``, each epoch once, also across an interruption and a resume."""

from __future__ import annotations

import csv
import dataclasses
import sys
import warnings

import pytest

from test_train_uot import CFG, _data
from uotisp_lib import train as train_mod
from uotisp_lib.train import TB_DIR, UOTTrainer

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

CFG3 = dataclasses.replace(CFG, epochs=3)


def _history(run_dir) -> list[dict[str, float]]:
    with open(run_dir / "history.csv", newline="") as fh:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(fh)]


def _scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(run_dir / TB_DIR), size_guidance={"scalars": 0})  # 0: keep every point
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _assert_matches_history(run_dir, epochs: int) -> None:
    hist, scalars = _history(run_dir), _scalars(run_dir)
    assert [int(r["epoch"]) for r in hist] == list(range(1, epochs + 1))
    keys = {k for r in hist for k in r}
    assert set(scalars) == keys
    assert {"epoch", "step", "seconds", "map/cost", "r1", "val_psnr", "proxy"} <= keys
    for tag, points in scalars.items():
        want = [(int(r["step"]), r[tag]) for r in hist if tag in r]
        assert [s for s, _ in points] == [s for s, _ in want], tag  # each epoch once, at its global step
        # float32 in the event file against the CSV's repr of the float64
        assert [v for _, v in points] == pytest.approx([v for _, v in want], rel=1e-6, abs=1e-6), tag


def test_event_files_hold_the_history_of_each_epoch(tmp_path):
    raw, gt, tgt = _data()
    UOTTrainer(CFG3, raw, tgt, tmp_path, val=(raw, gt), proxy_targets=tgt.images).fit()
    assert list((tmp_path / TB_DIR).glob("events.out.tfevents.*"))
    _assert_matches_history(tmp_path, 3)
    # the step of each epoch is the global optimiser step (2 steps per epoch here)
    assert [s for s, _ in _scalars(tmp_path)["epoch"]] == [2, 4, 6]


def test_interrupted_then_resumed_run_has_each_epoch_once(tmp_path):
    raw, gt, tgt = _data()
    make = lambda: UOTTrainer(CFG3, raw, tgt, tmp_path, val=(raw, gt), proxy_targets=tgt.images)  # noqa: E731
    make().fit(stop_after_epochs=1)
    _assert_matches_history(tmp_path, 1)
    make().fit(stop_after_epochs=1)
    make().fit()
    assert len(list((tmp_path / TB_DIR).glob("events.out.tfevents.*"))) == 3  # one file per process run
    _assert_matches_history(tmp_path, 3)
    make().fit()  # a finished run reused: nothing written
    assert len(list((tmp_path / TB_DIR).glob("events.out.tfevents.*"))) == 3
    _assert_matches_history(tmp_path, 3)


def test_points_of_a_killed_run_past_its_checkpoint_are_purged(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    raw, gt, tgt = _data()
    make = lambda: UOTTrainer(CFG3, raw, tgt, tmp_path, val=(raw, gt), proxy_targets=tgt.images)  # noqa: E731
    make().fit(stop_after_epochs=1)
    # a process killed after writing epoch 2's scalars, before its checkpoint
    with SummaryWriter(str(tmp_path / TB_DIR)) as w:
        for tag in ("epoch", "map/cost"):
            w.add_scalar(tag, -1.0, global_step=4)
    make().fit()
    _assert_matches_history(tmp_path, 3)


def test_a_restart_from_scratch_hides_the_old_points(tmp_path):
    raw, gt, tgt = _data()
    cfg = dataclasses.replace(CFG, epochs=1)
    UOTTrainer(CFG3, raw, tgt, tmp_path, val=(raw, gt), proxy_targets=tgt.images).fit()
    UOTTrainer(cfg, raw, tgt, tmp_path, val=(raw, gt), proxy_targets=tgt.images).fit(resume=False)
    _assert_matches_history(tmp_path, 1)


def test_training_without_tensorboard_says_so_once(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    monkeypatch.setattr(train_mod, "_no_tensorboard_said", False)
    raw, gt, tgt = _data(n=4)
    said: list[str] = []
    cfg = dataclasses.replace(CFG, epochs=2)
    UOTTrainer(cfg, raw, tgt, tmp_path / "a").fit(log=said.append)
    UOTTrainer(cfg, raw, tgt, tmp_path / "b").fit(log=said.append)
    assert said == [train_mod._NO_TENSORBOARD] and "\n" not in said[0]
    assert len(_history(tmp_path / "a")) == 2 and not (tmp_path / "a" / TB_DIR).exists()
    # without a log, a warning (still once per process)
    monkeypatch.setattr(train_mod, "_no_tensorboard_said", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        UOTTrainer(cfg, raw, tgt, tmp_path / "c").fit()
        UOTTrainer(cfg, raw, tgt, tmp_path / "d").fit()
    assert [str(w.message) for w in caught if "tensorboard" in str(w.message)] == [train_mod._NO_TENSORBOARD]
