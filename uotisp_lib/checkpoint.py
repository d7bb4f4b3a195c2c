"""Atomic checkpoints that a training run resumes from exactly.

A checkpoint is a folder ``<root>/step-<NNNNNNNN>/`` holding

- ``weights.safetensors``: every model's tensors (``<model name>.<param>``), loadable without
  pickle by anyone (``safetensors.torch.load_file``);
- ``state.pt``: what resuming needs besides weights: optimiser and scheduler states, the step, the
  RNG states (Python, NumPy, torch CPU and CUDA, named ``torch.Generator`` objects), the history
  of logged values, any extra JSON-able state and, only when the run has them (``--amp fp16``),
  the ``GradScaler`` states (loss scale, growth tracker) under ``scalers``;
- ``meta.json``: the step and a human-readable summary.

The folder is written under a temporary name and renamed into place, then ``<root>/latest``
(a one-line text file) is replaced atomically; a crash at any point leaves the previous
checkpoint as ``latest``. Older checkpoints beyond ``keep`` are removed after the switch.
``meta.json`` records the SHA-256 of both files: :func:`load_latest_checkpoint` verifies them and
falls back to the newest intact checkpoint (naming the bad file) when one was truncated or damaged.

:func:`run_lock` gives one process at a time a run folder (``fcntl.flock`` on ``<run>/.lock``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import random
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from uotisp_lib.io import apply_umask, atomic_write_text, clean_stale_temps, make_temp_dir

LATEST = "latest"
LOCK = ".lock"


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated or damaged; the message names the file."""


class RunLockedError(RuntimeError):
    """Another process holds the run folder; the message names its PID."""


@contextlib.contextmanager
def run_lock(run_dir: str | Path):
    """Hold ``<run_dir>/.lock`` exclusively (``fcntl.flock``, released by the kernel if the process
    dies) for the duration of the block; raise :class:`RunLockedError` naming the holder's PID."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise RunLockedError(
            f"{run_dir}: run folder in use by another training (PID {holder}); wait for it or use another run folder"
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.ftruncate(fd, 0)
        os.close(fd)  # releases the lock


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
    #: ``torch.amp.GradScaler`` objects by optimiser name (fp16 only; empty: nothing is saved for them)
    scalers: dict[str, Any] = field(default_factory=dict)
    #: set by loading: the scalers the checkpoint held no state for (they start fresh)
    fresh_scalers: list[str] = field(default_factory=list)


#: the files of a checkpoint folder whose SHA-256 meta.json records
FILES = ("weights.safetensors", "state.pt")


def _step_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:08d}"


def save_checkpoint(root: str | Path, state: TrainState, keep: int = 2) -> Path:
    """Write ``state`` as ``<root>/step-<step>/`` atomically and point ``<root>/latest`` at it."""
    from safetensors.torch import save_file

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(root)
    final = _step_dir(root, state.step)
    tmp = make_temp_dir(final)
    try:
        tensors = {
            f"{name}.{k}": v.detach().cpu().contiguous()
            for name, model in state.models.items()
            for k, v in model.state_dict().items()
        }
        save_file(tensors, str(tmp / "weights.safetensors"))
        saved = {
            "step": state.step,
            "optimizers": {k: o.state_dict() for k, o in state.optimizers.items()},
            "rng": rng_state(state.generators),
            "history": state.history,
            "extra": state.extra,
        }
        if state.scalers:  # only then: without them state.pt is what it always was
            saved["scalers"] = {k: s.state_dict() for k, s in state.scalers.items()}
        torch.save(saved, tmp / "state.pt")
        meta = {
            "step": state.step,
            "models": sorted(state.models),
            "n_history": len(state.history),
            "sha256": {f: _sha256(tmp / f) for f in FILES},
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        apply_umask(tmp)  # safetensors writes 0600
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
    _load_tensors(file, load_file(str(file)), models, strict)


def _load_tensors(file: Path, tensors: Mapping[str, torch.Tensor], models: Mapping[str, nn.Module], strict: bool = True) -> None:
    """Load ``<model name>.<param>`` tensors read from ``file`` into ``models``."""
    for name, model in models.items():
        prefix = f"{name}."
        sub = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        if not sub:
            raise KeyError(f"{file}: no tensors for model {name!r} (prefixes: {sorted({k.split('.')[0] for k in tensors})})")
        model.load_state_dict(sub, strict=strict)


def _sha256(file: Path) -> str:
    h = hashlib.sha256()
    with open(file, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(tensors, state)`` of a checkpoint folder, verified against the SHA-256 in ``meta.json``
    (when recorded) and fully read; :class:`CheckpointError` names the bad file otherwise."""
    from safetensors.torch import load_file

    path = Path(path)
    for f in FILES:
        if not (path / f).is_file():
            raise CheckpointError(f"{path / f}: missing; expected a complete checkpoint folder")
    try:
        sums = json.loads((path / "meta.json").read_text()).get("sha256", {})
    except (OSError, ValueError):
        sums = {}
    for f, digest in sums.items():
        if _sha256(path / f) != digest:
            raise CheckpointError(f"{path / f}: truncated or damaged (SHA-256 differs from meta.json)")
    try:
        tensors = load_file(str(path / "weights.safetensors"))
    except Exception as err:  # SafetensorError and friends
        raise CheckpointError(f"{path / 'weights.safetensors'}: unreadable ({_one_line(err)})") from err
    try:
        saved = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
    except Exception as err:  # truncated zip, unpickling errors
        raise CheckpointError(f"{path / 'state.pt'}: unreadable ({_one_line(err)})") from err
    return tensors, saved


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def load_latest_checkpoint(root: str | Path, state: TrainState) -> Path | None:
    """Restore ``state`` from the newest intact checkpoint under ``root`` (None: there is none yet):
    the one ``latest`` names, else the next older one.

    A damaged newer checkpoint is skipped with a warning naming its bad file; if none is intact,
    :class:`CheckpointError` lists why."""
    root = Path(root)
    candidates = sorted((p for p in root.glob("step-*") if p.is_dir()), reverse=True)
    pointer = root / LATEST
    if pointer.is_file():  # what latest names, then older ones (newer ones are not from this run's chain)
        named = root / pointer.read_text().strip()
        candidates = [named] + [p for p in candidates if p.name < named.name]
    problems = []
    for path in candidates:
        try:
            tensors, saved = read_checkpoint(path)
        except CheckpointError as err:
            problems.append(str(err))
            continue
        for msg in problems:
            warnings.warn(f"{msg}; resuming from {path.name} instead", RuntimeWarning, stacklevel=2)
        _apply(path, tensors, saved, state)
        return path
    if problems:
        raise CheckpointError(f"{root}: no intact checkpoint to resume from: " + "; ".join(problems))
    return None


def load_checkpoint(path: str | Path, state: TrainState) -> TrainState:
    """Restore ``state`` in place from a checkpoint folder (weights, optimisers, RNG, step, history,
    and the GradScalers of ``state.scalers`` that the checkpoint holds: the others start fresh and
    are listed in ``state.fresh_scalers``)."""
    path = Path(path)
    return _apply(path, *read_checkpoint(path), state)


def _apply(path: Path, tensors: dict[str, torch.Tensor], saved: dict[str, Any], state: TrainState) -> TrainState:
    """Load what :func:`read_checkpoint` returned into ``state``."""
    _load_tensors(path / "weights.safetensors", tensors, state.models)
    for k, opt in state.optimizers.items():
        if k not in saved["optimizers"]:
            raise KeyError(f"{path}: no state for optimiser {k!r}")
        opt.load_state_dict(saved["optimizers"][k])
    set_rng_state(saved["rng"], state.generators)
    held = saved.get("scalers", {})  # absent: saved without fp16, or before scalers were saved
    for k, scaler in state.scalers.items():
        if k in held:
            scaler.load_state_dict(held[k])
    state.fresh_scalers = sorted(k for k in state.scalers if k not in held)
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
