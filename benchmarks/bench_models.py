"""ISP model throughput: inference MP/s and training-step time at 512x512 output, with FLOP counts.

Usage: ``python benchmarks/bench_models.py [--quick] [--device auto|cpu|cuda] [--threads N]``.
Full run: 512x512 sRGB output (packed models read 256x256x4 RAW), batch 1 and 4. ``--quick``:
128x128, fewer repeats. FLOPs come from :class:`torch.utils.flop_counter.FlopCounterMode`
(convolutions and matmuls, 1 MAC = 2 FLOPs; the LUT's grid_sample and elementwise ops are not
counted). The peak is the GFLOP/s of a large float32 ``torch.matmul`` measured in the same run;
"% peak" is the forward pass's counted FLOP rate over it. A training step is forward, L1 loss to
a random target, backward and an AdamW step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from _common import apply_threads, median_seconds, standard_parser
from uotisp_lib.config import resolve_device
from uotisp_lib.models import build_isp, count_parameters

MODELS: list[tuple[str, str, dict]] = [
    ("colornet", "colornet", {}),
    ("colornet+lut3d", "colornet", {"head": "lut3d"}),
    ("tinyraw", "tinyraw", {}),
    ("unet_isp", "unet_isp", {}),
]


def matmul_peak_gflops(device: str, n: int, repeats: int) -> float:
    """GFLOP/s of an ``n x n`` float32 matmul (2 n^3 FLOPs), the reference 'peak'."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device)
    b = torch.randn(n, n, generator=gen).to(device)
    seconds = median_seconds(lambda: torch.matmul(a, b), device, repeats)
    return 2 * n**3 / seconds / 1e9


def forward_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward pass counted by FlopCounterMode."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


def main() -> None:
    args = standard_parser(__doc__, "128x128 output, few repeats").parse_args()
    apply_threads(args.threads)
    device = resolve_device(args.device)
    side, repeats = (128, 2) if args.quick else (512, 3)
    peak = matmul_peak_gflops(device, 512 if args.quick else 2048, 5)
    print(
        f"device: {device}, threads: {torch.get_num_threads()}, output {side}x{side}, "
        f"matmul peak: {peak:.1f} GFLOP/s (float32)\n"
    )
    print("| model | params | batch | GFLOP/img (fwd) | infer ms | infer MP/s | % peak (fwd) | train step ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, name, kwargs in MODELS:
        torch.manual_seed(0)
        model = build_isp(name, **kwargs).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
        for batch in (1, 4):
            gen = torch.Generator().manual_seed(batch)
            if model.input_kind == "packed":
                x = torch.rand(batch, 4, side // 2, side // 2, generator=gen).to(device)
            else:
                x = torch.rand(batch, 3, side, side, generator=gen).to(device)
            target = torch.rand(batch, 3, side, side, generator=gen).to(device)
            flops = forward_flops(model, x)

            def infer() -> None:
                with torch.inference_mode():
                    model(x)

            def train_step() -> None:
                opt.zero_grad(set_to_none=True)
                F.l1_loss(model(x), target).backward()
                opt.step()

            t_inf = median_seconds(infer, device, repeats)
            t_train = median_seconds(train_step, device, repeats)
            mps = batch * side * side / t_inf / 1e6
            pct = 100.0 * flops / t_inf / 1e9 / peak
            print(
                f"| {label} | {count_parameters(model):,} | {batch} | {flops / batch / 1e9:.2f} | "
                f"{t_inf * 1e3:.1f} | {mps:.2f} | {pct:.1f} | {t_train * 1e3:.1f} |"
            )


if __name__ == "__main__":
    main()
