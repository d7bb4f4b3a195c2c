"""Benchmark: ``uotisp match`` at the NTIRE 2026 UP-ISP train size, timed as a whole process.

    python benchmarks/bench_match_scale.py --data DIR [--scale 1.0] [--patch 64] [--repeats 1]
        [--no-cache-run] [--cached-run] [--python PY]

Writes (once; reused when complete) a synthetic UP-ISP folder ``DIR/train/{raws,jpegs}`` with
13,420 RAW and 13,421 JPEG patches at ``--scale 1`` (443 images a side, grids of 42, 35 and 14
patches in turn, like the challenge's 6x7 / 5x7 / 2x7 layouts; ``--scale 0.1``: 1,342 and
1,343). Patches are ``--patch`` packed RAW pixels a side (sRGB twice that); every descriptor
backbone resizes its input to 224 px, so the per-patch network cost does not depend on it (the
loading, preprocessing and stitching costs do). Content: smooth random colour fields, one per
image, cut into its grid.

Then runs ``uotisp match --data DIR --out ...`` with its default options (the way a user
invokes it; threads from the environment, e.g. ``OMP_NUM_THREADS``) under ``/usr/bin/time -v``:
``--repeats`` cold runs, each with an empty descriptor cache (``$UOTISP_CACHE`` set to a fresh
folder) and, with ``--cached-run``, each followed by a rerun on the cache it wrote (resume).
Prints a Markdown table: wall, user+sys CPU, peak RSS of the process, minor / major page
faults, min / median / max over the repeats. The "before" rows of ``benchmarks/README.md`` ran
this script with ``PYTHONPATH`` pointing at an export of the earlier commit.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

N_SRC, N_TGT = 13420, 13421
GRIDS = ((6, 7), (5, 7), (2, 7))  # 42, 35, 14 patches


def grid_sizes(n_patches: int) -> list[tuple[int, int]]:
    """Grids in turn 6x7, 5x7, 2x7 until ``n_patches``; the last one trimmed to a 1-row grid."""
    out, left = [], n_patches
    while left > 0:
        r, c = GRIDS[len(out) % 3]
        if r * c > left:
            r, c = 1, left
        out.append((r, c))
        left -= r * c
    return out


def _field(rng, h: int, w: int):
    """Smooth random colour field ``h x w x 3`` in [0,1] (bilinear upsampling of a 4x4 grid + texture)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    base = torch.from_numpy(rng.random((1, 3, 4, 4), dtype=np.float32))
    img = F.interpolate(base, size=(h, w), mode="bilinear", align_corners=True)[0]
    img = img * rng.uniform(0.3, 1.0, size=(3, 1, 1)).astype(np.float32)
    img += 0.05 * torch.from_numpy(rng.standard_normal((3, h, w), dtype=np.float32))
    return img.clamp(0, 1).permute(1, 2, 0).numpy()


def make_dataset(root: Path, scale: float, patch: int, seed: int = 0) -> Path:
    """Write the synthetic folder (skipped when ``root/.complete`` names the same settings)."""
    import numpy as np

    from uotisp_lib import io as uio

    tag = f"scale={scale} patch={patch} seed={seed}\n"
    done = root / ".complete"
    if done.is_file() and done.read_text() == tag:
        return root
    rng = np.random.default_rng(seed)
    for kind, n, prefix in (("raws", round(N_SRC * scale), "r"), ("jpegs", round(N_TGT * scale), "j")):
        folder = root / "train" / kind
        folder.mkdir(parents=True, exist_ok=True)
        for i, (rows, cols) in enumerate(grid_sizes(n)):
            side = patch if kind == "raws" else 2 * patch
            img = _field(rng, rows * side, cols * side)
            for r in range(rows):
                for c in range(cols):
                    p = img[r * side : (r + 1) * side, c * side : (c + 1) * side]
                    path = folder / f"{prefix}{i}_{r * cols + c}"
                    if kind == "raws":  # packed [R, Gr, Gb, B], 10 bit, roughly linear
                        lin = p**2.2 * 900 + 60
                        raw = np.stack([lin[..., 0], lin[..., 1], lin[..., 1], lin[..., 2]], -1)
                        uio.save_raw(path.with_suffix(".npy"), raw.round().astype(np.uint16))
                    else:
                        uio.save_image(path.with_suffix(".jpg"), (p * 255).round().astype(np.uint8), quality=90)
    done.write_text(tag)
    return root


def timed(cmd: list[str], env: dict[str, str]) -> dict[str, float]:
    """Run ``cmd`` under ``/usr/bin/time -v``: wall s, CPU s, peak RSS MiB, minor/major faults."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        t0 = time.perf_counter()
        proc = subprocess.run(["/usr/bin/time", "-v", "-o", tf.name, *cmd], env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        rep = Path(tf.name).read_text()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    get = lambda key: float(re.search(rf"{re.escape(key)}: ([0-9.]+)", rep).group(1))  # noqa: E731
    return {
        "wall": wall,
        "cpu": get("User time (seconds)") + get("System time (seconds)"),
        "sys": get("System time (seconds)"),
        "rss_mib": get("Maximum resident set size (kbytes)") / 1024.0,
        "minor": get("Minor (reclaiming a frame) page faults"),
        "major": get("Major (requiring I/O) page faults"),
        "stdout": proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "",
    }


def _fmt(vals: list[float], f: str) -> str:
    if len(vals) == 1:
        return format(vals[0], f)
    return f"{format(min(vals), f)} / {format(statistics.median(vals), f)} / {format(max(vals), f)}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="folder for the synthetic dataset (created once, reused)")
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the challenge's patch counts")
    ap.add_argument("--patch", type=int, default=64, help="packed RAW patch side (sRGB: twice that)")
    ap.add_argument("--repeats", type=int, default=1, help="cold runs (each with an empty descriptor cache)")
    ap.add_argument("--cached-run", action="store_true", help="after each cold run, rerun it on the cache it wrote")
    ap.add_argument("--python", default=sys.executable)
    args = ap.parse_args(argv)
    if args.scale <= 0 or args.patch < 8:
        print("bench_match_scale: --scale must be > 0 and --patch >= 8", file=sys.stderr)
        return 2
    data = make_dataset(Path(args.data), args.scale, args.patch)
    runs: dict[str, list[dict]] = {"cold: empty descriptor cache": [], "rerun: cache full (resume)": []}
    with tempfile.TemporaryDirectory() as tmp:
        base = [args.python, "-m", "uotisp_lib.cli", "match", "--data", str(data), "--out", str(Path(tmp) / "g.npz")]
        for r in range(args.repeats):  # each cold run with its own empty cache; the defaults otherwise
            env = dict(os.environ, UOTISP_CACHE=str(Path(tmp) / f"cache{r}"))
            runs["cold: empty descriptor cache"].append(timed(base, env))
            print(f"... cold {r}: {runs['cold: empty descriptor cache'][-1]}", file=sys.stderr, flush=True)
            if args.cached_run:
                runs["rerun: cache full (resume)"].append(timed(base, env))
    runs = {k: v for k, v in runs.items() if v}
    n_src, n_tgt = round(N_SRC * args.scale), round(N_TGT * args.scale)
    load = os.getloadavg()[0]
    print(f"\n`uotisp match --data D --out G.npz` (defaults), {n_src} RAW + {n_tgt} JPEG patches, "
          f"RAW {args.patch}x{args.patch}x4; 1-min load after the runs {load:.1f}\n")
    print("| run | n | wall s | CPU s (user+sys) | sys s | peak RSS MiB | minor faults | major faults |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, rs in runs.items():
        col = lambda k: [r[k] for r in rs]  # noqa: E731
        print(f"| {name} | {len(rs)} | {_fmt(col('wall'), '.1f')} | {_fmt(col('cpu'), '.1f')} | {_fmt(col('sys'), '.1f')} | "
              f"{_fmt(col('rss_mib'), '.0f')} | {_fmt(col('minor'), '.3g')} | {_fmt(col('major'), '.3g')} |")
    print(f"\nlast run: {rs[-1]['stdout']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
