"""``uotisp match``: build the semantic pseudo-pair graph of a UP-ISP style dataset.

Reads ``<data>/train/raws`` and ``<data>/train/jpegs`` one image at a time and computes its
descriptors (cached under ``cache_dir()/descriptors`` as soon as computed, keyed by file content
and settings: a rerun or a killed run resumed skips the images already described), matches
images (``--method``) then patches, and writes
``GRAPH.npz`` plus ``GRAPH.csv`` (``source,target,weight,rank``) and ``GRAPH.json`` (diagnostics,
backends, versions). With ground truth (``train/gt``, the synthetic benchmark) it also reports
the colour-statistics pair quality against the random floor.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

# the choices of uotisp_lib.features.BACKENDS and uotisp_lib.matching.METHODS (a test checks they
# agree), written out so that building the parser imports no torch
BACKENDS = ("auto", "dinov2", "efficientnet_lite0")
METHODS = ("fgw", "ot", "uot", "knn", "random")


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``match`` on a subparsers object."""
    p = sub.add_parser("match", help="pseudo-pair RAW patches with target sRGB patches (image + patch level OT)")
    p.add_argument("--data", required=True, help="UP-ISP style folder with train/raws and train/jpegs")
    p.add_argument("--out", required=True, help="output GRAPH.npz (a .csv and .json are written beside it)")
    p.add_argument("--method", choices=METHODS, default="fgw", help="image-level matching (default fgw)")
    p.add_argument("--k", type=int, default=10, help="target images kept per source image")
    p.add_argument("--k-patch", type=int, default=8, help="target patches kept per source patch")
    p.add_argument("--backend", choices=BACKENDS, default="auto", help="descriptor backbone")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the descriptor cache")
    return p


def run(args: argparse.Namespace) -> int:
    from uotisp_lib.cli.common import at_least, device
    from uotisp_lib.config import dumps, run_metadata, seed_everything
    from uotisp_lib.io import atomic_write_text, check_output_path, clean_stale_temps
    from uotisp_lib.matching import build_pair_graph, check_ground_truth, pair_quality

    out = Path(args.out)
    if out.suffix != ".npz":
        raise ValueError(f"{out}: --out must name a .npz file")
    check_output_path(out, "--out", kind="file")
    for name in (out.name, out.with_suffix(".csv").name, out.with_suffix(".json").name):
        clean_stale_temps(out.parent, name)  # half-written files of a killed run
    at_least(args.k, 1, "--k")
    at_least(args.k_patch, 1, "--k-patch")
    at_least(args.seed, 0, "--seed")
    data = Path(args.data)
    if not data.is_dir():
        raise ValueError(f"--data {data}: {'is not a folder' if data.exists() else 'does not exist'}; expected a folder with train/raws and train/jpegs")
    dev = device(args.device)
    has_gt = (data / "train" / "gt").is_dir()
    if has_gt:
        check_ground_truth(data)  # before the long work: every ground truth the size of its RAW
    seed_everything(args.seed)
    from uotisp_lib.allocator import keep_freed_memory

    keep_freed_memory()  # the descriptor loop reuses its freed activations instead of page-faulting
    t0 = time.perf_counter()
    graph, diag = build_pair_graph(
        Path(args.data), args.method, k=args.k, k_patch=args.k_patch, backend=args.backend, seed=args.seed,
        device=dev, cache=None if args.no_cache else "default",
    )
    diag.pop("image_match")
    if has_gt:
        diag["pair_quality"] = pair_quality(Path(args.data), graph)
    graph.save(out)
    atomic_write_text(out.with_suffix(".json"), dumps(run_metadata(match=diag)))
    q = diag.get("pair_quality")
    qtxt = f"; quality {q['quality']:.4f} vs random {q['random_floor']:.4f}" if q else ""
    print(
        f"match {args.method} ({diag['backends'].get('backbone')}): {diag['n_source_patches']} source patches, "
        f"max in-degree {diag['patch_level']['max_in_degree']}, usage entropy "
        f"{diag['patch_level']['usage_entropy']:.3f}{qtxt} -> {out} ({time.perf_counter() - t0:.1f} s)"
    )
    return 0
