"""Training an ISP on pseudo-pairs in two stages (Borelli), or on true pairs (upper bound).

Semantic Pseudo-Pairing (Borelli Image, NTIRE 2026 unpaired ISP challenge, arXiv 2605.07495): each
source patch (the pseudo-RGB of a RAW patch, or the packed RAW for networks that take it) is paired,
at every step, with one target sRGB patch drawn from its pseudo-pair distribution; the network is
trained with statistic losses that need no pixel alignment (moments, soft Y / UV histograms, Gram,
TV). Stage 1 runs without a GAN; stage 2 lowers the moment and TV weights and adds a low-weight
hinge GAN against a spectral-norm U-Net discriminator (:data:`uotisp_lib.losses.BORELLI_WEIGHTS`).
AdamW (weight decay 1e-4), lr 1e-4 (discriminator 2e-5), batch 24 in the paper.

The same loop trains the baselines: pairing by kNN or uniformly at random (only the pair sampler
changes), and a paired upper bound (the true ground truth of each source, L1 + SSIM loss).

Every epoch ends with validation metrics (when ground truth exists), a ground-truth-free early-
stopping proxy (also without any ground truth), the export of the best epoch so far (selected on
the validation PSNR, else on the proxy), an atomic checkpoint (resume continues exactly: weights,
optimisers, step and every RNG), the history so far as ``history.csv`` and an export of the
current map (:func:`uotisp_lib.inference.export_isp`). The same per-epoch history goes to
TensorBoard event files in ``run_dir/tb`` (:class:`EventLog`; skipped, said once, without
tensorboard installed).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from uotisp_lib import distributed, losses, metrics, uot
from uotisp_lib.config import config_dict
from uotisp_lib.checkpoint import TrainState, load_latest_checkpoint, run_lock, save_checkpoint
from uotisp_lib.data.datasets import PatchSet
from uotisp_lib.inference import export_isp, export_step
from uotisp_lib.models import UNetDiscriminatorSN, build_isp
from uotisp_lib.preprocessing import PreprocessConfig
from uotisp_lib.stats import channel_moments, soft_histogram_uv
from uotisp_lib.uot import UOTConfig

#: source stems + generator -> one target stem per source (a pair sampler, or identity when paired)
PairFn = Callable[[Sequence[str], torch.Generator], list[str]]


@dataclass(frozen=True)
class PseudoPairConfig:
    """Hyper-parameters of :class:`PseudoPairTrainer` (defaults: Borelli's)."""

    arch: str = "colornet"
    arch_kwargs: tuple[tuple[str, object], ...] = ()
    paired: bool = False  # True: L1 + SSIM to the true pair (upper bound), no statistic losses
    stage1_epochs: int = 10
    stage2_epochs: int = 5
    batch_size: int = 24
    lr: float = 1e-4
    weight_decay: float = 1e-4
    d_lr: float = 2e-5
    d_width: int = 64  # UNetDiscriminatorSN num_feat (64: about 4.4M parameters)
    ssim_weight: float = 1.0  # paired mode: L1 + ssim_weight * (1 - SSIM)
    crop: int | None = None  # random square crops of this many output pixels (None: whole patches)
    seed: int = 0

    @property
    def epochs(self) -> int:
        return self.stage1_epochs + self.stage2_epochs


def aligned_crops(tensors: Sequence[tuple[torch.Tensor, int]], size: int, gen: torch.Generator) -> list[torch.Tensor]:
    """Per-image random crops of ``size`` output pixels, aligned across tensors of different
    resolutions: each ``(t, scale)`` is ``[B,C,H/scale,W/scale]`` (``scale`` 2 for packed RAW next to
    sRGB) and gets ``size // scale`` pixels at the same place. Positions come from ``gen`` and are
    multiples of the largest scale."""
    if not tensors:
        raise ValueError("aligned_crops: nothing to crop")
    step = max(s for _, s in tensors)
    if size % step:
        raise ValueError(f"aligned_crops: size {size} must be a multiple of the scale {step}")
    t0, s0 = tensors[0]
    h, w = t0.shape[-2] * s0, t0.shape[-1] * s0
    if size > min(h, w):
        raise ValueError(f"aligned_crops: crop {size} exceeds the patch size {h}x{w}")
    n = t0.shape[0]
    top = (torch.randint(0, (h - size) // step + 1, (n,), generator=gen) * step).tolist()
    left = (torch.randint(0, (w - size) // step + 1, (n,), generator=gen) * step).tolist()
    out = []
    for t, s in tensors:
        c = size // s
        out.append(torch.stack([t[i, :, a // s : a // s + c, b // s : b // s + c] for i, (a, b) in enumerate(zip(top, left))]))
    return out


def random_crops(x: torch.Tensor, size: int, gen: torch.Generator, scale: int = 1, y: torch.Tensor | None = None):
    """Random crops of ``x`` (at ``1/scale`` of the output resolution) and, if given, the aligned
    crops of ``y`` (output resolution); see :func:`aligned_crops`. Returns ``(x_crop, y_crop)``."""
    if y is None:
        return aligned_crops([(x, scale)], size, gen)[0], None
    xs, ys = aligned_crops([(x, scale), (y, 1)], size, gen)
    return xs, ys


def set_colour_stats(images, chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(mean channel means, mean channel stds, mean UV histogram)`` of a set of images read
    ``chunk`` rows at a time (a tensor, or the lazy ``images`` of a streamed set): what
    :func:`colour_distance` compares, without holding the whole set (sums in float64)."""
    n, sums = len(images), None
    for i in range(0, n, chunk):
        y = images[i : i + chunk]
        m, s = channel_moments(y)
        parts = (m.double().sum(0), s.double().sum(0), soft_histogram_uv(y).double().sum(0))
        sums = parts if sums is None else tuple(a + b for a, b in zip(sums, parts))
    return tuple((v / n).float() for v in sums)


def colour_distance(a: torch.Tensor, b) -> float:
    """Set-level colour-statistics distance between image batches ``[N,3,H,W]`` and ``[M,3,H',W']``:
    L1 between their mean channel moments (mean, std) plus L1 between their mean joint UV soft
    histograms. Needs no alignment and no ground truth: our early-stopping proxy. ``b`` may also be
    the precomputed :func:`set_colour_stats` of the second set (streamed held-out targets)."""
    if isinstance(b, tuple):
        ma, sa = channel_moments(a)
        mb, sb, hb = b
        moments = (ma.mean(0) - mb).abs().sum() + (sa.mean(0) - sb).abs().sum()
        return float(moments + (soft_histogram_uv(a).mean(0) - hb).abs().sum())
    ma, sa = channel_moments(a)
    mb, sb = channel_moments(b)
    moments = (ma.mean(0) - mb.mean(0)).abs().sum() + (sa.mean(0) - sb.mean(0)).abs().sum()
    hist = (soft_histogram_uv(a).mean(0) - soft_histogram_uv(b).mean(0)).abs().sum()
    return float(moments + hist)


class EpochTrainer:
    """The loop shared by every trainer: seeded epochs over the source stems, validation and the
    ground-truth-free proxy after each epoch, an atomic checkpoint (exact resume) and an export.

    Subclasses set ``self.model`` (the map), ``self.state`` (a :class:`TrainState` whose
    generators include ``order``), ``self.sources`` (keyed network inputs), ``self.epochs``,
    ``self.batch_size``, ``self.run_dir``, ``self.val``, ``self.proxy_targets``, ``self.device``,
    and implement :meth:`train_step` and :meth:`export_meta`.

    Under torchrun (:mod:`uotisp_lib.distributed`) ``batch_size`` is the global batch: every rank
    gets the same global batch of stems in :meth:`train_step`, draws its randomness for all of it,
    keeps the rows :meth:`local_rows` and updates through :meth:`update` (gradients all-reduced,
    weighted by :attr:`share`); rank 0 alone writes. ``amp`` (:meth:`set_amp`): mixed precision on CUDA.
    """

    model: nn.Module
    state: TrainState
    sources: PatchSet
    epochs: int
    batch_size: int
    run_dir: Path
    val: tuple[PatchSet, PatchSet | None] | None
    proxy_targets: torch.Tensor | None
    device: str
    arch: str
    arch_kwargs: dict
    preprocess: PreprocessConfig | None

    #: DataLoader worker processes reading streamed sources ahead (StreamingPatches.prefetch)
    num_workers: int = 0
    #: mixed precision of the training forward passes: "off", "bf16" or "fp16" (CUDA; see set_amp)
    amp: str = "off"
    #: training modules and their 4-D inputs in channels_last memory format (see set_channels_last)
    channels_last: bool = False
    #: torch.compile backend of the map's training forward passes, None: eager (see set_compile)
    compiled: str | None = None
    #: this rank's share n_r / n of the current global batch (1 in a single process)
    share: float = 1.0
    _rows: slice = slice(None)
    _scalers: dict | None = None

    def train_step(self, stems: list[str], epoch: int) -> dict[str, float]:  # pragma: no cover
        raise NotImplementedError

    # ----------------------------------------------------------------------- DDP and AMP hooks
    def shard_for(self, n: int) -> None:
        """Make the next :meth:`train_step` on a global batch of ``n`` stems train on this rank's rows."""
        lo, hi = distributed.shard_bounds(n)
        self._rows, self.share = slice(lo, hi), (hi - lo) / n

    def local_rows(self, t: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a tensor drawn for the whole global batch (all of it in one process)."""
        return t[self._rows]

    def set_amp(self, mode: str, allow_cpu: bool = False) -> None:
        """Mixed precision for the training forward passes: ``"off"`` (float32), ``"bf16"``
        (autocast to bfloat16) or ``"fp16"`` (float16 with one ``GradScaler`` per optimiser; their
        states are checkpointed with the run, so a resumed run continues with the same loss scale;
        a checkpoint without them starts them fresh, said once). Call before :meth:`fit`. CUDA only: the
        CPU stays float32 and any other mode is refused (ValueError naming ``--amp``);
        ``allow_cpu`` lifts that for tests of the plumbing. R1 and evaluation always run in float32."""
        if mode not in AMP_MODES:
            raise ValueError(f"--amp {mode}: expected one of {', '.join(AMP_MODES)}")
        if mode != "off" and not self.device.startswith("cuda") and not allow_cpu:
            raise ValueError(f"--amp {mode}: mixed precision needs a CUDA device (got {self.device}); "
                             "CPU training stays float32, expected --amp off")
        self.amp = mode
        self._scalers = None
        if mode == "fp16":
            dev = "cuda" if self.device.startswith("cuda") else "cpu"
            self._scalers = {name: torch.amp.GradScaler(dev) for name in self.state.optimizers}
        self.state.scalers = dict(self._scalers or {})  # saved in (and restored from) checkpoints

    def training_modules(self) -> list[nn.Module]:
        """The modules that train (every model of the state but the EMA copy)."""
        return [m for k, m in self.state.models.items() if k != "ema"]

    def set_channels_last(self, on: bool = True) -> None:
        """Train in ``channels_last`` memory format (``--channels-last``): the parameters of
        :meth:`training_modules` are converted in place (the optimisers keep them) and the step's
        image inputs with :meth:`layout`. Same results within float rounding; checkpoints and
        exports hold ordinary contiguous tensors, so a run resumes with or without it."""
        fmt = torch.channels_last if on else torch.contiguous_format
        for m in self.training_modules():
            m.to(memory_format=fmt)
        self.channels_last = bool(on)

    def layout(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` in the training memory format (channels_last for 4-D tensors when :attr:`channels_last`)."""
        return t.contiguous(memory_format=torch.channels_last) if self.channels_last and t.ndim == 4 else t

    def set_compile(self, backend: str | None = "inductor") -> None:
        """Compile the map's forward passes with ``torch.compile`` (``--compile``; ``None``: back to
        eager). In place (``nn.Module.compile``), so the state dict keeps its keys (no
        ``_orig_mod.`` prefix): checkpoints and exports are those of an eager run and resume either
        way. The map only: the potential's R1 penalty differentiates its gradient (double backward,
        which compiled graphs do not support), and the experts / discriminator are small."""
        if backend is None:
            self.model._compiled_call_impl = None  # what nn.Module.compile set
        else:
            self.model.compile(backend=backend)
        self.compiled = backend

    def autocast(self):
        """The autocast context of :attr:`amp` for training forward passes (a no-op when off)."""
        if self.amp == "off":
            return contextlib.nullcontext()
        dev = "cuda" if self.device.startswith("cuda") else "cpu"
        return torch.autocast(dev, dtype=torch.bfloat16 if self.amp == "bf16" else torch.float16)

    def update(self, name: str, loss: torch.Tensor) -> None:
        """One step of optimiser ``name`` on ``loss``: zero its gradients, backward (scaled under
        fp16), all-reduce the gradients of its parameters across ranks (weighted by :attr:`share`),
        step. Under fp16 the all-reduce comes before the scaler's inf check, so every rank skips
        (or takes) the same steps."""
        opt = self.state.optimizers[name]
        opt.zero_grad(set_to_none=True)
        scaler = self._scalers.get(name) if self._scalers else None
        (loss if scaler is None else scaler.scale(loss)).backward()
        distributed.sync_grads((p for g in opt.param_groups for p in g["params"]), self.share)
        if scaler is None:
            opt.step()
        else:
            scaler.step(opt)
            scaler.update()

    def export_meta(self) -> dict:  # pragma: no cover
        raise NotImplementedError

    @property
    def steps_per_epoch(self) -> int:
        """Global batches per epoch; under N processes a last batch of fewer than N stems is dropped."""
        n, world = len(self.sources), distributed.world_size()
        if world > 1 and 0 < n % self.batch_size < world:
            return n // self.batch_size
        return math.ceil(n / self.batch_size)

    def eval_model(self) -> nn.Module:
        """The network evaluated and exported (the EMA copy where a trainer keeps one)."""
        return self.model

    @torch.no_grad()
    def predict(self, inputs: PatchSet, batch: int = 32) -> torch.Tensor:
        """The evaluated map on keyed inputs -> sRGB ``[N,3,H,W]`` on the CPU, in [0,1]."""
        model = self.eval_model()
        was_training = model.training
        model.eval()
        out = torch.cat([model(inputs.images[i : i + batch].to(self.device)).cpu() for i in range(0, len(inputs), batch)])
        model.train(was_training)
        return out.clamp(0, 1)

    def evaluate(self) -> dict[str, float]:
        """Scores of the current map on ``self.val = (inputs, gt or None)``: ``val_psnr``,
        ``val_ssim``, ``val_de2000`` when the ground truth is given, and ``proxy``
        (:func:`colour_distance` of the renderings to ``proxy_targets``, lower is better) whenever
        held-out targets are given -- with or without ground truth."""
        out: dict[str, float] = {}
        if self.val is None:
            return out
        inputs, gt = self.val
        preds = self.predict(inputs)
        if gt is not None:
            scores = metrics.summarise(metrics.evaluate(preds, gt.select(inputs.stems)))
            out.update(val_psnr=scores["psnr"], val_ssim=scores["ssim"], val_de2000=scores["de2000"])
        if self.proxy_targets is not None:
            proxy = self.proxy_targets
            if not isinstance(proxy, torch.Tensor):  # streamed held-out targets: their statistics, once
                if getattr(self, "_proxy_stats", None) is None:
                    self._proxy_stats = set_colour_stats(proxy)
                proxy = self._proxy_stats
            out["proxy"] = colour_distance(preds, proxy)
        return out

    def _select(self, record: dict, write: bool = True) -> None:
        """Model selection after an epoch: export ``run_dir/best`` when ``record`` improves on the
        best epoch so far, by :func:`selection_criterion` (val PSNR with validation ground truth,
        else the proxy). ``state.extra`` records ``selection`` (the criterion), ``best_score`` and
        ``best_epoch`` (and ``best_val_psnr`` when selecting on it). ``write=False`` (ranks other
        than 0 under DDP) updates the state without exporting."""
        criterion = selection_criterion(record)
        if criterion is None:
            return
        value, extra = float(record[criterion]), self.state.extra
        if not math.isfinite(value):
            return
        best = extra.get("best_score", extra.get("best_val_psnr")) if extra.get("selection", "val_psnr") == criterion else None
        if best is None or (value > best if SELECTION[criterion] == "higher" else value < best):
            extra.update(selection=criterion, best_score=value, best_epoch=record["epoch"])
            if criterion == "val_psnr":
                extra["best_val_psnr"] = value
            if write:
                self.export(self.run_dir / "best")

    def fit(
        self,
        resume: bool = True,
        stop_after_epochs: int | None = None,
        progress: bool = False,
        log: Callable[[str], None] | None = None,
    ) -> list[dict]:
        """Train to ``self.epochs`` (resuming from the newest intact checkpoint when ``resume``).

        ``stop_after_epochs`` ends early after that many epochs *in this call* (to simulate an
        interruption in tests). ``progress``: a tqdm bar per epoch with the running mean losses.
        ``log`` (e.g. ``print``) is told when a run resumes (``resumed from step N (config hash
        H)``) or is reused finished. Returns the history: one dict per epoch, also written as
        ``run_dir/history.csv`` (atomically, after each checkpoint). The run folder is locked for
        the call (:func:`uotisp_lib.checkpoint.run_lock`): a second trainer is refused.
        """
        if distributed.world_size() > 1 and self.batch_size < distributed.world_size():
            raise ValueError(f"batch_size {self.batch_size}: the global batch must have at least one stem per "
                             f"process; expected batch_size >= {distributed.world_size()} under torchrun")
        # under torchrun rank 0 alone holds the lock (and writes); the others wait for it at the end
        with run_lock(self.run_dir) if distributed.is_main() else contextlib.nullcontext():
            history = self._fit(resume, stop_after_epochs, progress, log)
        distributed.barrier()
        return history

    def _fit(self, resume: bool, stop_after_epochs: int | None, progress: bool, log: Callable[[str], None] | None) -> list[dict]:
        """:meth:`fit` under the run lock."""
        ckpt_dir = self.run_dir / "ckpt"
        main, ddp = distributed.is_main(), distributed.is_distributed()
        if resume:
            wanted = self.state.extra.get("config")
            last = load_latest_checkpoint(ckpt_dir, self.state)
            if last is not None:
                _check_same_config(last, self.state.extra.get("config"), wanted)
                if main:
                    self._refresh_export()
                    write_history(self.run_dir / HISTORY, self.state.history)
                if log is not None and main:
                    log(self._resume_message())
                if self.state.fresh_scalers and main:
                    _say(log, f"{last.name} holds no GradScaler state (saved without --amp fp16, or by an older "
                              f"version): the fp16 loss scales of {', '.join(self.state.fresh_scalers)} start fresh")
        if ddp:  # every rank starts from rank 0's tensors; rank-local RNGs from the run seed
            distributed.broadcast_modules(self.state.models.values())
            distributed.seed_rank(int(self.state.extra.get("config", {}).get("seed", 0)), self.state.step)
        # TensorBoard scalars (rank 0): opened at the first epoch trained here; events a killed run
        # wrote after its last checkpoint (steps past this one) are purged by TensorBoard
        events = EventLog(self.run_dir / TB_DIR, self.state.step, log) if main else None
        try:
            return self._epochs(stop_after_epochs, progress, ckpt_dir, events)
        finally:
            if events is not None:
                events.close()

    def _epochs(self, stop_after_epochs: int | None, progress: bool, ckpt_dir: Path, events: "EventLog | None") -> list[dict]:
        """The epoch loop of :meth:`_fit` (``events``: rank 0's TensorBoard log, else None)."""
        from tqdm.auto import tqdm

        main, ddp = distributed.is_main(), distributed.is_distributed()
        done_here = 0
        stems = list(self.sources.stems)
        while self.state.extra["epoch"] < self.epochs:
            if stop_after_epochs is not None and done_here >= stop_after_epochs:
                break
            epoch = self.state.extra["epoch"]
            t0 = time.perf_counter()
            order = torch.randperm(len(stems), generator=self.state.generators["order"]).tolist()
            if hasattr(self.sources, "prefetch"):  # streamed sources: the epoch's batches read ahead
                self.sources.prefetch([[stems[i] for i in order[b * self.batch_size : (b + 1) * self.batch_size]]
                                       for b in range(self.steps_per_epoch)], num_workers=self.num_workers)
            sums: dict[str, float] = {}
            bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{self.epochs}", unit="step",
                       disable=not (progress and main))
            for b in range(self.steps_per_epoch):
                batch = [stems[i] for i in order[b * self.batch_size : (b + 1) * self.batch_size]]
                self.shard_for(len(batch))
                for k, v in self.train_step(batch, epoch).items():
                    # weighted by the share: summed over ranks, a mean over the global batch
                    sums[k] = sums.get(k, 0.0) + (v * self.share if ddp else v)
                self.state.step += 1
                bar.set_postfix(_running(sums, b + 1), refresh=False)
                bar.update(1)
            if ddp:
                sums = distributed.sum_dicts(sums)
            record: dict = {"epoch": epoch + 1, "step": self.state.step, "seconds": time.perf_counter() - t0}
            record.update({k: v / self.steps_per_epoch for k, v in sums.items()})
            record.update(self.evaluate())
            self.state.history.append(record)
            self.state.extra["epoch"] = epoch + 1
            self._select(record, write=main)  # model selection: the best epoch's map, exported beside the last
            scores = {k: record[k] for k in ("val_psnr", "proxy") if k in record}
            bar.set_postfix({**_running(sums, self.steps_per_epoch), **_running(scores, 1)})
            bar.close()
            if main:
                if events is not None:  # before the checkpoint: a kill in between is purged on resume
                    events.write(record)
                save_checkpoint(ckpt_dir, self.state)
                write_history(self.run_dir / HISTORY, self.state.history)
                self.export()
            done_here += 1
        return list(self.state.history)

    def _resume_message(self) -> str:
        """One line: where a resumed run continues, or that a finished run is reused as it is."""
        epoch, step, digest = self.state.extra["epoch"], self.state.step, config_hash(self.state.extra.get("config"))
        if epoch >= self.epochs:
            return f"finished run reused: {self.run_dir} is at epoch {epoch}/{self.epochs}, step {step} (config hash {digest}); nothing to train"
        return f"resumed from step {step} (config hash {digest}), epoch {epoch}/{self.epochs}"

    def export(self, out: Path | None = None) -> Path:
        """Write the evaluated map as ``run_dir/export`` (or ``out``; see :mod:`uotisp_lib.inference`).

        ``run_dir/best`` holds the map of the best epoch (``state.extra["best_epoch"]``): the highest
        validation PSNR with validation ground truth, else the lowest proxy (``state.extra["selection"]``
        says which; the export's ``selected_on`` too)."""
        role = "latest" if out is None else "best" if Path(out) == self.run_dir / "best" else "other"
        meta = {"epoch": self.state.extra["epoch"], "step": self.state.step, "role": role, **self.export_meta()}
        if role == "best":
            meta["selected_on"] = self.state.extra.get("selection")
        out = self.run_dir / "export" if out is None else out
        return export_isp(out, self.eval_model(), self.arch, self.arch_kwargs, self.preprocess, meta)

    def _refresh_export(self) -> None:
        """Rebuild ``run_dir/export`` when it is missing or older than the state just resumed
        (a run killed between its checkpoint and its export)."""
        if export_step(self.run_dir / "export") != self.state.step:
            self.export()


def _say(log: Callable[[str], None] | None, message: str) -> None:
    """Tell ``log`` (else a RuntimeWarning) one line."""
    if log is not None:
        log(message)
    else:
        import warnings

        warnings.warn(message, RuntimeWarning, stacklevel=3)


#: per-epoch history of a run, beside its ``ckpt`` folder
HISTORY = "history.csv"

#: TensorBoard event files of a run, beside its ``ckpt`` folder
TB_DIR = "tb"

#: said once per process when tensorboard is missing
_NO_TENSORBOARD = "tensorboard is not installed: no TensorBoard event files are written (history.csv is)"
_no_tensorboard_said = False


class EventLog:
    """A run's per-epoch history as TensorBoard scalars in ``log_dir`` (``torch.utils.tensorboard``).

    :meth:`write` adds every numeric value of an epoch's history record (``epoch``, ``step``,
    ``seconds``, the mean losses, the validation scores) as a scalar tagged by its key, at the
    record's global ``step``, and flushes. The writer is opened at the first :meth:`write`, with
    ``purge_step = start_step + 1``: a run resumed at ``start_step`` writes only the epochs it trains
    into a new event file of the same folder, and TensorBoard hides what an earlier process wrote at
    later steps (epochs of a killed run that its checkpoint does not hold), so each epoch shows
    once. Without tensorboard nothing is written and ``log`` (else a warning) is told once per process.
    """

    def __init__(self, log_dir: str | Path, start_step: int = 0, log: Callable[[str], None] | None = None) -> None:
        self.log_dir, self.start_step, self.log = Path(log_dir), int(start_step), log
        self._writer = None
        self._missing = False

    def _open(self):
        global _no_tensorboard_said
        if self._writer is None and not self._missing:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                self._missing = True
                if not _no_tensorboard_said:
                    _no_tensorboard_said = True
                    if self.log is not None:
                        self.log(_NO_TENSORBOARD)
                    else:
                        import warnings

                        warnings.warn(_NO_TENSORBOARD, RuntimeWarning, stacklevel=2)
                return None
            self._writer = SummaryWriter(str(self.log_dir), purge_step=self.start_step + 1)
        return self._writer

    def write(self, record: dict) -> None:
        """Add the numeric values of one epoch's ``record`` at its ``step`` and flush."""
        writer = self._open()
        if writer is None:
            return
        step = int(record["step"])
        for key, value in record.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                writer.add_scalar(key, value, global_step=step)
        writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


#: model-selection criteria, in order of preference, and which direction is better: the validation
#: PSNR when the validation split has ground truth, else the ground-truth-free proxy (a distance)
SELECTION: dict[str, str] = {"val_psnr": "higher", "proxy": "lower"}


def selection_criterion(record: dict) -> str | None:
    """The first criterion of :data:`SELECTION` that an epoch's ``record`` holds (None: neither)."""
    return next((k for k in SELECTION if k in record), None)


#: values of ``--amp`` / :meth:`EpochTrainer.set_amp`
AMP_MODES = ("off", "bf16", "fp16")

#: logged values shown first in the progress bar, when a trainer logs them
_SHOWN = ("total", "l1", "map/loss", "map/cost", "potential/potential_gap")


def _running(sums: dict[str, float], n: int, limit: int = 3) -> dict[str, str]:
    """Running means of the first ``limit`` logged values (those of :data:`_SHOWN` first), formatted."""
    keys = [k for k in _SHOWN if k in sums] + [k for k in sums if k not in _SHOWN]
    return {k: f"{sums[k] / n:.4g}" for k in keys[:limit]}


def write_history(path: str | Path, history: Sequence[dict]) -> Path:
    """Write a run's history (one dict per epoch) as CSV atomically: one row per epoch, the columns
    in order of first appearance; values missing from an epoch are left empty."""
    import csv
    import io

    from uotisp_lib.io import atomic_write_text

    columns = list(dict.fromkeys(k for rec in history for k in rec))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return atomic_write_text(path, buf.getvalue())


def config_hash(config: object) -> str:
    """First 12 hex digits of the SHA-256 of a config's stable JSON (:func:`uotisp_lib.config.dumps`)."""
    import hashlib

    from uotisp_lib.config import dumps

    return hashlib.sha256(dumps(config).encode()).hexdigest()[:12]


class ConfigMismatchError(ValueError):
    """A run folder holds a checkpoint trained with another configuration; ``diff`` names the fields."""

    def __init__(self, message: str, run_dir: Path, diff: list[str]) -> None:
        super().__init__(message)
        self.run_dir, self.diff = run_dir, diff


def _check_same_config(path: Path, saved: dict | None, wanted: dict | None) -> None:
    """Refuse to resume a run trained with other hyper-parameters (it would be reported under the
    new ones). Compared after a round trip through the checkpoint, field by field."""
    if saved is None or wanted is None or saved == wanted:
        return
    diff = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
    shown = ", ".join(f"{k}: {saved.get(k)!r} -> {wanted.get(k)!r}" for k in diff[:4])
    raise ConfigMismatchError(
        f"{path}: this checkpoint was trained with another configuration ({shown}); "
        f"use another run folder, delete {path.parent}, or fit(resume=False)",
        path.parent.parent,
        diff,
    )


class PseudoPairTrainer(EpochTrainer):
    """Train ``cfg.arch`` from ``sources`` (network inputs, keyed by stem) to ``targets``.

    Args:
        sources: network inputs ``[N,C,H,W]`` (pseudo-RGB for ``rgb`` models, packed RAW in [0,1]
            for ``packed`` ones), keyed by the RAW stems.
        targets: sRGB targets keyed by stem (train JPEGs; or the ground truth when ``cfg.paired``).
        pair_fn: picks the target stem of each source stem (ignored when ``cfg.paired``).
        run_dir: checkpoints under ``run_dir/ckpt``, the exported map under ``run_dir/export``.
        val: (inputs, ground truth or None) keyed by the same stems: PSNR / SSIM / dE2000 each epoch
            when the ground truth is given, the proxy on the inputs' renderings in any case.
        proxy_targets: held-out target patches for the ground-truth-free proxy (:func:`colour_distance`).
        extractor: feature extractor of the Gram loss (``None`` drops the Gram term).
        preprocess: recorded in the export so ``uotisp infer`` rebuilds the same inputs.
    """

    def __init__(
        self,
        cfg: PseudoPairConfig,
        sources: PatchSet,
        targets: PatchSet,
        pair_fn: PairFn | None,
        run_dir: str | Path,
        *,
        val: tuple[PatchSet, PatchSet | None] | None = None,
        proxy_targets: torch.Tensor | None = None,
        extractor: losses.FeatureExtractor | None = None,
        preprocess: PreprocessConfig | None = None,
        device: str = "cpu",
    ) -> None:
        if not cfg.paired and pair_fn is None:
            raise ValueError("PseudoPairTrainer: unpaired training needs a pair_fn (a pair sampler)")
        self.cfg, self.device = cfg, device
        self.sources, self.targets, self.pair_fn = sources, targets, pair_fn
        self.val, self.proxy_targets, self.extractor, self.preprocess = val, proxy_targets, extractor, preprocess
        self.run_dir = Path(run_dir)
        torch.manual_seed(cfg.seed)
        self.model = build_isp(cfg.arch, **dict(cfg.arch_kwargs)).to(device)
        self.disc = UNetDiscriminatorSN(num_feat=cfg.d_width).to(device)
        opt_g = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        opt_d = torch.optim.AdamW(self.disc.parameters(), lr=cfg.d_lr, weight_decay=cfg.weight_decay)
        self.state = TrainState(
            models={"map": self.model, "disc": self.disc},
            optimizers={"map": opt_g, "disc": opt_d},
            generators={
                "order": torch.Generator().manual_seed(cfg.seed),
                "pairs": torch.Generator().manual_seed(cfg.seed + 1),
            },
            extra={"epoch": 0, "config": config_dict(cfg)},
        )
        self.epochs, self.batch_size = cfg.epochs, cfg.batch_size
        self.arch, self.arch_kwargs = cfg.arch, dict(cfg.arch_kwargs)
        self._stage: str | None = None
        self.scale = 2 if getattr(self.model, "input_kind", "rgb") == "packed" else 1

    # ------------------------------------------------------------------------------- one step
    def _loss_fn(self, stage: str) -> losses.StatisticLoss:
        weights = dict(losses.BORELLI_WEIGHTS[stage])
        if self.extractor is None:
            weights["gram"] = 0.0
        return losses.StatisticLoss(weights, self.extractor)

    def _step(self, stems: list[str], stage: str, loss_fn: losses.StatisticLoss) -> dict[str, float]:
        cfg = self.cfg
        x = self.sources.select(stems)
        if cfg.paired:
            y = self.targets.select(stems)
        else:
            y = self.targets.select(self.pair_fn(stems, self.state.generators["pairs"]))
        if cfg.crop:
            gen, scale = self.state.generators["order"], self.scale
            if cfg.paired:
                x, y = random_crops(x, cfg.crop, gen, scale, y)
            else:  # statistic losses need no alignment: crop the target independently
                x, _ = random_crops(x, cfg.crop, gen, scale)
                y, _ = random_crops(y, cfg.crop, gen)
        # drawn for the whole global batch; this rank trains on its rows (all of them in one process)
        x, y = self.layout(self.local_rows(x).to(self.device)), self.layout(self.local_rows(y).to(self.device))
        logs: dict[str, float] = {}
        with self.autocast():
            y_hat = self.model(x)
            if cfg.paired:
                l1 = losses.l1_loss(y_hat, y)
                total = l1 + cfg.ssim_weight * losses.ssim_loss(y_hat, y) if cfg.ssim_weight else l1
                logs.update(l1=float(l1.detach()), total=float(total.detach()))
            else:
                adv = loss_fn.weights["adv"] > 0
                total, logs = loss_fn(y_hat, y, self.disc(y_hat) if adv else None)
        self.update("map", total)
        if not cfg.paired and loss_fn.weights["adv"] > 0:
            with self.autocast():
                d_loss = losses.hinge_d_loss(self.disc(y), self.disc(y_hat.detach()))
            self.update("disc", d_loss)
            logs["d_loss"] = float(d_loss.detach())
        return logs

    def train_step(self, stems: list[str], epoch: int) -> dict[str, float]:
        stage = "stage1" if epoch < self.cfg.stage1_epochs else "stage2"
        if self._stage != stage:
            self._stage, self._loss = stage, self._loss_fn(stage)
        return {"stage2": float(stage == "stage2"), **self._step(stems, stage, self._loss)}

    def export_meta(self) -> dict:
        return {"trainer": "pseudo_pair", "config": config_dict(self.cfg)}


# ------------------------------------------------------------------------------------------------
# UOT with a committee of expert discriminators (EGUOT-ISP, our reconstruction)
# ------------------------------------------------------------------------------------------------
LR_SCHEDULES = ("constant", "cosine")


def lr_factor(schedule: str, step: int, total: int, floor: float = 0.05) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based) of ``total``: 1 for ``constant``;
    ``floor + (1 - floor) (1 + cos(pi step / (total - 1))) / 2`` for ``cosine`` (1 at the first
    step, ``floor`` at the last). A pure function of the step, so a resumed run continues exactly."""
    if schedule == "constant" or total <= 1:
        return 1.0
    if schedule != "cosine":
        raise ValueError(f"lr_factor: unknown schedule {schedule!r}; expected one of {', '.join(LR_SCHEDULES)}")
    t = min(max(step, 0), total - 1) / (total - 1)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))


@dataclass(frozen=True)
class UOTTrainConfig:
    """Hyper-parameters of :class:`UOTTrainer`.

    Defaults follow the UOTM recipe as the EGUOT author's prototype used it (docs/references.md): Adam
    betas (0.5, 0.9), lr 2e-4 (map) / 1e-4 (potential), R1 gamma 5, EMA 0.999; the cost weight,
    conjugates and map steps come from ``uot`` (:class:`uotisp_lib.uot.UOTConfig`). Ours: the
    expert committee's weight and width, the potential network, the paired-mode weights.
    """

    arch: str = "unet_isp"
    arch_kwargs: tuple[tuple[str, object], ...] = ()
    mode: str = "unpaired"  # unpaired | paired (adds L1 (+ SSIM) on the paired subset)
    uot: UOTConfig = UOTConfig()
    epochs: int = 10
    batch_size: int = 16
    lr_map: float = 2e-4
    lr_potential: float = 1e-4
    lr_experts: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.9)
    ema_decay: float = 0.999
    # EMA warmup constant c (decay min(ema_decay, (1 + n) / (c + n)), checkpoint.EMA): 10 is
    # TensorFlow's (an average over about the last n/9 steps); 3 averages about the last half of a
    # short run, which damps the epoch-to-epoch swings of adversarial training (ours, issue 10)
    ema_warmup: float = 10.0
    potential_width: int = 32
    potential_pool: int = 1  # PotentialNet.pool: the potential sees pool x pool block means (ours, issue 10)
    experts: tuple[str, ...] = ("colour", "structure", "frequency")
    expert_weight: float = 0.1  # per expert; with grad_norm balance, its gradient norm relative to the objective's
    expert_width: int = 16
    expert_balance: str = "grad_norm"
    # what each expert's gradient is scaled to (grad_norm balance). "potential": the norm of the
    # gradient of the potential's pull -v(T(x)) (+ the paired loss); at the optimum it equals the
    # cost's gradient, so it does not vanish as the map converges (ours, issue 10). "objective":
    # the gradient of c - v (+ paired), which goes to 0 at the optimum and switched the committee off.
    expert_reference: str = "potential"
    paired_fraction: float = 1.0  # paired mode: fraction of sources whose ground truth is used
    # paired mode: what the potential and the experts see as real sRGB. "gt": the ground truth of the
    # paired subset (a paired dataset's target distribution; ours); "unpaired": the unpaired targets
    paired_targets: str = "gt"
    paired_l1: float = 10.0  # ours; with 1.0 the potential's pull beat the pairs on the cpu benchmark
    paired_ssim: float = 0.0
    crop: int | None = None  # random square crops of this many output pixels (None: whole patches)
    # learning-rate schedule of the map, the potential and the experts over all steps: "constant", or
    # "cosine" (from the lr down to lr_floor x lr at the last step), which damps the late drift of an
    # adversarial pair at a fixed step budget (ours, issue 10)
    lr_schedule: str = "constant"
    lr_floor: float = 0.05
    # weight of the colour sliced-Wasserstein expert (uot.colour_sliced_wasserstein) between the map's
    # batch and ``colour_ot_draw`` x batch freshly drawn targets, added to the map loss; 0 turns it off
    # (ours, issue 10: the learned potential's colour signal was weak at a few hundred steps)
    colour_ot: float = 0.0
    colour_ot_draw: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"UOTTrainConfig: lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if not 0.0 <= self.lr_floor <= 1.0:
            raise ValueError(f"UOTTrainConfig: lr_floor must lie in [0, 1], got {self.lr_floor!r}")
        if self.mode not in ("unpaired", "paired"):
            raise ValueError(f"UOTTrainConfig: mode must be 'unpaired' or 'paired', got {self.mode!r}")
        if not 0.0 <= self.paired_fraction <= 1.0:
            raise ValueError(f"UOTTrainConfig: paired_fraction must lie in [0, 1], got {self.paired_fraction}")
        if self.expert_reference not in ("potential", "objective"):
            raise ValueError(
                f"UOTTrainConfig: expert_reference must be 'potential' or 'objective', got {self.expert_reference!r}"
            )
        if not (self.colour_ot >= 0 and self.colour_ot_draw >= 1):
            raise ValueError(
                f"UOTTrainConfig: colour_ot must be >= 0 and colour_ot_draw >= 1, got {self.colour_ot!r}, {self.colour_ot_draw!r}"
            )
        if self.paired_targets not in ("gt", "unpaired"):
            raise ValueError(f"UOTTrainConfig: paired_targets must be 'gt' or 'unpaired', got {self.paired_targets!r}")


class UOTTrainer(EpochTrainer):
    """Semi-dual (unbalanced) OT training of any registered ISP (UOTM; EGUOT-ISP reconstruction).

    Each step: one potential update (``potential_loss`` + R1 on real targets), one update of the
    expert committee (hinge), then ``uot.map_steps_per_potential`` map updates minimising
    ``c(x, T(x)) - v(T(x))`` (plus, in paired mode, ``paired_l1`` x L1 (+ SSIM) to the ground truth
    of the paired subset) plus the committee's adversarial terms, each expert's gradient scaled to
    ``expert_weight`` times that of the rest (``expert_balance="grad_norm"``). The cost compares
    ``T(x)`` with a fixed naive ISP of ``x`` (:func:`uotisp_lib.uot.naive_isp`), precomputed per
    stem. Targets are drawn uniformly.

    Args:
        raw: packed RAW ``[N,4,h,w]`` in [0,1] keyed by stem (the transport's source ``x``).
        targets: target sRGB patches (the train JPEGs), drawn uniformly at random (in paired mode
            with ``paired_targets="gt"``, the paired subset's ground truth is drawn instead).
        run_dir, val, proxy_targets, preprocess, device: as in :class:`PseudoPairTrainer`.
        paired: ground truth keyed by the RAW stems (required in paired mode).
    """

    def __init__(
        self,
        cfg: UOTTrainConfig,
        raw: PatchSet,
        targets: PatchSet,
        run_dir: str | Path,
        *,
        paired: PatchSet | None = None,
        val: tuple[PatchSet, PatchSet | None] | None = None,
        proxy_targets: torch.Tensor | None = None,
        preprocess: PreprocessConfig | None = None,
        device: str = "cpu",
    ) -> None:
        from uotisp_lib.checkpoint import EMA
        from uotisp_lib.inference import model_input
        from uotisp_lib.models import PotentialNet, build_committee

        if cfg.mode == "paired" and paired is None:
            raise ValueError("UOTTrainer: paired mode needs the ground truth (paired=...)")
        self.cfg, self.device, self.run_dir = cfg, device, Path(run_dir)
        self.targets, self.paired, self.proxy_targets, self.preprocess = targets, paired, proxy_targets, preprocess
        torch.manual_seed(cfg.seed)
        self.model = build_isp(cfg.arch, **dict(cfg.arch_kwargs)).to(device)
        kind = getattr(self.model, "input_kind", "rgb")
        with torch.no_grad():
            self.raw = raw
            if isinstance(raw, PatchSet):
                self.sources = PatchSet(raw.stems, model_input(raw.images, kind, preprocess))
                self.references = PatchSet(raw.stems, cfg.uot.reference(raw.images))
            else:  # streamed (uotisp_lib.data.streaming): inputs and references computed per batch
                self.sources = raw.map(lambda t: model_input(t, kind, preprocess))
                self.references = raw.map(cfg.uot.reference)
            if val is None:
                self.val = None
            elif isinstance(val[0], PatchSet):
                self.val = (PatchSet(val[0].stems, model_input(val[0].images, kind, preprocess)), val[1])
            else:
                self.val = (val[0].map(lambda t: model_input(t, kind, preprocess)), val[1])
        self.potential = PotentialNet(cfg.potential_width, pool=cfg.potential_pool).to(device)
        self.committee = build_committee(cfg.experts, cfg.expert_width, {e: cfg.expert_weight for e in cfg.experts}, cfg.expert_balance).to(device) if cfg.experts else None
        self.ema = EMA(self.model, cfg.ema_decay, warmup=cfg.ema_warmup)
        self.cost = cfg.uot.build_cost()
        gen_pairs = torch.Generator().manual_seed(cfg.seed + 1)
        n_paired = round(cfg.paired_fraction * len(raw)) if cfg.mode == "paired" else 0
        perm = torch.randperm(len(raw), generator=torch.Generator().manual_seed(cfg.seed + 2)).tolist()
        self.paired_stems = {raw.stems[i] for i in perm[:n_paired]}
        if n_paired and cfg.paired_targets == "gt":  # the whole ground truth is used as it is (no copy)
            self.targets = paired if set(paired.stems) == self.paired_stems else paired.subset(sorted(self.paired_stems))
        models = {"map": self.model, "ema": self.ema.model, "potential": self.potential}
        opts = {
            "map": torch.optim.Adam(self.model.parameters(), lr=cfg.lr_map, betas=cfg.betas),
            "potential": torch.optim.Adam(self.potential.parameters(), lr=cfg.lr_potential, betas=cfg.betas),
        }
        if self.committee is not None:
            models["experts"] = self.committee
            opts["experts"] = torch.optim.Adam(self.committee.parameters(), lr=cfg.lr_experts, betas=cfg.betas)
        self.state = TrainState(
            models=models,
            optimizers=opts,
            generators={"order": torch.Generator().manual_seed(cfg.seed), "pairs": gen_pairs},
            extra={"epoch": 0, "config": config_dict(cfg)},
        )
        self.epochs, self.batch_size = cfg.epochs, cfg.batch_size
        self.arch, self.arch_kwargs = cfg.arch, dict(cfg.arch_kwargs)

    timings: dict[str, float] | None = None  # phase -> seconds, accumulated when a dict (benchmarks)
    _t: float = 0.0

    def eval_model(self) -> nn.Module:
        return self.ema.model

    def _tick(self, phase: str) -> None:
        """Add the time since the last tick to ``self.timings[phase]`` (when ``self.timings`` is a
        dict; the benchmark sets it). On CUDA the device is synchronised first."""
        if self.timings is None:
            return
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        now = time.perf_counter()
        self.timings[phase] = self.timings.get(phase, 0.0) + now - self._t
        self._t = now

    def _set_lr(self) -> None:
        """Set every optimiser's learning rate to its base times :func:`lr_factor` of this step."""
        cfg = self.cfg
        f = lr_factor(cfg.lr_schedule, self.state.step, self.epochs * self.steps_per_epoch, cfg.lr_floor)
        base = {"map": cfg.lr_map, "potential": cfg.lr_potential, "experts": cfg.lr_experts}
        for name, opt in self.state.optimizers.items():
            for group in opt.param_groups:
                group["lr"] = base[name] * f

    def _draw_targets(self, n: int) -> torch.Tensor:
        """``n`` target patches drawn uniformly (cropped like the step's), on the CPU."""
        pick = torch.randint(0, len(self.targets), (n,), generator=self.state.generators["pairs"])
        y = self.targets.images[pick]
        if self.cfg.crop:
            (y,) = aligned_crops([(y, 1)], self.cfg.crop, self.state.generators["order"])
        return y

    def train_step(self, stems: list[str], epoch: int) -> dict[str, float]:
        """One UOT step on the global batch ``stems`` (this rank's rows of it under torchrun: see
        :mod:`uotisp_lib.distributed`; the terms that are not means over samples are made global:
        the colour expert sees the whole gathered batch, the paired loss is weighted by the paired
        count of the whole batch, the committee balances with the global gradient norms)."""
        cfg, dev = self.cfg, self.device
        ddp = distributed.is_distributed()
        if self.committee is not None:
            self.committee.reduce_norms = (lambda norms: distributed.global_norms(norms, self.share)) if ddp else None
            scaler = self._scalers.get("map") if self._scalers else None
            self.committee.norm_loss_scale = float(scaler.get_scale()) if scaler is not None else 1.0
        self._t = time.perf_counter()
        x, inp, ref = self.raw.select(stems), self.sources.select(stems), self.references.select(stems)
        pick = torch.randint(0, len(self.targets), (len(stems),), generator=self.state.generators["pairs"])
        y = self.targets.images[pick]
        gt_all = self.paired.select(stems) if self.paired_stems else None
        if cfg.crop:
            gen = self.state.generators["order"]
            scale_in = 2 if inp.shape[-1] * 2 == ref.shape[-1] else 1
            parts = [(x, 2), (inp, scale_in), (ref, 1)] + ([(gt_all, 1)] if gt_all is not None else [])
            x, inp, ref, *rest = aligned_crops(parts, cfg.crop, gen)
            gt_all = rest[0] if rest else None
            (y,) = aligned_crops([(y, 1)], cfg.crop, gen)
        # everything above was drawn for the whole global batch; this rank trains on its rows
        rows = self.local_rows
        x, inp, ref, y = rows(x).to(dev), self.layout(rows(inp).to(dev)), rows(ref).to(dev), self.layout(rows(y).to(dev))
        local_stems = stems[self._rows]
        gt_all = rows(gt_all) if gt_all is not None else None
        logs: dict[str, float] = {}
        self._tick("data")
        self._set_lr()
        # potential steps (and the experts' discriminator step) on a detached map output
        with torch.no_grad(), self.autocast():
            fake = self.model(inp)
            cost_fake = self.cost(x, fake, reference=ref)
        for k in range(cfg.uot.potential_steps):
            if k:  # each further potential step sees a fresh draw of targets
                y = self.layout(rows(self._draw_targets(len(stems))).to(dev))
            with self.autocast():
                loss_v, lv = uot.potential_loss(self.potential(y), self.potential(fake), cost_fake, cfg.uot)
            if cfg.uot.r1_gamma > 0:  # float32 (a gradient w.r.t. the input, then its gradient)
                r1 = uot.r1_penalty(self.potential, y.float(), cfg.uot.r1_gamma, uot.r1_scale_of(cfg.uot, y))
            else:
                r1 = loss_v.new_zeros(())
            self.update("potential", loss_v + r1)
        logs.update({f"potential/{k}": v for k, v in lv.items()}, r1=float(r1.detach()))
        self._tick("potential")
        if self.committee is not None:
            with self.autocast():
                d_loss, ld = self.committee.d_loss(y, fake)
            self.update("experts", d_loss)
            logs.update({f"experts/{k}": v for k, v in ld.items()})
            self._tick("experts")
        # map steps
        mask = torch.tensor([s in self.paired_stems for s in local_stems], device=dev)
        # the paired loss is a mean over the paired rows of the whole batch: this rank's part of it
        paired_weight = 1.0
        if ddp and bool(mask.any()):
            paired_weight = int(mask.sum()) / sum(s in self.paired_stems for s in stems) / self.share
        y_col = self._draw_targets(cfg.colour_ot_draw * len(stems)).to(dev) if cfg.colour_ot > 0 else None
        total_fix = 0.0
        for _ in range(cfg.uot.map_steps_per_potential):
            with self.autocast():
                fake = self.model(inp)
                cost = self.cost(x, fake, reference=ref)
                v_fake = self.potential(fake)
                loss_t, lt = uot.map_loss(v_fake, cost, cfg.uot)
                total, sup = loss_t, None
                if y_col is not None:
                    # the colour distribution of the whole batch: gathered from every rank; the
                    # gradient reaches this rank's rows only, so 1 / share undoes the weighted sync
                    col = uot.colour_sliced_wasserstein(distributed.gather_batch(fake), y_col,
                                                        generator=self.state.generators["pairs"])
                    total = total + cfg.colour_ot * (col / self.share if ddp else col)
                    logs["colour_ot"] = float(col.detach())
                    if ddp:  # the logged total holds the term once (logs are summed weighted by share)
                        total_fix = cfg.colour_ot * float(col.detach()) * (1.0 / self.share - 1.0)
                if bool(mask.any()):
                    gt = gt_all[mask.cpu()].to(dev)
                    sup = uot.paired_loss(fake[mask], gt, cfg.paired_l1, cfg.paired_ssim)
                    if paired_weight != 1.0:
                        sup = sup * paired_weight
                    total = total + sup
                    logs["paired"] = float(sup.detach())
            self._tick("map")
            if self.committee is not None:
                with self.autocast():
                    # each expert's gradient is scaled to the potential's pull (+ paired), or to c - v (+ paired)
                    pull = uot.potential_pull(v_fake, cfg.uot) if cfg.expert_reference == "potential" else loss_t
                    ref_loss = pull if sup is None else pull + sup
                    g_loss, lg = self.committee.g_loss(fake, reference=ref_loss)
                total = total + g_loss
                logs.update({f"experts/{k}": v for k, v in lg.items()})
                self._tick("balancing" if self.committee.balance == "grad_norm" else "experts")
            self.update("map", total)
            self.ema.update(self.model)
            self._tick("map")
        logs.update({f"map/{k}": v for k, v in lt.items()}, total=float(total.detach()) - total_fix if total_fix else float(total.detach()))
        return logs

    def export_meta(self) -> dict:
        return {"trainer": "uot", "config": config_dict(self.cfg)}
