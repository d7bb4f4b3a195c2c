"""Shared by the benchmark scripts: the standard command line, synchronised timers (one function,
or two interleaved A B A B ...), min / median / max formatting and the process's peak RSS."""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from collections.abc import Callable, Sequence

import torch


def standard_parser(doc: str, quick_help: str) -> argparse.ArgumentParser:
    """``--quick``, ``--device auto|cpu|cuda`` and ``--threads N`` (0: torch's default)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    return parser


def seconds(fn: Callable[[], object], device: str, repeats: int, warmup: int = 1) -> list[float]:
    """Wall times of ``repeats`` calls of ``fn`` after ``warmup`` (CUDA synchronised)."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t0)
    return out


def interleaved(old: Callable[[], object], new: Callable[[], object], device: str, repeats: int) -> tuple[list[float], list[float]]:
    """Times of ``old`` and ``new`` run in turn (old, new, old, new, ...) after one warm-up each."""
    old(), new()
    t_old, t_new = [], []
    for _ in range(repeats):
        t_old += seconds(old, device, 1, 0)
        t_new += seconds(new, device, 1, 0)
    return t_old, t_new


def mmm(values: Sequence[float], fmt: str = ".2f") -> str:
    """``min / median / max`` of ``values``, each formatted with ``fmt``."""
    return " / ".join(format(v, fmt) for v in (min(values), statistics.median(values), max(values)))


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (``getrusage``; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_average() -> float:
    """The 1-minute load average now (what the README quotes beside each table)."""
    return os.getloadavg()[0]
