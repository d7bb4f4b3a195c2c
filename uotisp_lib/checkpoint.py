"""Atomic checkpoints that a training run resumes from exactly.

A checkpoint is a folder ``<root>/step-<NNNNNNNN>/`` holding

- ``weights.safetensors``: every model's tensors (``<model name>.<param>``), loadable without
  pickle by anyone (``safetensors.torch.load_file``);
- ``state.pt``: what resuming needs besides weights: optimiser and scheduler states, the step, the
  RNG states (Python, NumPy, torch CPU and CUDA, named ``torch.Generator`` objects), the history
  of logged values and any extra JSON-able state;
- ``meta.json``: the step and a human-readable summary.

The folder is written under a temporary name and renamed into place, then ``<root>/latest``
(a one-line text file) is replaced atomically; a crash at any point leaves the previous
checkpoint as ``latest``. Older checkpoints beyond ``keep`` are removed after the switch.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from uotisp_lib.io import atomic_write_text

LATEST = "latest"


def rng_state(generators: Mapping[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Capture every random state a run depends on."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "generators": {k: g.get_state() for k, g in (generators or {}).items()},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any], generators: Mapping[str, torch.Generator] | None = None) -> None:
    """Restore what :func:`rng_state` captured (generators matched by name)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, g in (generators or {}).items():
        if name not in state["generators"]:
            raise KeyError(f"checkpoint has no state for generator {name!r} (has {sorted(state['generators'])})")
        g.set_state(state["generators"][name])


@dataclass
class TrainState:
    """Everything a trainer saves: models, optimisers (and schedulers), step, history, extra."""

    models: dict[str, nn.Module]
    optimizers: dict[str, Any] = field(default_factory=dict)  # anything with state_dict/load_state_dict
    generators: dict[str, torch.Generator] = field(default_factory=dict)
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def _step_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:08d}"


def save_checkpoint(root: str | Path, state: TrainState, keep: int = 2) -> Path:
    """Write ``state`` as ``<root>/step-<step>/`` atomically and point ``<root>/latest`` at it."""
    from safetensors.torch import save_file

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = _step_dir(root, state.step)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=root))
    try:
        tensors = {
            f"{name}.{k}": v.detach().cpu().contiguous()
            for name, model in state.models.items()
            for k, v in model.state_dict().items()
        }
        save_file(tensors, str(tmp / "weights.safetensors"))
        torch.save(
            {
                "step": state.step,
                "optimizers": {k: o.state_dict() for k, o in state.optimizers.items()},
                "rng": rng_state(state.generators),
                "history": state.history,
                "extra": state.extra,
            },
            tmp / "state.pt",
        )
        meta = {"step": state.step, "models": sorted(state.models), "n_history": len(state.history)}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(root / LATEST, final.name + "\n")
    steps = sorted(p for p in root.glob("step-*") if p.is_dir() and p != final)
    for old in steps[: max(0, len(steps) - (keep - 1))]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(root: str | Path) -> Path | None:
    """The folder ``<root>/latest`` points at, or None when there is no checkpoint yet."""
    root = Path(root)
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    path = root / pointer.read_text().strip()
    if not (path / "weights.safetensors").is_file() or not (path / "state.pt").is_file():
        raise FileNotFoundError(f"{pointer}: points at {path.name}, which is missing or incomplete")
    return path


def load_weights(path: str | Path, models: Mapping[str, nn.Module], strict: bool = True) -> None:
    """Load ``weights.safetensors`` of a checkpoint folder (or the file itself) into ``models``."""
    from safetensors.torch import load_file

    path = Path(path)
    file = path / "weights.safetensors" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no such weights file; expected a checkpoint folder or .safetensors")
    tensors = load_file(str(file))
    for name, model in models.items():
        prefix = f"{name}."
        sub = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        if not sub:
            raise KeyError(f"{file}: no tensors for model {name!r} (prefixes: {sorted({k.split('.')[0] for k in tensors})})")
        model.load_state_dict(sub, strict=strict)


def load_checkpoint(path: str | Path, state: TrainState) -> TrainState:
    """Restore ``state`` in place from a checkpoint folder (weights, optimisers, RNG, step, history)."""
    path = Path(path)
    load_weights(path, state.models)
    saved = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
    for k, opt in state.optimizers.items():
        if k not in saved["optimizers"]:
            raise KeyError(f"{path}: no state for optimiser {k!r}")
        opt.load_state_dict(saved["optimizers"][k])
    set_rng_state(saved["rng"], state.generators)
    state.step = int(saved["step"])
    state.history = list(saved["history"])
    state.extra = dict(saved["extra"])
    return state


class EMA:
    """Exponential moving average of a model's floating-point tensors (Polyak averaging).

    ``shadow = d * shadow + (1 - d) * param`` after each :meth:`update`; :attr:`model` is a frozen
    copy holding the averages, used for evaluation (UOTM and the EGUOT prototype use 0.999). With
    ``warmup`` the decay of the n-th update is ``d = min(decay, (1 + n) / (10 + n))`` (TensorFlow's
    ``ExponentialMovingAverage`` with ``num_updates``), so short runs are not evaluated at their
    initialisation; a number ``c > 1`` for ``warmup`` replaces the 10: the average then spans about
    the last ``n / (c - 1)`` of ``n`` updates while ``decay`` does not bind (``c = 3``: the last half). The update count lives in a buffer of :attr:`model`, so it is checkpointed.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool | float = False) -> None:
        import copy

        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        if warmup is not False and not (warmup is True or float(warmup) > 1.0):
            raise ValueError(f"EMA warmup must be a bool or a number > 1, got {warmup!r}")
        self.decay = decay
        # warmup constant c of d = min(decay, (1 + n) / (c + n)); True is TensorFlow's c = 10
        self.warmup = 10.0 if warmup is True else (float(warmup) if warmup else 0.0)
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.model.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        n = int(self.model.ema_updates)
        d = min(self.decay, (1.0 + n) / (self.warmup + n)) if self.warmup else self.decay
        src = model.state_dict()
        for k, v in self.model.state_dict().items():
            if k == "ema_updates":
                continue
            if v.is_floating_point():
                v.mul_(d).add_(src[k].detach(), alpha=1.0 - d)
            else:
                v.copy_(src[k])
        self.model.ema_updates += 1
