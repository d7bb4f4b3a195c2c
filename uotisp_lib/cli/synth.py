"""``uotisp synth``: build the synthetic UP-ISP benchmark of a profile into a folder."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from uotisp_lib.config import PROFILES, get_profile


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("synth", help="build the synthetic UP-ISP benchmark (RAW patches, target JPEGs, ground truth)")
    p.add_argument("--profile", choices=PROFILES, default="smoke", help="sizes from config.get_profile(P).synth")
    p.add_argument("--out", required=True, help="output folder (must be new or empty)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--photos", default=None, help="optional folder of JPEG/PNG photos to add to the scenes")
    p.add_argument("--photos-only", action="store_true", help="build every split from the --photos folder alone")
    p.add_argument("--overwrite", action="store_true", help="replace a previous synthetic benchmark in --out")
    return p


def summary(counts: dict[str, dict[str, int]]) -> str:
    """``train raws=24 jpegs=24 gt=24; val raws=... `` from :func:`uotisp_lib.data.synth.count_files`."""
    return "; ".join(f"{split} " + " ".join(f"{k}={n}" for k, n in kinds.items()) for split, kinds in counts.items())


def run(args: argparse.Namespace) -> int:
    import sys

    from uotisp_lib.cli.common import at_least
    from uotisp_lib.data.synth import build_benchmark, count_files
    from uotisp_lib.io import check_output_path

    if args.photos_only and not args.photos:
        print("uotisp synth: --photos-only needs --photos DIR (a folder of JPEG/PNG photos)", file=sys.stderr)
        return 2
    at_least(args.seed, 0, "--seed")
    check_output_path(args.out, "--out")
    if args.photos and not Path(args.photos).is_dir():
        raise ValueError(f"--photos {args.photos}: not a folder; expected a folder of JPEG/PNG photos")
    t0 = time.perf_counter()
    out = build_benchmark(
        Path(args.out), get_profile(args.profile).synth, args.seed, photo_dir=args.photos, overwrite=args.overwrite,
        photos_only=args.photos_only,
    )
    print(f"synth {args.profile} seed {args.seed}: {summary(count_files(out))} -> {out} ({time.perf_counter() - t0:.1f} s)")
    return 0
