"""UOT training-step cost: what the potential, the expert committee and its gradient balancing add.

Usage: ``python benchmarks/bench_uot.py [--quick] [--device auto|cpu|cuda] [--threads N] [--repeats 5]
[--step-only | --layout-only]``. Threads: ``--threads N``, else the library's policy
(:func:`uotisp_lib.threads.default_threads`).

First table, per ISP architecture and committee setting: the library call a user makes (what
``uotisp train --objective uot`` runs each step), :meth:`uotisp_lib.train.UOTTrainer.train_step`
with the trainer's defaults (potential step + R1, committee step, one map step), against its
reference, a plain L1 step of the same map (forward, L1 to the target, backward, Adam) on the same
batch, the two in turn (L1, UOT, L1, UOT, ...) ``--repeats`` times after one warm-up each: ms min /
median / max of each and the pair-by-pair ratio UOT / L1 (what the UOT objective costs over plain
supervised training). They compute different things, so there is no equality to check. Full run:
128x128 sRGB crops (64x64 packed RAW), batch 16, potential and expert widths of the ``cpu``
profile (``--widths full``: the ``full`` profile's 64 and 32, and ``--side 256``, its crop: each
several times longer, well over 10 minutes on 2 CPU cores); ``--quick``: 64x64 crops, batch 8.
``--step-only`` prints this table alone. Memory: the process's peak RSS after it.

A second table gives steps/s per architecture in the study's configuration (cpu profile: 32 px
crops, batch 16) and splits a step's time into data (batch assembly), potential (its step + R1),
experts (the discriminators' step), balancing (the committee's generator terms with their
gradient norms) and map (forward, cost, backward, optimiser, EMA), from the trainer's own timers.

A third table times the same whole UOT step in NCHW and in channels_last
(:meth:`~uotisp_lib.train.EpochTrainer.set_channels_last`: map, potential and experts, as
``uotisp train --channels-last``), two trainers built from the same seed and stepped in turn on the
same batches, ``--repeats`` pairs (default 5) after a warm-up: ms min / median / max and the median
of the pair-by-pair ratios NCHW / channels_last (> 1: channels_last faster).
``--layout-only`` prints that table alone.
"""

from __future__ import annotations

import dataclasses
import tempfile

import torch
import torch.nn.functional as F

from _common import interleaved, load_average, mmm, peak_rss_mib, standard_parser
from uotisp_lib.config import get_profile, resolve_device
from uotisp_lib.data.datasets import PatchSet
from uotisp_lib.models import count_parameters
from uotisp_lib.train import UOTTrainConfig, UOTTrainer
from uotisp_lib.threads import default_threads, use_threads
from uotisp_lib.uot import UOTConfig

SETTINGS: list[tuple[str, dict]] = [
    ("no experts", {"experts": ()}),
    ("3 experts, plain sum", {"expert_balance": "none"}),
    ("3 experts, grad-norm balanced", {"expert_balance": "grad_norm"}),
]


def main() -> None:
    parser = standard_parser(__doc__, "64x64 crops, batch 8, cpu widths")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved pairs of the step and layout tables (>= 5)")
    parser.add_argument("--layout-only", action="store_true", help="the NCHW vs channels_last table alone")
    parser.add_argument("--step-only", action="store_true", help="the map-only L1 vs UOT step table alone")
    parser.add_argument("--side", type=int, default=0, help="sRGB crop side of the step table (default 128, --quick 64)")
    parser.add_argument("--widths", choices=("cpu", "full"), default="cpu", help="profile whose potential/expert widths the step table uses")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.exit(2, f"--repeats: expected an integer >= 1, got {args.repeats}\n")
    if args.side and (args.side < 16 or args.side % 2):
        parser.exit(2, f"--side: expected an even number of pixels >= 16, got {args.side}\n")
    device = resolve_device(args.device)
    with use_threads(args.threads or default_threads()):
        if not args.layout_only:
            step_table(device, args.quick, args.repeats, args.side, args.widths)
        if not (args.layout_only or args.step_only):
            phase_table(device, args.quick)
        if not args.step_only:
            layout_table(device, args.quick, args.repeats)


def step_table(device: str, quick: bool, repeats: int, side: int = 0, prof: str = "cpu") -> None:
    """UOT ``train_step`` against a plain L1 step of the same map, interleaved, per arch and setting
    (rows printed as they are measured)."""
    default_side, batch = (64, 8) if quick else (128, 16)
    side = side or default_side
    study = get_profile(prof).uot
    load = load_average()
    gen = torch.Generator().manual_seed(0)
    raw = torch.rand(batch, 4, side // 2, side // 2, generator=gen) * 0.8 + 0.1
    tgt = torch.rand(batch, 3, side, side, generator=gen)
    stems = [f"r{i}" for i in range(batch)]
    print(f"device: {device}, threads: {torch.get_num_threads()}, sRGB {side}x{side}, batch {batch}, {prof} widths, "
          f"{repeats} interleaved pairs, 1-minute load average {load:.2f} at the start\n")
    print("| arch | params | setting | map-only L1 step ms min / med / max | UOT step ms min / med / max | "
          "ratio UOT / L1 min / med / max (pairs) |")
    print("|---|---:|---|---:|---:|---:|", flush=True)
    for arch in ("tinyraw", "colornet", "unet_isp"):
        for label, kw in SETTINGS:
            cfg = UOTTrainConfig(arch=arch, uot=UOTConfig(tau=study.tau), batch_size=batch, potential_width=study.potential_width,
                                 expert_width=study.expert_width, expert_weight=study.expert_weight)
            cfg = dataclasses.replace(cfg, **kw)
            with tempfile.TemporaryDirectory() as tmp:
                tr = UOTTrainer(cfg, PatchSet(tuple(stems), raw), PatchSet(tuple(f"t{i}" for i in range(batch)), tgt), tmp, device=device)
                inp = tr.sources.select(stems).to(device)
                y = tgt.to(device)
                opt = torch.optim.Adam(tr.model.parameters(), lr=1e-4)

                def map_only() -> None:
                    opt.zero_grad(set_to_none=True)
                    F.l1_loss(tr.model(inp), y).backward()
                    opt.step()

                t_l1, t_uot = interleaved(map_only, lambda: tr.train_step(stems, 0), device, repeats)
            ratio = [u / b for b, u in zip(t_l1, t_uot)]
            print(f"| {arch} | {count_parameters(tr.model):,} | {label} | {mmm([1e3 * t for t in t_l1], '.1f')} | "
                  f"{mmm([1e3 * t for t in t_uot], '.1f')} | {mmm(ratio)} |", flush=True)
    print(f"\npeak RSS of the process: {peak_rss_mib():.0f} MiB")


def phase_table(device: str, quick: bool) -> None:
    """steps/s and the split of a step's time, per architecture, in the study's configuration."""
    from uotisp_lib.study import base_config

    prof = "cpu" if quick else "full"
    study = get_profile(prof).uot
    batch, side = study.batch_size, 2 * (study.synth.patch if study.synth else get_profile(prof).synth.patch)
    steps = 5 if quick else 20
    gen = torch.Generator().manual_seed(1)
    n = 2 * batch
    raw = torch.rand(n, 4, side // 2, side // 2, generator=gen) * 0.8 + 0.1
    tgt = torch.rand(n, 3, side, side, generator=gen)
    stems = tuple(f"r{i}" for i in range(n))
    phases = ("data", "potential", "experts", "balancing", "map")
    print(f"\n{prof} study configuration: patches {side} px, crop {study.crop}, batch {batch}, {steps} steps\n")
    print("| arch | steps/s | " + " | ".join(f"{p} %" for p in phases) + " |")
    print("|---|---:|" + "---:|" * len(phases))
    for arch in study.archs:
        cfg = base_config(study, arch, 0)
        with tempfile.TemporaryDirectory() as tmp:
            tr = UOTTrainer(cfg, PatchSet(stems, raw), PatchSet(tuple(f"t{i}" for i in range(n)), tgt), tmp, device=device)
            tr.train_step(list(stems[:batch]), 0)  # warm-up
            tr.timings = {}
            for k in range(steps):
                tr.train_step(list(stems[(k % 2) * batch : (k % 2 + 1) * batch]), 0)
            total = sum(tr.timings.values())
            split = " | ".join(f"{100 * tr.timings.get(p, 0.0) / total:.0f}" for p in phases)
            print(f"| {arch} | {steps / total:.2f} | {split} |")


def layout_table(device: str, quick: bool, repeats: int) -> None:
    """UOT step ms in NCHW and channels_last, interleaved, per architecture of the study."""
    import time

    from uotisp_lib.study import base_config

    prof = "cpu" if quick else "full"
    study = get_profile(prof).uot
    batch, side = study.batch_size, 2 * (study.synth.patch if study.synth else get_profile(prof).synth.patch)
    gen = torch.Generator().manual_seed(2)
    n = 2 * batch
    raw = torch.rand(n, 4, side // 2, side // 2, generator=gen) * 0.8 + 0.1
    tgt = torch.rand(n, 3, side, side, generator=gen)
    stems = tuple(f"r{i}" for i in range(n))
    print(f"\n{prof} study configuration, whole UOT step: patches {side} px, crop {study.crop}, batch {batch}, "
          f"{repeats} interleaved pairs\n")
    print("| arch | NCHW step ms min/med/max | channels_last step ms min/med/max | ratio NCHW/channels_last min/med/max (pairs) |")
    print("|---|---:|---:|---:|")

    for arch in study.archs:
        cfg = base_config(study, arch, 0)
        with tempfile.TemporaryDirectory() as tmp:
            pair = [UOTTrainer(cfg, PatchSet(stems, raw), PatchSet(tuple(f"t{i}" for i in range(n)), tgt), f"{tmp}/{k}",
                               device=device) for k in range(2)]
            pair[1].set_channels_last(True)
            times: list[list[float]] = [[], []]
            for k in range(repeats + 1):
                batch_stems = list(stems[(k % 2) * batch : (k % 2 + 1) * batch])
                for tr, out in zip(pair, times):
                    if device == "cuda":
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    tr.train_step(batch_stems, 0)
                    if device == "cuda":
                        torch.cuda.synchronize()
                    if k:  # the first pair is the warm-up
                        out.append(1e3 * (time.perf_counter() - t0))
        ratio = [a / b for a, b in zip(*times)]
        print(f"| {arch} | {mmm(times[0], '.1f')} | {mmm(times[1], '.1f')} | {ratio and mmm(ratio)} |")


if __name__ == "__main__":
    main()
