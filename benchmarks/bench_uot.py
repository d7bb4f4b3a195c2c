"""UOT training-step cost: what the potential, the expert committee and its gradient balancing add.

Usage: ``python benchmarks/bench_uot.py [--quick] [--device auto|cpu|cuda] [--threads N]``.
One :meth:`uotisp_lib.train.UOTTrainer.train_step` (potential step + R1, committee step, one map
step) on random data, per ISP architecture and committee setting; the "map only" row is a plain
L1 step of the same map for scale. Full run: 256x256 sRGB crops (128x128 packed RAW), batch 16,
widths of the ``full`` profile; ``--quick``: 64x64 crops, batch 8, the ``cpu`` widths. Median of
the repeats after one warm-up step; the table is what to compare when changing the committee.
"""

from __future__ import annotations

import dataclasses
import tempfile

import torch
import torch.nn.functional as F

from _common import apply_threads, median_seconds, standard_parser
from uotisp_lib.config import get_profile, resolve_device
from uotisp_lib.data.datasets import PatchSet
from uotisp_lib.models import count_parameters
from uotisp_lib.train import UOTTrainConfig, UOTTrainer
from uotisp_lib.uot import UOTConfig

SETTINGS: list[tuple[str, dict]] = [
    ("no experts", {"experts": ()}),
    ("3 experts, plain sum", {"expert_balance": "none"}),
    ("3 experts, grad-norm balanced", {"expert_balance": "grad_norm"}),
]


def main() -> None:
    args = standard_parser(__doc__, "64x64 crops, batch 8, cpu widths").parse_args()
    apply_threads(args.threads)
    device = resolve_device(args.device)
    side, batch, repeats, prof = (64, 8, 3, "cpu") if args.quick else (256, 16, 5, "full")
    study = get_profile(prof).uot
    print(f"device: {device}, threads: {torch.get_num_threads()}, sRGB {side}x{side}, batch {batch}, {prof} widths\n")
    print("| arch | params | setting | map-only L1 step ms | UOT step ms | x map-only |")
    print("|---|---:|---|---:|---:|---:|")
    gen = torch.Generator().manual_seed(0)
    raw = torch.rand(batch, 4, side // 2, side // 2, generator=gen) * 0.8 + 0.1
    tgt = torch.rand(batch, 3, side, side, generator=gen)
    stems = [f"r{i}" for i in range(batch)]
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

                base = 1e3 * median_seconds(map_only, device, repeats)
                step = 1e3 * median_seconds(lambda: tr.train_step(stems, 0), device, repeats)
            print(f"| {arch} | {count_parameters(tr.model):,} | {label} | {base:.1f} | {step:.1f} | {step / base:.1f} |")


if __name__ == "__main__":
    main()
