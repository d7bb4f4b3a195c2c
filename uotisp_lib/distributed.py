"""Multi-process data-parallel training under ``torchrun`` (issue 14).

``torchrun --nproc_per_node=N --no-python uotisp train ...`` starts N copies of ``uotisp train``;
:func:`process_group` (entered by the CLI) joins them from torchrun's environment variables
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``): NCCL on CUDA (rank ``r`` on
``cuda:LOCAL_RANK``), gloo on the CPU. Outside torchrun nothing here does anything: every helper
answers as a single process (rank 0 of 1), so notebooks and the tests run unchanged.

How the trainers use it (:class:`uotisp_lib.train.EpochTrainer`):

- **Data.** ``batch_size`` stays the *global* batch. Every rank draws the same epoch permutation of
  the stems and the same per-sample randomness (pairs, crops, targets) from the run's generators
  for the whole global batch, then keeps its own contiguous shard (:func:`shard_bounds`, a
  ``DistributedSampler`` keyed by stems, the shards of one batch disjoint). The global batch is thus
  ``world_size`` x the per-rank batch, a DDP run replays the single-process run with the same
  ``batch_size`` (up to floating-point summation order), and the checkpointed generator states are
  the whole state: a run resumes exactly under another number of processes. The global RNGs
  (Python, NumPy, torch) of rank ``r > 0`` get per-rank seeds derived from the run seed
  (:func:`seed_rank`) for anything rank-local (e.g. dropout in a plug-in ISP); no data draw uses them.
- **Gradients.** After each backward and before each ``optimizer.step()`` the gradients of exactly
  the parameters that optimiser steps are all-reduced (:func:`sync_grads`): one flat buffer per
  update, each rank's gradient weighted by its share ``n_r / n`` of the global batch, so the result
  is the gradient of the global-batch mean (uneven last batches included). We chose this explicit
  all-reduce over wrapping the networks in ``DistributedDataParallel`` because a UOT step runs
  three optimisers over networks that appear in each other's graphs (the map's backward goes
  through the potential and the experts), calls the map several times per step, and takes
  ``torch.autograd.grad`` w.r.t. inputs and outputs (the R1 penalty with ``create_graph=True``,
  the committee's gradient norms): DDP's reducer hooks fire on every backward into a wrapped module
  and do not support double backward, whereas an explicit all-reduce syncs exactly what each
  optimiser steps, once. The price is no overlap of communication with the backward pass, small
  next to the convolutions for these networks.
- **R1** is a mean over the local targets of a per-sample gradient norm: the weighted all-reduce of
  its parameter gradients is the global mean. **Grad-norm balancing** needs the norm of the
  gradient of the *global* loss w.r.t. the whole batch output: the ranks all-reduce the squares of
  their (share-weighted) local norms (:func:`global_norms`), so every rank uses the same scales.
- **Writing.** Rank 0 alone holds the run lock and writes checkpoints, exports, ``history.csv``, ``tb/``
  and tables; the others wait on a :func:`barrier` at the end.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from typing import Iterable, Iterator

#: torchrun's environment: a process it started has all of these
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched() -> bool:
    """True when this process was started by torchrun with more than one process."""
    return all(k in os.environ for k in TORCHRUN_ENV) and int(os.environ["WORLD_SIZE"]) > 1


def is_distributed() -> bool:
    """True inside :func:`process_group` (a joined process group of more than one process)."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 outside a process group)."""
    import torch.distributed as dist

    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes (1 outside a process group)."""
    import torch.distributed as dist

    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on rank 0 (and in a single process): the one that writes."""
    return rank() == 0


def env_rank() -> int:
    """Rank from torchrun's environment, readable before any process group (0 outside torchrun)."""
    return int(os.environ.get("RANK", "0") or 0)


def local_device(device: str) -> str:
    """Under torchrun a CUDA device becomes ``cuda:LOCAL_RANK`` (one GPU per process); else ``device``."""
    if launched() and device.startswith("cuda"):
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return device


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if is_distributed():
        import torch.distributed as dist

        dist.barrier()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Run the block on rank 0 first, then on the others (e.g. building a cached dataset once)."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


@contextlib.contextmanager
def process_group(device: str = "cpu", timeout_s: float = 600.0) -> Iterator[bool]:
    """Join torchrun's process group for the block (NCCL on CUDA, gloo otherwise) and leave it on
    exit; yields whether the block runs distributed. Outside torchrun (or already joined) it does
    nothing. ``timeout_s``: how long a collective waits for a rank that stopped answering."""
    import torch
    import torch.distributed as dist

    if not launched() or dist.is_initialized():
        yield is_distributed()
        return
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    try:
        yield True
    finally:
        dist.destroy_process_group()


def shard_bounds(n: int, ranks: int | None = None, r: int | None = None) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of a global batch of ``n`` that rank ``r`` of ``ranks`` trains on:
    contiguous, disjoint, sizes differing by at most one (the first ``n % ranks`` ranks get one more)."""
    ranks = world_size() if ranks is None else ranks
    r = rank() if r is None else r
    base, extra = divmod(n, ranks)
    lo = r * base + min(r, extra)
    return lo, lo + base + (1 if r < extra else 0)


def seed_rank(seed: int, step: int = 0) -> None:
    """Seed the global RNGs of rank ``r > 0`` from the run seed (rank 0 keeps the run's own)."""
    r = rank()
    if r == 0:
        return
    from uotisp_lib.config import seed_everything

    seed_everything((seed + 1_000_003 * r + 7919 * step) % 2**63)


def sync_grads(params: Iterable, weight: float) -> None:
    """Replace each gradient by the sum over ranks of ``weight_r * grad_r`` (``weight``: this rank's
    share of the global batch, so the result is the global mean's gradient). One flat all-reduce
    over the parameters that have a gradient (the same ones on every rank: the same code runs)."""
    if not is_distributed():
        return
    import torch
    import torch.distributed as dist

    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads]) * weight
    dist.all_reduce(flat)
    i = 0
    for g in grads:
        g.copy_(flat[i : i + g.numel()].view_as(g))
        i += g.numel()


def broadcast_modules(modules: Iterable) -> None:
    """Copy every parameter and buffer of ``modules`` from rank 0 to the others."""
    if not is_distributed():
        return
    import torch.distributed as dist

    for module in modules:
        for t in module.state_dict().values():
            dist.broadcast(t, 0)


def _comm_device():
    """Where small tensors for a collective live: the current GPU under NCCL, else the CPU."""
    import torch
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_mean(values):
    """Mean over ranks of a tensor (returned; the input is left as it is) or of a float."""
    import torch

    if not is_distributed():
        return values
    import torch.distributed as dist

    t = values.detach().clone() if isinstance(values, torch.Tensor) else torch.tensor(float(values), dtype=torch.float64,
                                                                                          device=_comm_device())
    dist.all_reduce(t)
    t /= world_size()
    return t if isinstance(values, torch.Tensor) else float(t)


def global_norms(norms: list[float], weight: float) -> list[float]:
    """Norms of gradients w.r.t. a whole global batch from each rank's norms w.r.t. its shard:
    ``sqrt(sum_r (weight_r * norm_r)^2)`` (a local mean's gradient is ``1 / weight`` times the global
    mean's restricted to the shard). One all-reduce for all of them."""
    if not is_distributed():
        return list(norms)
    import torch
    import torch.distributed as dist

    t = (torch.tensor(norms, dtype=torch.float64, device=_comm_device()) * weight).pow(2)
    dist.all_reduce(t)
    return t.sqrt().cpu().tolist()


def gather_batch(local):
    """The global batch ``[n, ...]`` from every rank's shard (in rank order) on every rank; only this
    rank's rows carry its autograd graph (the others are detached copies)."""
    if not is_distributed():
        return local
    import torch
    import torch.distributed as dist

    sizes = [torch.zeros(1, dtype=torch.long, device=local.device) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor([local.shape[0]], device=local.device))
    width = max(int(s) for s in sizes)
    pad = torch.zeros((width - local.shape[0], *local.shape[1:]), dtype=local.dtype, device=local.device)
    parts = [torch.empty((width, *local.shape[1:]), dtype=local.dtype, device=local.device) for _ in sizes]
    dist.all_gather(parts, torch.cat([local.detach(), pad]))
    parts = [p[: int(s)] for p, s in zip(parts, sizes)]
    parts[rank()] = local
    return torch.cat(parts)


def sum_dicts(values: dict[str, float]) -> dict[str, float]:
    """Per-key sums over ranks of a dict of floats (keys missing on a rank count 0), in the key
    order of rank 0 followed by keys only other ranks have."""
    if not is_distributed():
        return dict(values)
    import torch.distributed as dist

    gathered: list = [None] * world_size()
    dist.all_gather_object(gathered, dict(values))
    out: dict[str, float] = {}
    for d in gathered:
        for k, v in d.items():
            out[k] = out.get(k, 0.0) + v
    return out
