"""Benchmark: grid inference over all factor pairs vs merely loading the RAW patch files.

    python benchmarks/bench_stitching.py [--quick] [--data DIR] [--n-images 200] [--baseline TREE]
    python benchmarks/bench_stitching.py --library [--threads 1] ...
    python benchmarks/bench_stitching.py --read-ways N [--data DIR] [--repeats 5]

Default (whole command, issue 15 part 6): times ``uotisp stitch --input DIR --output OUT
--layouts-only`` as a user runs it (a new process, default options, start-up included) against
its reference, the *load-only pass*: a process that ``np.load``s every ``.npy`` file of ``DIR``
(Python + NumPy start-up included), and, with ``--baseline TREE``, the same command run from
another source tree (e.g. ``git archive`` of the previous commit; ``PYTHONPATH=TREE``). The
commands run in turn (L A [B] L A [B] ...) ``--repeats`` times (>= 5), warm (every file read
before) and then cold (every file evicted from the page cache with
``posix_fadvise(POSIX_FADV_DONTNEED)`` before each run; no root needed). Per run: wall seconds,
user + system CPU and peak RSS of the child (``os.wait4``); the rate ratio (load-only wall /
command wall) is taken pair by pair. ``% correct``: grids in ``layouts.csv`` equal to the truth.

``--library``: the older in-process rows described below. ``--read-ways N``: microseconds per
file of five ways to read the border strips of the first ``N`` files from a warm cache (np.load,
mmap, mmap with MAP_POPULATE, one whole-file preadv into a reused buffer, one preadv scattering
only the row seams), in turn, each checked to give np.load's strips.

Builds (once; reused when ``DIR/meta.json`` matches) a UP-ISP-like set in ``--data`` (default: a
temporary folder, removed afterwards): ``<imageid>_<idx>.npy`` packed RAW patches (uint16
256x256x4, [R, Gr, Gb, B], 10-bit) of images with 42, 35 or 14 patches (6x7, 7x6, 5x7, 7x5, 2x7,
7x2, uniformly mixed). Content is natural-ish, not noise: random crops of scikit-image's bundled
photos (and a smooth random field) resized to the full-resolution mosaic, RGGB-sampled, scaled by
camera-like channel gains, with shot + read noise, quantised to 10 bit. 200 images are about 6,000
files and 3 GB; the challenge's ~1,000 images (~30k files, ~15 GB) are too much for a shared disk,
and the rate per image does not depend on the count once the page cache is warm.

Every file is read once before timing (warm page cache, so "load" measures np.load, not the disk).
Rows: load-only rates (full ``np.load``; ``np.load(mmap_mode="r")`` touching only the border
strips; the library's fast path :func:`uotisp_lib.io.read_raw_strips`, which mmaps each file,
checks its header bytes against the first file's and copies only the border strips), then :func:`uotisp_lib.stitching.infer_grids` per image *including* that loading, for
our ``evidence`` ranking and the Borelli ``mean`` one, with % correct. Torch runs on
``--threads`` threads (1: the per-core number). Peak memory of a separate, untimed pass:
tracemalloc peak (NumPy and Python allocations) and the process's max RSS (includes the torch
runtime). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import csv
import multiprocessing as mp
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from uotisp_lib import io as uio  # noqa: E402
from uotisp_lib.config import CHALLENGE_LAYOUTS  # noqa: E402
from uotisp_lib.grid_scoring import DEFAULT_BORDER  # noqa: E402

# torch and uotisp_lib.stitching are imported by _import_torch() only (set generation runs in a forked
# child; library mode): the whole-command mode's process stays small, and a child's peak RSS
# (os.wait4) cannot read below the peak of the process that started it.
torch = F = st = None


def _import_torch() -> None:
    global torch, F, st
    import torch
    import torch.nn.functional as F

    from uotisp_lib import stitching as st

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "cat", "immunohistochemistry")
RAW_MAX = 1023
GAINS = (0.55, 1.0, 1.0, 0.7)  # camera-like R, Gr, Gb, B response (no white balance applied)


def _photo(name: str) -> torch.Tensor:
    from skimage import data

    return torch.from_numpy(getattr(data, name)()).permute(2, 0, 1).float() / 255


def _scene(photo: torch.Tensor | None, height: int, width: int, rng: np.random.Generator) -> torch.Tensor:
    """[3, height, width]: a random crop of ``photo`` with the target aspect, resized; or, for
    ``photo=None``, a smooth random colour field."""
    if photo is None:
        small = torch.from_numpy(rng.standard_normal((1, 3, height // 256 + 3, width // 256 + 3))).float()
        x = F.interpolate(small, size=(height, width), mode="bicubic", align_corners=False)[0]
        return (x - x.min()) / (x.max() - x.min())
    ph, pw = photo.shape[1:]
    ch = int(min(ph, pw * height / width) * rng.uniform(0.4, 1.0))
    cw = int(ch * width / height)
    y, x = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
    crop = photo[None, :, y : y + ch, x : x + cw]
    return F.interpolate(crop, size=(height, width), mode="bilinear", align_corners=False)[0].clamp(0, 1)


def _raw_mosaic(rgb: torch.Tensor, rng: np.random.Generator) -> np.ndarray:
    """RGGB-sample rgb [3, 2h, 2w] -> packed uint16 [h, w, 4] with gains, shot + read noise, 10 bit."""
    x = torch.stack([rgb[0, 0::2, 0::2], rgb[1, 0::2, 1::2], rgb[1, 1::2, 0::2], rgb[2, 1::2, 1::2]])
    x = x * torch.tensor(GAINS).view(4, 1, 1) * rng.uniform(0.4, 0.95)  # exposure
    g = torch.Generator().manual_seed(int(rng.integers(2**31)))
    x = x + torch.randn(x.shape, generator=g) * torch.sqrt(x * 2.0 / RAW_MAX + (2.0 / RAW_MAX) ** 2)
    return np.rint(x.clamp(0, 1).permute(1, 2, 0).numpy() * RAW_MAX).astype(np.uint16)


def build_set(root: Path, n_images: int, patch: int, seed: int) -> dict[str, list[int]]:
    """Write the patch set into ``root`` (reused if ``meta.json`` matches); return {image_id: [R, C]}."""
    meta_path = root / "meta.json"
    want = {"n_images": n_images, "patch": patch, "seed": seed, "version": 1}
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("params") == want:
            return meta["layouts"]
    _import_torch()
    root.mkdir(parents=True, exist_ok=True)
    for old in root.glob("*.npy"):
        old.unlink()
    rng = np.random.default_rng(seed)
    photos = [_photo(n) for n in PHOTOS] + [None]
    layouts: dict[str, list[int]] = {}
    for i in range(n_images):
        rows, cols = CHALLENGE_LAYOUTS[int(rng.integers(len(CHALLENGE_LAYOUTS)))]
        src = photos[int(rng.integers(len(photos)))]
        mosaic = _raw_mosaic(_scene(src, 2 * rows * patch, 2 * cols * patch, rng), rng)
        image_id = f"{i:05d}"
        for r in range(rows):
            for c in range(cols):
                tile = mosaic[r * patch : (r + 1) * patch, c * patch : (c + 1) * patch]
                np.save(root / f"{image_id}_{r * cols + c}.npy", np.ascontiguousarray(tile))
        layouts[image_id] = [rows, cols]
    meta_path.write_text(json.dumps({"params": want, "layouts": layouts}))
    return layouts


def _paths(root: Path, layouts: dict[str, list[int]]) -> list[list[Path]]:
    return [[root / f"{k}_{i}.npy" for i in range(r * c)] for k, (r, c) in layouts.items()]


def read_strips(paths: list[Path], kind: str, b: int = DEFAULT_BORDER) -> tuple[np.ndarray, np.ndarray]:
    """Baseline strip reads through ``np.load`` (kind ``np.load`` or ``np.load-mmap``): the four border
    strips (all 4 channels) of one image's patch files, ``lr [2, N, h, b, 4]`` (right, left) and
    ``bt [2, N, b, w, 4]`` (bottom, top), uint16. The fast path is the library's
    :func:`uotisp_lib.io.read_raw_strips`."""
    mode = "r" if kind == "np.load-mmap" else None
    h, w = np.load(paths[0], mmap_mode="r").shape[:2]
    lr, bt = np.empty((2, len(paths), h, b, 4), np.uint16), np.empty((2, len(paths), b, w, 4), np.uint16)
    for k, p in enumerate(paths):
        a = np.load(p, mmap_mode=mode)
        lr[0, k], lr[1, k] = a[:, -b:], a[:, :b]
        bt[0, k], bt[1, k] = a[-b:], a[:b]
        del a
    return lr, bt


def to_strips(lr: np.ndarray, bt: np.ndarray) -> st.Strips:
    """Score-map strips from :func:`read_strips` output, via the library's conversion."""
    raw = uio.RawStrips(lr[0], lr[1], bt[0], bt[1], (lr.shape[2], bt.shape[3], 4), ())
    return st.strips_from_raw(raw)


def load_only(images: list[list[Path]], kind: str) -> None:
    """Reading alone: full ``np.load`` of every file, or the strip reads of :func:`read_strips`."""
    if kind == "np.load-full":
        for paths in images:
            for p in paths:
                np.load(p)
    elif kind == "mmap":
        for paths in images:
            uio.read_raw_strips(paths, st.DEFAULT_BORDER)
    else:
        for paths in images:
            read_strips(paths, kind)


def infer_all(images: list[list[Path]], kind: str, method: str) -> list[tuple[int, int]]:
    """Grid of every image, one at a time, reading its strips with ``kind``
    (``np.load-full``: each file fully loaded by ``np.load``)."""
    reader = "np.load" if kind == "np.load-full" else kind
    out = []
    for paths in images:
        if kind == "mmap":
            g = st.infer_grid_from_files(paths, method=method)
        else:
            g = st.infer_grids(to_strips(*read_strips(paths, reader)), method=method)[0]
        out.append((g.rows, g.cols))
    return out


def infer_batched(images: list[list[Path]], method: str, chunk: int = 16) -> list[tuple[int, int]]:
    """Like :func:`infer_all` (library fast path) but images with the same N are scored ``chunk`` at
    a time (:func:`uotisp_lib.stitching.infer_grids_from_files`)."""
    out: list[tuple[int, int]] = [(0, 0)] * len(images)
    by_n: dict[int, list[int]] = {}
    for i, paths in enumerate(images):
        by_n.setdefault(len(paths), []).append(i)
    for idx in by_n.values():
        for start in range(0, len(idx), chunk):
            part = idx[start : start + chunk]
            for i, g in zip(part, st.infer_grids_from_files([images[i] for i in part], method=method)):
                out[i] = (g.rows, g.cols)
    return out


def _best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best



# --------------------------------------------------------------------------------------------------
# Whole command against the load-only pass (default mode)
# --------------------------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
#: The reference: a process that fully loads every patch file of the folder, in name order.
LOAD_ONLY = (
    "import os, sys, numpy as np\n"
    "d = sys.argv[1]\n"
    "for e in sorted(os.listdir(d)):\n"
    "    if e.endswith('.npy'):\n"
    "        np.load(os.path.join(d, e))\n"
)


def evict(paths: list[Path]) -> None:
    """Drop ``paths`` from the page cache (``POSIX_FADV_DONTNEED``; clean pages only, no root needed)."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def warm(paths: list[Path]) -> None:
    """Read every file once (page cache warm)."""
    for p in paths:
        with open(p, "rb", buffering=0) as fh:
            while fh.read(1 << 20):
                pass


def run_process(argv: list[str], env: dict[str, str]) -> tuple[float, float, float, int]:
    """Run ``argv`` to completion -> (wall s, user + system s, peak RSS MiB, exit code)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{argv[:4]}... failed with exit code {proc.returncode}: {err.strip()[-500:]}")
    return wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024, proc.returncode


def _env(tree: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree)
    return env


def grid_accuracy(csv_path: Path, truth: dict[str, list[int]]) -> float:
    """% of the images of ``truth`` whose ``layouts.csv`` row has the true rows and cols."""
    with open(csv_path, newline="") as fh:
        got = {r["image_id"]: (r["rows"], r["cols"]) for r in csv.DictReader(fh)}
    ok = sum(got.get(k) == (str(r), str(c)) for k, (r, c) in truth.items())
    return 100.0 * ok / len(truth)


def _stats(xs: list[float], fmt: str) -> str:
    return " | ".join(format(v, fmt) for v in (min(xs), statistics.median(xs), max(xs)))


def main_cli(args: argparse.Namespace, root: Path, layouts: dict[str, list[int]]) -> None:
    """Whole-process table: load-only pass (L), this tree's command (A), ``--baseline`` tree's (B)."""
    files = sorted(root.glob("*.npy"))
    out = Path(tempfile.mkdtemp(prefix="bench_stitch_out_", dir=root.parent))
    py = sys.executable
    cmds = {"L": ([py, "-c", LOAD_ONLY, str(root)], _env(ROOT))}

    def stitch(tag: str, tree: Path):
        argv = [py, "-m", "uotisp_lib.cli", "stitch", "--input", str(root), "--output", str(out / tag)]
        argv.append("--layouts-only")
        return argv, _env(tree)

    cmds["A"] = stitch("A", ROOT)
    if args.baseline is not None:
        cmds["B"] = stitch("B", args.baseline.resolve())
    names = {"L": "load-only pass (np.load every file)", "A": "uotisp stitch --layouts-only (this tree)",
             "B": f"uotisp stitch --layouts-only (baseline {args.baseline})"}
    n_files, size_gb = len(files), sum(p.stat().st_size for p in files) / 1e9
    print(f"## Whole command vs load-only pass ({len(layouts)} images, {n_files} files, {size_gb:.2f} GB, "
          f"patches {args.patch}x{args.patch}x4 uint16; {args.repeats} interleaved repetitions)\n")
    mix = {f"{r}x{c}": list(map(tuple, layouts.values())).count((r, c)) for r, c in CHALLENGE_LAYOUTS}
    print(f"Layout mix: {mix}. Load average before: {os.getloadavg()[0]:.2f}.\n")
    try:
        for cache in ("warm", "cold"):
            res: dict[str, list[tuple[float, float, float, int]]] = {k: [] for k in cmds}
            if cache == "warm":
                warm(files)
                for k, (argv, env) in cmds.items():  # untimed warm-up run of each
                    run_process(argv, env)
            for _ in range(args.repeats):
                for k, (argv, env) in cmds.items():
                    if cache == "cold":
                        evict(files)
                    res[k].append(run_process(argv, env))
            print(f"### {cache} page cache\n")
            print("| whole process | wall s min | median | max | cpu s median | peak RSS MiB median "
                  "| % of load-only rate (pair by pair) min | median | max | correct |")
            print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            for k, runs in res.items():
                walls = [r[0] for r in runs]
                cpu = statistics.median(r[1] for r in runs)
                rss = statistics.median(r[2] for r in runs)
                ratio = [100 * lo[0] / r[0] for lo, r in zip(res["L"], runs)]
                corr = "-" if k == "L" else f"{grid_accuracy(out / k / 'layouts.csv', layouts):.1f}%"
                rat = "- | - | -" if k == "L" else _stats(ratio, ".0f")
                print(f"| {names[k]} | {_stats(walls, '.2f')} | {cpu:.2f} | {rss:.0f} | {rat} | {corr} |")
            if "B" in res:
                ab = [a[0] / b[0] for a, b in zip(res["A"], res["B"])]
                med = statistics.median(ab)
                print(f"\nThis tree / baseline wall, pair by pair: min {min(ab):.3f}, median {med:.3f}, max {max(ab):.3f}.")
            print(f"\nLoad average after the {cache} runs: {os.getloadavg()[0]:.2f}. Peak RSS cannot read below "
                  f"this process's own: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB.\n")
    finally:
        shutil.rmtree(out, ignore_errors=True)


def read_ways(root: Path, layouts: dict, n_files: int, repeats: int, border: int = 4) -> None:
    """``--read-ways``: us per file of five ways to get one patch's border strips from a warm page
    cache, in turn, ``repeats`` rounds, on the first ``n_files`` files; every way's strips are
    checked equal to ``np.load``'s first."""
    import mmap as _mmap

    files = [p for ps in _paths(root, layouts) for p in ps][:n_files]
    first = np.load(files[0])
    h, w, c = first.shape
    b = border
    with open(files[0], "rb") as fh:  # .npy header length: file size minus the data
        hdr = os.fstat(fh.fileno()).st_size - first.nbytes
    row = w * c * first.itemsize
    seam = b * c * first.itemsize  # bytes of b pixels of one row

    def cut(a):
        return a[:, w - b :].copy(), a[:, :b].copy(), a[h - b :].copy(), a[:b].copy()

    def way_load(p):
        return cut(np.load(p))

    def way_mmap(p, flags=None):
        fd = os.open(p, os.O_RDONLY)
        try:
            m = (_mmap.mmap(fd, 0, access=_mmap.ACCESS_READ) if flags is None
                 else _mmap.mmap(fd, 0, flags=flags, prot=_mmap.PROT_READ))
        finally:
            os.close(fd)
        a = np.frombuffer(m, first.dtype, count=h * w * c, offset=hdr).reshape(h, w, c)
        out = cut(a)
        del a
        m.close()
        return out

    buf = bytearray(hdr + first.nbytes)

    def way_pread(p):
        fd = os.open(p, os.O_RDONLY)
        try:
            os.preadv(fd, [buf], 0)
        finally:
            os.close(fd)
        return cut(np.frombuffer(buf, first.dtype, count=h * w * c, offset=hdr).reshape(h, w, c))

    # one preadv: each row's first and last b pixels land in `keep`, the middle in a reused row buffer
    keep, trash = bytearray(hdr + 2 * h * seam), bytearray(row)
    kv, tv = memoryview(keep), memoryview(trash)
    iov, pos = [kv[:hdr]], hdr
    for _ in range(h):
        iov += [kv[pos : pos + seam], tv[: row - 2 * seam], kv[pos + seam : pos + 2 * seam]]
        pos += 2 * seam

    def way_scatter(p):
        fd = os.open(p, os.O_RDONLY)
        try:
            os.preadv(fd, iov, 0)
        finally:
            os.close(fd)
        lr = np.frombuffer(keep, first.dtype, offset=hdr).reshape(h, 2, b, c)
        return lr[:, 1].copy(), lr[:, 0].copy()  # the columns only (top and bottom rows: 2 small reads more)

    ways = {
        "`np.load` of the whole file (the load-only pass)": way_load,
        "`mmap` + copy of the strips (`io.read_raw_strips`)": way_mmap,
        "`mmap(MAP_POPULATE)` + copy": lambda p: way_mmap(p, _mmap.MAP_SHARED | _mmap.MAP_POPULATE),
        "`preadv` of the whole file into one reused buffer": way_pread,
        "one `preadv` scattering the row seams into the strips, the rest into a reused row buffer": way_scatter,
    }
    ref = way_load(files[0])
    for name, way in ways.items():  # same strips (the scatter way: the two column strips)
        got = way(files[0])
        if not all(np.array_equal(g, r) for g, r in zip(got, ref)):
            raise SystemExit(f"read way {name!r} gives other strips than np.load")
    for p in files:  # warm
        way_load(p)
    times: dict[str, list[float]] = {k: [] for k in ways}
    for _ in range(repeats):
        for name, way in ways.items():
            t0 = time.perf_counter()
            for p in files:
                way(p)
            times[name].append(1e6 * (time.perf_counter() - t0) / len(files))
    t_load = times[next(iter(ways))]
    print(f"## Ways to read the border strips ({len(files)} files of {h}x{w}x{c} {first.dtype}, warm, "
          f"{repeats} rounds in turn; load average {os.getloadavg()[0]:.2f})\n")
    print("| way | us per file min / median / max | / np.load (round by round, median) |")
    print("|---|---:|---:|")
    for name, ts in times.items():
        ratio = statistics.median(a / b for a, b in zip(ts, t_load))
        print(f"| {name} | {min(ts):.0f} / {statistics.median(ts):.0f} / {max(ts):.0f} | {ratio:.2f} |")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="12 images of 64 px patches, 1 repeat")
    ap.add_argument("--data", type=Path, default=None, help="folder for the generated set (kept)")
    ap.add_argument("--n-images", type=int, default=200)
    ap.add_argument("--patch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--library", action="store_true", help="the in-process library rows instead of the whole command")
    ap.add_argument("--baseline", type=Path, default=None, help="source tree of a baseline command (whole command)")
    ap.add_argument("--read-ways", type=int, default=0, metavar="N",
                    help="instead: time ways of reading the border strips on the first N files")
    args = ap.parse_args(argv)
    if args.quick:
        args.n_images, args.patch, args.repeats = 12, 64, 1
    if args.baseline is not None and not (args.baseline / "uotisp_lib" / "cli").is_dir():
        raise SystemExit(f"--baseline {args.baseline}: expected a source tree holding uotisp_lib/cli")
    tmp = None
    root = args.data
    if root is None:
        tmp = tempfile.mkdtemp(prefix="bench_stitching_")
        root = Path(tmp)
    try:
        t0 = time.perf_counter()
        # build in a child process so that this process's max RSS measures inference, not generation
        child = mp.get_context("fork").Process(target=build_set, args=(root, args.n_images, args.patch, args.seed))
        child.start()
        child.join()
        if child.exitcode != 0:
            raise SystemExit(f"building the set in {root} failed (exit code {child.exitcode})")
        layouts = build_set(root, args.n_images, args.patch, args.seed)  # reads meta.json
        t_build = time.perf_counter() - t0
        if args.read_ways:
            read_ways(root, layouts, args.read_ways, max(args.repeats, 1))
            return
        if not args.library:
            main_cli(args, root, layouts)
            return
        _import_torch()
        torch.set_num_threads(args.threads)
        images = _paths(root, layouts)
        truth = [tuple(v) for v in layouts.values()]
        n_files = sum(len(p) for p in images)
        load_only(images, "np.load-full")  # warm the page cache
        infer_all(images[:2], "mmap", "evidence")  # warm caches (index tensors, imports)
        rss_warm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
        n = len(images)
        rows = []
        t_load = _best_time(lambda: load_only(images, "np.load-full"), args.repeats)
        loads = {"np.load-full": t_load}
        for kind in ("np.load-mmap", "mmap"):
            loads[kind] = _best_time(lambda: load_only(images, kind), args.repeats)
        labels = {
            "np.load-full": "np.load (full)",
            "np.load-mmap": "np.load(mmap_mode='r'), border strips",
            "mmap": "io.read_raw_strips (mmap + header check), border strips",
        }
        for kind, t in loads.items():
            rows.append((f"load only: {labels[kind]}", t, t, None))
        plan = (("evidence", ("np.load-full", "np.load-mmap", "mmap")), ("mean", ("np.load-full", "mmap")))
        for method, kinds in plan:
            for kind in kinds:
                res: list = []
                t = _best_time(lambda: res.__setitem__(slice(None), infer_all(images, kind, method)), args.repeats)
                correct = 100.0 * sum(a == b for a, b in zip(res, truth)) / n
                rows.append((f"infer_grid `{method}` incl. loading: {labels[kind]}", t, loads[kind], correct))
        res = []
        t = _best_time(lambda: res.__setitem__(slice(None), infer_batched(images, "evidence")), args.repeats)
        correct = 100.0 * sum(a == b for a, b in zip(res, truth)) / n
        name = f"infer_grids `evidence` batched by N (16 images) incl. loading: {labels['mmap']}"
        rows.append((name, t, loads["mmap"], correct))
        tracemalloc.start()
        infer_all(images, "np.load-full", "evidence")
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
        size_gb = sum(p.stat().st_size for ps in images for p in ps) / 1e9
        mix = {f"{r}x{c}": truth.count((r, c)) for r, c in CHALLENGE_LAYOUTS}
        print(f"## Grid inference vs loading ({n} images, {n_files} files, {size_gb:.2f} GB, patches "
              f"{args.patch}x{args.patch}x4 uint16; torch threads {torch.get_num_threads()}; best of {args.repeats})\n")
        print(f"Layout mix: {mix}. Set built in {t_build:.1f} s (reused when the folder's meta.json matches).\n")
        print("| path | images/s | ms/image | % of np.load rate | % of same reader's load-only rate | correct |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, t, t_ref, corr in rows:
            c = "-" if corr is None else f"{corr:.1f}%"
            pct_load, pct_ref = 100 * t_load / t, 100 * t_ref / t
            print(f"| {name} | {n / t:.1f} | {1e3 * t / n:.2f} | {pct_load:.0f}% | {pct_ref:.0f}% | {c} |")
        print(f"\nPeak memory (untimed pass, evidence, full load): tracemalloc {peak / 2**20:.1f} MiB; "
              f"process max RSS {max_rss:.0f} MiB at the end, {rss_warm:.0f} MiB before any timed run "
              "(the torch runtime and imports).")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
