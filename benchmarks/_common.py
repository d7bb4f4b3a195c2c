"""Shared by the benchmark scripts: the standard command line and a synchronised median timer."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch


def standard_parser(doc: str, quick_help: str) -> argparse.ArgumentParser:
    """``--quick``, ``--device auto|cpu|cuda`` and ``--threads N`` (0: torch's default)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    return parser


def apply_threads(threads: int) -> None:
    if threads:
        torch.set_num_threads(threads)


def median_seconds(fn: Callable[[], object], device: str, repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn`` in seconds after ``warmup`` calls (CUDA synchronised around each)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
