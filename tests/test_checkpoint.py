from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from uotisp_lib.checkpoint import EMA, TrainState, latest_checkpoint, load_checkpoint, load_weights, save_checkpoint


def _state(seed: int = 0) -> TrainState:
    torch.manual_seed(seed)
    model = nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    return TrainState(models={"map": model}, optimizers={"map": opt}, generators={"data": torch.Generator().manual_seed(5)})


def _train(state: TrainState, steps: int) -> None:
    model, opt = state.models["map"], state.optimizers["map"]
    for _ in range(steps):
        x = torch.randn(4, 3, generator=state.generators["data"]) + torch.rand(1)  # both RNG streams
        loss = (model(x) ** 2).mean() * (1 + 0 * np.random.rand() * random.random())  # draws from all streams
        opt.zero_grad()
        loss.backward()
        opt.step()
        state.step += 1
        state.history.append({"step": state.step, "loss": float(loss.detach())})


def test_resume_continues_exactly(tmp_path):
    torch.manual_seed(1)
    full = _state()
    _train(full, 6)

    torch.manual_seed(1)
    first = _state()
    _train(first, 3)
    save_checkpoint(tmp_path, first)
    _train(first, 2)  # work after the checkpoint is lost, as in a crash

    resumed = _state(seed=99)  # different init: everything must come from the checkpoint
    load_checkpoint(latest_checkpoint(tmp_path), resumed)
    assert resumed.step == 3 and len(resumed.history) == 3
    _train(resumed, 3)
    for a, b in zip(full.models["map"].parameters(), resumed.models["map"].parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]


def test_latest_pointer_and_keep(tmp_path):
    st = _state()
    assert latest_checkpoint(tmp_path) is None
    for step in (1, 2, 3):
        st.step = step
        save_checkpoint(tmp_path, st, keep=2)
    assert latest_checkpoint(tmp_path).name == "step-00000003"
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-00000002", "step-00000003"]
    assert not list(tmp_path.glob(".*tmp*"))
    (tmp_path / "step-00000003" / "state.pt").unlink()
    with pytest.raises(FileNotFoundError, match="missing or incomplete"):
        latest_checkpoint(tmp_path)


def test_failed_save_keeps_previous_checkpoint(tmp_path):
    st = _state()
    st.step = 1
    save_checkpoint(tmp_path, st)
    st.step = 2
    st.extra = {"bad": lambda: None}  # not picklable: torch.save fails mid-way
    with pytest.raises(Exception):
        save_checkpoint(tmp_path, st)
    assert latest_checkpoint(tmp_path).name == "step-00000001"
    assert not list(tmp_path.glob(".*tmp*")) and not (tmp_path / "step-00000002").exists()


def test_load_weights_errors_name_the_file(tmp_path):
    st = _state()
    save_checkpoint(tmp_path, st)
    with pytest.raises(KeyError, match="no tensors for model 'critic'"):
        load_weights(latest_checkpoint(tmp_path), {"critic": nn.Linear(3, 2)})
    with pytest.raises(FileNotFoundError, match="nope.safetensors: no such weights file"):
        load_weights(tmp_path / "nope.safetensors", {"map": nn.Linear(3, 2)})


def test_ema_known_value():
    m = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        m.weight.fill_(0.0)
    ema = EMA(m, decay=0.5)
    with torch.no_grad():
        m.weight.fill_(1.0)
    ema.update(m)
    ema.update(m)
    assert float(ema.model.weight) == pytest.approx(0.75)  # 0 -> 0.5 -> 0.75
    assert not ema.model.weight.requires_grad
    with pytest.raises(ValueError, match="decay"):
        EMA(m, decay=1.0)
    warm = EMA(m, decay=0.999, warmup=True)
    with torch.no_grad():
        warm.model.weight.fill_(0.0)
    warm.update(m)  # first decay: min(0.999, 1/10) = 0.1
    assert float(warm.model.weight) == pytest.approx(0.9) and int(warm.model.ema_updates) == 1


def test_load_latest_follows_the_pointer_and_falls_back_past_damaged_ones(tmp_path):
    from uotisp_lib.checkpoint import CheckpointError, load_latest_checkpoint

    st = _state()
    for step in (1, 2, 3):
        st.step = step
        save_checkpoint(tmp_path, st, keep=3)
    (tmp_path / "latest").write_text("step-00000002\n")  # e.g. a restarted run: step 3 is not its own
    fresh = _state(seed=1)
    assert load_latest_checkpoint(tmp_path, fresh).name == "step-00000002" and fresh.step == 2
    (tmp_path / "step-00000002" / "state.pt").write_bytes(b"PK")
    with pytest.warns(RuntimeWarning, match="step-00000002/state.pt: truncated or damaged"):
        assert load_latest_checkpoint(tmp_path, fresh).name == "step-00000001"
    assert fresh.step == 1
    (tmp_path / "step-00000001" / "weights.safetensors").unlink()
    with pytest.raises(CheckpointError, match="step-00000001/weights.safetensors: missing"):
        load_latest_checkpoint(tmp_path, fresh)
    assert load_latest_checkpoint(tmp_path / "none", fresh) is None
