"""Benchmark: image-level matching per method and the patch-level pair graph at challenge size.

    python benchmarks/bench_matching.py [--quick] [--threads 1] [--device cpu] [--d 2048]

Descriptors are synthetic (solver iterations do depend on content, hence clusters): ``D`` values per image
(default 2048, about a DINOv2 CLS|mean (768) plus histograms (1088) plus a compressed Gram part)
drawn as a mixture of 50 Gaussian clusters, so the plans are not trivial.

Rows:
- image level, N x N images for N in ``--sizes`` (default 250, 500, 1000, 2000, 4000; ``--quick``
  100, 250, 500) and every method (fgw, ot, uot, knn, random), eps 0.05, alpha 0.5;
- patch level: the NTIRE 2026 UP-ISP train size, 13,420 source patches against 13,421 target
  patches, cut into images of 42, 35 and 14 patches in turn (443 images a side), top-10 target
  images per source image, 8 patches kept, patch descriptors 768-D (DINOv2 CLS|mean), 100
  log-domain Sinkhorn iterations (``--quick``: 1,000 source patches); the image level by ``fgw``,
  the default of ``uotisp match``, outside the timing. Descriptors excluded: the whole command at
  this size, descriptors included, is ``bench_match_scale.py``.

Every timed call runs in a fresh subprocess (after one untimed warm-up call on 8 images); "peak
MB" is that process's max RSS above its RSS after imports and data creation (torch runtime
excluded). The cases run round-robin ``--repeats`` times (default 5: every case once, then every
case again, ...), so slow drifts of a shared machine spread over all cases; each row gives min /
median / max seconds over its repeats. The reference of each image-level row is ``knn`` at the same
N (no transport: the cost matrix and a top-k), run in the same round: "x knn" is the median over
rounds of the row's time over that round's knn time. The patch-level solver has its own
reference benchmark (POT's ``ot.solve_batch`` against a hand-written loop: ``bench_solve_batch.py``).
FGW at N > 4000 is skipped unless ``--all`` (its GW gradient costs about N^3 per outer iteration;
4000 takes ~75 s on one core). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

METHODS = ("fgw", "ot", "uot", "knn", "random")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _clustered(n: int, d: int, seed: int, device: str):
    import torch

    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(50, d, generator=g)
    lab = torch.randint(0, 50, (n,), generator=g)
    return (centres[lab] + 0.5 * torch.randn(n, d, generator=g)).to(device)


def _image_case(q, method: str, n: int, d: int, threads: int, device: str) -> None:
    import torch

    from uotisp_lib import matching as M

    torch.set_num_threads(threads)
    warnings.simplefilter("ignore")
    x, y = _clustered(n, d, 0, device), _clustered(n, d, 1, device)
    M.match_images(x[:8], y[:8], method, k=2)  # warm-up (imports, kernels)
    base = _rss_mb()
    t0 = time.perf_counter()
    r = M.match_images(x, y, method, k=10)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    sec = time.perf_counter() - t0
    st = M.collapse_stats(r.topk_idx, n_targets=n)
    q.put({"seconds": sec, "peak_mb": _rss_mb() - base, "max_in": st["max_in_degree"], "entropy": st["usage_entropy"]})


def _patch_sets(n_patches: int, d: int, seed: int, prefix: str):
    import torch

    sizes, left = [], n_patches
    while left > 0:  # challenge mix of 42, 35 and 14 patches per image
        s = min((42, 35, 14)[len(sizes) % 3], left)
        sizes.append(s)
        left -= s
    g = torch.Generator().manual_seed(seed)
    sets = []
    for i, s in enumerate(sizes):
        centre = torch.randn(1, d, generator=g)
        sets.append(([f"{prefix}{i}_{j}" for j in range(s)], centre + 0.7 * torch.randn(s, d, generator=g)))
    return sets


def _patch_case(q, n_src: int, n_tgt: int, d: int, threads: int, device: str) -> None:
    import torch

    from uotisp_lib import matching as M

    torch.set_num_threads(threads)
    warnings.simplefilter("ignore")
    src, tgt = _patch_sets(n_src, d, 0, "raw"), _patch_sets(n_tgt, d, 1, "jpg")
    src = [(s, t.to(device)) for s, t in src]
    tgt = [(s, t.to(device)) for s, t in tgt]
    # image level with fgw, `uotisp match`'s default method (this case used `ot` before: issue 15)
    im = M.match_images(torch.stack([t.mean(0) for _, t in src]), torch.stack([t.mean(0) for _, t in tgt]), "fgw", k=10)
    base = _rss_mb()
    t0 = time.perf_counter()
    g = M.match_patches(src, tgt, im, k_patch=8)
    sec = time.perf_counter() - t0
    st = M.collapse_stats(g)
    q.put({"seconds": sec, "peak_mb": _rss_mb() - base, "max_in": st["max_in_degree"], "entropy": st["usage_entropy"],
           "images": f"{len(src)}x{len(tgt)}", "patches": len(g)})


def _run(target, *args, timeout: float = 900.0) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(q, *args))
    p.start()
    p.join(timeout)
    if p.is_alive():
        p.kill()
        return {"error": f"timeout {timeout:.0f} s"}
    return q.get() if not q.empty() else {"error": f"exit code {p.exitcode}"}


def _mmm(values: list[float], fmt: str) -> str:
    return " / ".join(format(v, fmt) for v in (min(values), statistics.median(values), max(values)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--all", action="store_true", help="also run fgw at N > 4000")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--d", type=int, default=2048)
    ap.add_argument("--sizes", type=int, nargs="*", default=None)
    ap.add_argument("--methods", nargs="*", default=list(METHODS))
    ap.add_argument("--repeats", type=int, default=5, help="rounds over every case (each a fresh process)")
    ap.add_argument("--json", default=None, help="also write the rows as JSON")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error(f"--repeats must be >= 1, got {args.repeats}")
    sizes = args.sizes or ([100, 250, 500] if args.quick else [250, 500, 1000, 2000, 4000])
    methods = list(dict.fromkeys(args.methods + ["knn"]))  # knn: every image row's reference
    n_src, n_tgt = (1000, 1000) if args.quick else (13420, 13421)
    cases = [(f"image {m}", f"{n}x{n}", (_image_case, m, n, args.d, args.threads, args.device))
             for n in sizes for m in methods if not (m == "fgw" and n > 4000 and not args.all)]
    cases.append(("patch graph (fgw images, k=10, top-8)", f"{n_src} src patches",
                  (_patch_case, n_src, n_tgt, 768, args.threads, args.device)))
    runs: dict[tuple[str, str], list[dict]] = {(c, z): [] for c, z, _ in cases}
    for rnd in range(args.repeats):
        for case, size, call in cases:
            r = _run(*call)
            runs[case, size].append(r)
            print(f"... round {rnd + 1}: {case} {size} {r}", file=sys.stderr, flush=True)
    rows = []
    print("| case | size | n | seconds min / median / max | x knn (median) | peak MB (median) | max in-degree | usage entropy |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for case, size, _ in cases:
        rs = runs[case, size]
        ok = [r for r in rs if "error" not in r]
        if not ok:
            print(f"| {case} | {size} | 0 | {rs[0]['error']} | | | | |")
            rows.append({"case": case, "size": size, "runs": rs})
            continue
        ratio = ""
        ref = runs.get(("image knn", size))
        if case.startswith("image ") and ref:
            pairs = [a["seconds"] / b["seconds"] for a, b in zip(rs, ref) if "error" not in a and "error" not in b]
            ratio = f"{statistics.median(pairs):.1f}" if pairs else ""
        secs = [r["seconds"] for r in ok]
        peak = statistics.median(r["peak_mb"] for r in ok)
        print(f"| {case} | {size} | {len(ok)} | {_mmm(secs, '.3f')} | {ratio} | {peak:.0f} | {ok[0]['max_in']} | {ok[0]['entropy']:.3f} |")
        rows.append({"case": case, "size": size, "runs": rs})
    print(f"\nD = {args.d} (image), 768 (patch); threads {args.threads}; device {args.device}; {args.repeats} rounds")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
