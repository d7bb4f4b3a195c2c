"""Benchmark: the hand-written batched Sinkhorn of the patch matching against POT's ``ot.solve_batch``.

``match_patches`` used the hand-written solver (kept here as :func:`hand_sinkhorn_log`) until this
benchmark showed ``ot.solve_batch`` as fast or faster at the matching's sizes (issue 11); it now
calls :func:`uotisp_lib.matching.solve_batch_sinkhorn`.

    python benchmarks/bench_solve_batch.py [--quick] [--threads 1] [--repeats 5]

The problems are the ones :func:`uotisp_lib.matching.match_patches` solves, recorded from its own
calls on synthetic descriptors (clustered, as in ``bench_matching.py``): per source image, its
patches against all patches of its top-k target images, padded into batches of at most
``max_batch_elems`` values, cost = squared distance of L2-normalised descriptors over its row mean.
Sizes of each profile (``uotisp_lib.config``): ``smoke`` 4 images a side of 2x3, 3x2 and 2x2
patches, k = 3; ``cpu`` 24 images a side of 2x7, 7x2, 5x7, 7x5, 6x7 and 7x6 patches, k = 5;
``full`` 120 images a side of the challenge grids, k = 10; ``ntire`` the challenge train size
(13,420 source patches, 443 images a side, k = 10; skipped with ``--quick``). Descriptor sizes:
1280 (efficientnet_lite0, the ``auto`` backend without DINOv2 weights) for smoke and cpu, 768
(DINOv2) for full and ntire.

Both solvers get the same batches, entropy ``eps`` = 0.05 and 100 log-domain iterations (the
matching's settings); ``ot.solve_batch`` takes the padding as zero weights (``tol=0``: no early
stop). Each repeat times one pass over all batches of a case with each solver in turn (A B A B
...); "ms per call" is the median over the repeats of the pass's time divided by its batches, and
the ratio is the median of the per-repeat ratios. Differences: the largest absolute difference of
the plans over every entry, of the transport costs ``<P, C>`` per problem, and the largest
marginal error of each solver. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from uotisp_lib import matching as M  # noqa: E402
from uotisp_lib.config import CHALLENGE_LAYOUTS, get_profile  # noqa: E402

EPS, N_ITER = 0.05, 100


def hand_sinkhorn_log(cost: torch.Tensor, mask_a: torch.Tensor, mask_b: torch.Tensor, eps: float, n_iter: int = 100) -> torch.Tensor:
    """The hand-written batched log-domain Sinkhorn that ``match_patches`` used before
    ``ot.solve_batch`` (``matching.batched_sinkhorn_log`` up to issue 11): padding masked to -inf
    in the kernel and the potentials, uniform marginals over the valid entries."""
    dt = cost.dtype
    neg = torch.tensor(-torch.inf, dtype=dt, device=cost.device)
    log_a = torch.where(mask_a, -torch.log(mask_a.sum(1, keepdim=True).to(dt)), neg)
    log_b = torch.where(mask_b, -torch.log(mask_b.sum(1, keepdim=True).to(dt)), neg)
    valid = mask_a[:, :, None] & mask_b[:, None, :]
    k = torch.where(valid, -cost / eps, neg)
    f = torch.zeros_like(log_a)
    g = torch.zeros_like(log_b)
    for _ in range(n_iter):
        f = torch.where(mask_a, log_a - torch.logsumexp(k + g[:, None, :], dim=2), neg)
        g = torch.where(mask_b, log_b - torch.logsumexp(k + f[:, :, None], dim=1), neg)
    return torch.exp(k + f[:, :, None] + g[:, None, :])


def _grid_sizes(layouts) -> list[int]:
    return [r * c for r, c in layouts]


CASES = {
    # name: (patches per image in turn, images a side, k images, descriptor size)
    "smoke": (_grid_sizes(get_profile("smoke").synth.layouts), get_profile("smoke").synth.n_train_raw,
              get_profile("smoke").match.k_images, 1280),
    "cpu": (_grid_sizes(get_profile("cpu").synth.layouts), get_profile("cpu").synth.n_train_raw,
            get_profile("cpu").match.k_images, 1280),
    "full": (_grid_sizes(get_profile("full").synth.layouts), get_profile("full").synth.n_train_raw,
             get_profile("full").match.k_images, 768),
    "ntire": ([42, 35, 14], 443, 10, 768),
}


def _patch_sets(sizes: list[int], n_img: int, d: int, seed: int, prefix: str):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(50, d, generator=g)
    sets = []
    for i in range(n_img):
        s = sizes[i % len(sizes)]
        c = centres[torch.randint(0, 50, (1,), generator=g)]
        sets.append(([f"{prefix}{i}_{j}" for j in range(s)], c + 0.7 * torch.randn(s, d, generator=g)))
    return sets


def record_batches(case: str) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The ``(cost, mask_a, mask_b)`` batches that :func:`match_patches` solves for ``case``."""
    sizes, n_img, k, d = CASES[case]
    src, tgt = _patch_sets(sizes, n_img, d, 0, "raw"), _patch_sets(sizes, n_img, d, 1, "jpg")
    im = M.match_images(torch.stack([t.mean(0) for _, t in src]), torch.stack([t.mean(0) for _, t in tgt]), "ot", k=k)
    seen: list = []
    solver = M.solve_batch_sinkhorn

    def recorder(cost, mask_a, mask_b, eps, n_iter=100):
        seen.append((cost.clone(), mask_a.clone(), mask_b.clone()))
        return solver(cost, mask_a, mask_b, eps, n_iter)

    M.solve_batch_sinkhorn = recorder
    try:
        M.match_patches(src, tgt, im, k_patch=8, eps=EPS, n_iter=N_ITER)
    finally:
        M.solve_batch_sinkhorn = solver
    return seen


def _pass(fn, batches) -> tuple[float, list[torch.Tensor]]:
    t0 = time.perf_counter()
    plans = [fn(c, a, b, EPS, N_ITER) for c, a, b in batches]
    return time.perf_counter() - t0, plans


def _marginal_error(plan: torch.Tensor, mask_a: torch.Tensor, mask_b: torch.Tensor) -> float:
    a = mask_a.to(plan.dtype) / mask_a.sum(1, keepdim=True)
    b = mask_b.to(plan.dtype) / mask_b.sum(1, keepdim=True)
    return max(float((plan.sum(2) - a).abs().max()), float((plan.sum(1) - b).abs().max()))


def run_case(case: str, repeats: int) -> dict:
    batches = record_batches(case)
    solvers = {"hand": hand_sinkhorn_log, "pot": M.solve_batch_sinkhorn}
    for fn in solvers.values():  # warm-up
        _pass(fn, batches[:1])
    times: dict[str, list[float]] = {"hand": [], "pot": []}
    plans: dict[str, list[torch.Tensor]] = {}
    for _ in range(repeats):
        for name, fn in solvers.items():
            sec, plans[name] = _pass(fn, batches)
            times[name].append(sec)
    ratios = [p / h for h, p in zip(times["hand"], times["pot"])]
    plan_diff = max(float((p - q).abs().max()) for p, q in zip(plans["hand"], plans["pot"]))
    cost_diff = max(float(((p - q) * c).sum((1, 2)).abs().max()) for p, q, (c, _, _) in zip(plans["hand"], plans["pot"], batches))
    cost_max = max(float((p * c).sum((1, 2)).abs().max()) for p, (c, _, _) in zip(plans["hand"], batches))
    marg = {n: max(_marginal_error(p, a, b) for p, (_, a, b) in zip(plans[n], batches)) for n in plans}
    shapes = [tuple(c.shape) for c, _, _ in batches]
    calls = len(batches)
    return {
        "case": case,
        "calls": calls,
        "problems": sum(s[0] for s in shapes),
        "shape": f"{max(s[0] for s in shapes)} x {max(s[1] for s in shapes)} x {max(s[2] for s in shapes)}",
        "hand_ms": [1e3 * t / calls for t in times["hand"]],
        "pot_ms": [1e3 * t / calls for t in times["pot"]],
        "ratio": statistics.median(ratios),
        "ratio_range": (min(ratios), max(ratios)),
        "plan_diff": plan_diff,
        "cost_diff": cost_diff,
        "cost_max": cost_max,
        "marg_hand": marg["hand"],
        "marg_pot": marg["pot"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke, cpu and full only, 3 repeats")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cases", nargs="*", default=None, choices=list(CASES))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    import ot

    repeats = 3 if args.quick and args.repeats == 5 else args.repeats
    cases = args.cases or [c for c in CASES if not (args.quick and c == "ntire")]
    rows = []
    for case in cases:
        rows.append(run_case(case, repeats))
        print(f"... {rows[-1]['case']} done", file=sys.stderr, flush=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"POT {ot.__version__}, torch {torch.__version__}, float64, cpu, threads {args.threads}, eps {EPS}, "
          f"{N_ITER} iterations, {repeats} interleaved repeats; 1-minute load average at the end {load:.1f}\n")
    print("| case | calls | problems | largest batch G x n x m | hand-written ms/call min / med / max | "
          "ot.solve_batch ms/call min / med / max | ratio solve_batch / hand (median, range) | "
          "max plan diff | max cost diff (largest cost) | marginal error hand / solve_batch |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        h, p = r["hand_ms"], r["pot_ms"]
        print(f"| {r['case']} | {r['calls']} | {r['problems']} | {r['shape']} "
              f"| {min(h):.2f} / {statistics.median(h):.2f} / {max(h):.2f} "
              f"| {min(p):.2f} / {statistics.median(p):.2f} / {max(p):.2f} "
              f"| {r['ratio']:.2f} ({r['ratio_range'][0]:.2f} to {r['ratio_range'][1]:.2f}) "
              f"| {r['plan_diff']:.1e} | {r['cost_diff']:.1e} ({r['cost_max']:.3g}) "
              f"| {r['marg_hand']:.1e} / {r['marg_pot']:.1e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
