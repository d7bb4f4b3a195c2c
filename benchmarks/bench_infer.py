"""``uotisp infer`` end to end (read, preprocess, model, grid, stitch, write) in MP/s, beside the model alone.

Usage: ``python benchmarks/bench_infer.py [--quick] [--repeats 5] [--images 6] [--patch 128]
[--archs colornet,tinyraw,unet_isp] [--threads 1]``

Builds a small synthetic benchmark (:func:`uotisp_lib.data.synth.build_benchmark`, the challenge's
layouts 2x7, 7x2, 5x7, 7x5, 6x7, 7x6 at ``--patch`` RAW pixels a side; its test RAW folder is the
input) and exports each architecture with its initial weights (throughput does not depend on the
values). Then, ``--repeats`` times, interleaved (CLI, library, CLI, library, ...):

- **CLI**: ``python -m uotisp_lib.cli infer --checkpoint ... --input ... --output ... --overwrite
  --threads T`` as a whole process (interpreter start-up and imports included): wall seconds, output
  MP/s (the megapixels of the written sRGB images), peak RSS of that process (``/usr/bin/time``).
- **render**: :func:`uotisp_lib.inference.render` on the RAW patches already in memory (preprocessing
  + model, in process, ``T`` threads).
- **model**: the network's forward alone on inputs already in its format (``channels_last``,
  ``inference_mode``), batch 16 as ``uotisp infer`` uses.

The CLI/model ratio is taken pair by pair. A second table splits one in-process pass of the CLI's
loop into its stages (read, render, grid inference, stitch + PNG write), from which the gap between
the CLI and the model is explained. Output MP counts sRGB pixels (2x the RAW patch side).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from uotisp_lib import io as uio  # noqa: E402
from uotisp_lib.config import SynthConfig  # noqa: E402
from uotisp_lib.data.layouts import group_stems  # noqa: E402
from uotisp_lib.data.synth import build_benchmark  # noqa: E402
from uotisp_lib.inference import export_isp, inference_layout, load_isp, model_input, render  # noqa: E402
from uotisp_lib.models import build_isp  # noqa: E402
from uotisp_lib.preprocessing import PreprocessConfig  # noqa: E402
from uotisp_lib.stitching import infer_grid, stitch  # noqa: E402
from uotisp_lib.threads import use_threads  # noqa: E402

LAYOUTS = ((2, 7), (7, 2), (5, 7), (7, 5), (6, 7), (7, 6))
BATCH = 16  # uotisp infer's default --batch
PNG_LEVEL = 1  # uotisp infer's default --png-level


def build_data(root: Path, patch: int, images: int) -> Path:
    """The test RAW folder of a small synthetic benchmark with ``images`` test images."""
    cfg = SynthConfig(patch=patch, layouts=LAYOUTS, n_train_raw=1, n_train_jpeg=1, n_val=1, n_test=images)
    build_benchmark(root, cfg, seed=0)
    raw_dirs = sorted(p for p in root.rglob("*") if p.is_dir() and p.parent.name == "test" and any(p.glob("*.npy")))
    if not raw_dirs:
        raise SystemExit(f"{root}: no test RAW folder with .npy patches was built")
    return raw_dirs[0]


def cli_run(checkpoint: Path, src: Path, dst: Path, threads: int) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one whole ``uotisp infer`` process."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]), MPLBACKEND="Agg")
    cmd = [sys.executable, "-m", "uotisp_lib.cli", "infer", "--checkpoint", str(checkpoint), "--input", str(src),
           "--output", str(dst), "--overwrite", "--threads", str(threads)]
    # /usr/bin/time measures the peak: a child forked from this (large) process would report this
    # process's RSS at the fork as its own ru_maxrss (Linux keeps it across exec)
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        start = time.perf_counter()
        proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss.name, *cmd], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"uotisp infer failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
        peak_kib = float(rss.read().strip().splitlines()[-1])
    return wall, peak_kib / 1024


def load_patches(src: Path) -> dict[str, torch.Tensor]:
    """image id -> [n, 4, h, w] RAW in [0, 1], as ``uotisp infer`` reads them."""
    npys = {p.stem: p for p in sorted(src.glob("*.npy"))}
    out = {}
    for image_id, stems in group_stems(npys).items():
        raw = uio.load_raw_batch([npys[s] for s in stems]).astype(np.float32) / uio.RAW_MAX
        out[image_id] = torch.from_numpy(raw).permute(0, 3, 1, 2).contiguous()
    return out


def stage_split(bundle, src: Path, dst: Path) -> dict[str, float]:
    """Seconds per stage of one in-process pass of the CLI's per-image loop."""
    npys = {p.stem: p for p in sorted(src.glob("*.npy"))}
    t = dict.fromkeys(("read", "render", "grid", "stitch + write"), 0.0)
    dst.mkdir(parents=True, exist_ok=True)
    for image_id, stems in group_stems(npys).items():
        s0 = time.perf_counter()
        raw = torch.from_numpy(uio.load_raw_batch([npys[s] for s in stems]).astype(np.float32) / uio.RAW_MAX)
        raw = raw.permute(0, 3, 1, 2).contiguous()
        s1 = time.perf_counter()
        out = render(bundle, raw, BATCH)
        s2 = time.perf_counter()
        grid = infer_grid(raw, kind="raw")
        s3 = time.perf_counter()
        img = (stitch(out, grid.rows, grid.cols).clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        uio.save_image(dst / f"{image_id}.png", np.ascontiguousarray(img), png_level=PNG_LEVEL)
        s4 = time.perf_counter()
        for k, a, b in (("read", s0, s1), ("render", s1, s2), ("grid", s2, s3), ("stitch + write", s3, s4)):
            t[k] += b - a
    return t


def fmt(xs: list[float]) -> str:
    return " / ".join(f"{v:.3g}" if v < 100 else f"{v:.0f}" for v in (min(xs), statistics.median(xs), max(xs)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 images of 64-pixel patches, 2 repeats")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--patch", type=int, default=128, help="RAW patch side (sRGB output: twice that)")
    ap.add_argument("--archs", default="colornet,tinyraw,unet_isp")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads of both the CLI and the library")
    args = ap.parse_args()
    if args.quick:
        args.images, args.patch, args.repeats = 2, 64, 2
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="bench_infer_") as tmp_s, use_threads(args.threads):
        tmp = Path(tmp_s)
        src = build_data(tmp / "bench", args.patch, args.images)
        patches = load_patches(src)
        n_patches = sum(len(v) for v in patches.values())
        mp = n_patches * (2 * args.patch) ** 2 / 1e6
        load = os.getloadavg()[0]
        print(f"{len(patches)} images, {n_patches} RAW patches of {args.patch}x{args.patch}x4 ({mp:.2f} output MP), "
              f"{args.threads} thread(s), {args.repeats} interleaved repeats, 1-min load average {load:.2f} at the start\n")
        rows, stages = [], []
        for arch in args.archs.split(","):
            ck = tmp / f"isp-{arch}"
            export_isp(ck, build_isp(arch), arch, {}, PreprocessConfig())
            bundle = load_isp(ck, "cpu")
            layout = inference_layout(torch.device("cpu"))
            all_raw = torch.cat(list(patches.values()))
            with torch.inference_mode():
                x = model_input(all_raw, bundle.input_kind, bundle.preprocess).contiguous(memory_format=layout)

            def model_alone() -> float:
                s = time.perf_counter()
                with torch.inference_mode():
                    for i in range(0, len(x), BATCH):
                        bundle.model(x[i:i + BATCH])
                return time.perf_counter() - s

            def render_alone() -> float:
                s = time.perf_counter()
                for raw in patches.values():
                    render(bundle, raw, BATCH)
                return time.perf_counter() - s

            model_alone(), render_alone()  # warm-up
            cli, rss, mod, ren, ratio = [], [], [], [], []
            for _ in range(args.repeats):
                wall, peak = cli_run(ck, src, tmp / f"out-{arch}", args.threads)
                m, r = model_alone(), render_alone()
                cli.append(mp / wall), rss.append(peak), mod.append(mp / m), ren.append(mp / r)
                ratio.append(m / wall)
            rows.append((arch, fmt(cli), fmt(ren), fmt(mod), statistics.median(ratio), fmt(rss)))
            st = stage_split(bundle, src, tmp / f"stages-{arch}")
            stages.append((arch, st))
        print("| arch | uotisp infer MP/s (whole process) | render MP/s | model MP/s | CLI / model (median of pairs) "
              "| CLI peak RSS MiB |")
        print("|---|---:|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]:.2f} | {r[5]} |")
        print("\nOne in-process pass of the CLI's loop, seconds per stage (share of the loop):\n")
        names = list(stages[0][1])
        print("| arch | " + " | ".join(names) + " |")
        print("|---|" + "---:|" * len(names))
        for arch, st in stages:
            total = sum(st.values())
            print(f"| {arch} | " + " | ".join(f"{st[k]:.2f} ({100 * st[k] / total:.0f}%)" for k in names) + " |")


if __name__ == "__main__":
    main()
