"""Thread policy: how many intra-op threads torch (and OpenMP / BLAS) may use.

Torch's default is one thread per core the process may run on. When other processes keep those
cores busy, that default oversubscribes them: OpenMP threads spin and wait for each other, and a
command became up to 5.8x slower than itself with one thread on a 2-core machine shared with
another job. So nothing here leaves the count to chance:

- :func:`default_threads` is the policy: ``$OMP_NUM_THREADS`` when the user set it, else the *free*
  cores (the cores this process may use minus the 1-minute load average, at least 1), divided
  among ``workers`` worker processes (one intra-op thread each when the cores are all taken).
- :func:`use_threads` is the one helper that applies it: a context manager that sets
  ``torch.set_num_threads`` and restores the previous value on exit. With ``n=None`` it keeps the
  count of an enclosing :func:`use_threads` (the ``uotisp --threads N`` option), else the default.
  It never imports torch itself: entered before torch is loaded it sets ``OMP_NUM_THREADS`` (and
  the BLAS variables) for the rest of the block, so that a torch imported inside the block starts
  with ``n`` threads, and restores the environment on exit.

Hot paths (:func:`uotisp_lib.inference.render`, :func:`uotisp_lib.stitching.infer_grids`,
:func:`uotisp_lib.matching.build_pair_graph`) run inside ``use_threads()``; every ``uotisp``
subcommand runs inside ``use_threads(args.threads)``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from typing import Iterator

#: Environment variables read by OpenMP and the BLAS libraries when they load.
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")

_local = threading.local()  # .stack: thread counts of the enclosing use_threads blocks


def available_cores() -> int:
    """Cores this process may be scheduled on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def free_cores() -> int:
    """:func:`available_cores` minus the 1-minute load average (rounded), clamped to ``[1, cores]``."""
    cores = available_cores()
    try:
        busy = round(os.getloadavg()[0])
    except (AttributeError, OSError):  # pragma: no cover - no load average on this platform
        busy = 0
    return min(cores, max(1, cores - busy))


def _env_threads() -> int | None:
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) >= 1 else None


def default_threads(workers: int = 1) -> int:
    """Intra-op threads per process: ``$OMP_NUM_THREADS`` if set to a positive integer, else
    ``free_cores() // workers`` (at least 1)."""
    check_threads(workers, "workers")
    return _env_threads() or max(1, free_cores() // workers)


def check_threads(value: object, option: str = "--threads") -> int:
    """``value`` if it is an integer >= 1, else a one-line ValueError naming ``option``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{option} {value}: expected an integer >= 1 (threads per process)")
    return value


def active_threads() -> int | None:
    """The count set by the innermost enclosing :func:`use_threads` of this thread, or ``None``."""
    stack = getattr(_local, "stack", None)
    return stack[-1] if stack else None


@contextlib.contextmanager
def use_threads(n: int | None = None, workers: int = 1) -> Iterator[int]:
    """Run the block with ``n`` torch intra-op threads (restored on exit); yields the count used.

    ``n=None``: the enclosing block's count, else :func:`default_threads` ``(workers)``.
    """
    if n is None:
        n = active_threads() or default_threads(workers)
    n = check_threads(n)
    torch = sys.modules.get("torch")
    saved_env = {k: os.environ.get(k) for k in THREAD_ENV}
    previous = torch.get_num_threads() if torch is not None else None
    if torch is None:  # a torch imported inside the block reads these at import
        os.environ.update({k: str(n) for k in THREAD_ENV})
    elif previous != n:
        torch.set_num_threads(n)
    stack = _local.__dict__.setdefault("stack", [])
    stack.append(n)
    try:
        yield n
    finally:
        stack.pop()
        if previous is not None:
            if torch.get_num_threads() != previous:
                torch.set_num_threads(previous)
        else:
            for k, v in saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
