"""ISP model throughput: inference MP/s and training-step time at 512x512 output, with FLOP counts.

Usage: ``python benchmarks/bench_models.py [--quick] [--device auto|cpu|cuda] [--threads N] [--repeats 5]``.
Full run: 512x512 sRGB output (packed models read 256x256x4 RAW), batch 1 and 4. ``--quick``:
128x128. Threads: ``--threads N``, else the library's policy (:func:`uotisp_lib.threads.default_threads`).

"peak" is the measured matmul FLOP/s of this machine: the best of ``repeats`` timings of float32
``torch.matmul`` at 1024, 2048 and 3072 (2 n^3 FLOPs), with the benchmark's thread count; "% peak"
is the forward pass's counted FLOP rate (:class:`torch.utils.flop_counter.FlopCounterMode`,
convolutions and matmuls, 1 MAC = 2 FLOPs; the LUT's grid_sample and elementwise ops are not counted)
over it, at the *best* repetition (a rate above the best matmul would say the count is wrong).

Table 1, inference as :func:`uotisp_lib.inference.render` runs it (``channels_last`` on the CPU,
``torch.inference_mode``; colornet: one cache-sized strip of rows at a time,
:func:`uotisp_lib.models.colornet_strips`) against the dense NCHW ``no_grad`` forward it replaced, the two interleaved
(old, new, old, new, ...) ``repeats`` times: MP/s min / median / max of each and the median of the
pair-by-pair ratios. Model alone (input already in the network's format) and ``render`` end to end
(packed RAW in, with the preprocessing of colornet's pseudo-RGB input, out clamped on the CPU).
Table 2: training step (forward, L1 loss to a random target, backward, AdamW), median ms.
Table 3 (colornet, unet_isp): that training step in NCHW against ``channels_last`` (weights, input
and target converted, as ``uotisp train --channels-last`` does), the two models starting from the
same weights and stepped in turn (NCHW, channels_last, ...) ``repeats`` times after a warm-up: ms
min / median / max of each, the median of the pair-by-pair ratios NCHW / channels_last (> 1:
channels_last faster), and the largest weight difference between the two after all their steps
(float rounding). ``--train-layout-only`` prints table 3 alone; ``--side N`` sets the output size.
"""

from __future__ import annotations

import statistics

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from _common import interleaved, mmm as _mmm, seconds, standard_parser
from uotisp_lib.config import resolve_device
from uotisp_lib.inference import ISPBundle, inference_layout, model_input, render
from uotisp_lib.models import build_isp, count_parameters
from uotisp_lib.preprocessing import PreprocessConfig
from uotisp_lib.threads import default_threads, use_threads

MODELS: list[tuple[str, str, dict]] = [
    ("colornet", "colornet", {}),
    ("colornet+lut3d", "colornet", {"head": "lut3d"}),
    ("tinyraw", "tinyraw", {}),
    ("unet_isp", "unet_isp", {}),
]


def matmul_peak_gflops(device: str, sizes: tuple[int, ...], repeats: int) -> tuple[float, int]:
    """Best GFLOP/s of float32 ``n x n`` matmuls (2 n^3 FLOPs) over ``sizes`` and ``repeats``: the peak."""
    gen = torch.Generator().manual_seed(0)
    best, best_n = 0.0, 0
    for n in sizes:
        a = torch.randn(n, n, generator=gen).to(device)
        b = torch.randn(n, n, generator=gen).to(device)
        t = min(seconds(lambda: torch.matmul(a, b), device, repeats))
        if 2 * n**3 / t / 1e9 > best:
            best, best_n = 2 * n**3 / t / 1e9, n
    return best, best_n


def forward_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward pass counted by FlopCounterMode."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


def old_render(bundle: ISPBundle, raw01: torch.Tensor, batch: int = 16) -> torch.Tensor:
    """:func:`uotisp_lib.inference.render` before channels_last: NCHW, ``no_grad``."""
    device = next(bundle.model.parameters()).device
    with torch.no_grad():
        outs = [
            bundle.model(model_input(raw01[i : i + batch].to(device), bundle.input_kind, bundle.preprocess)).clamp(0, 1).cpu()
            for i in range(0, raw01.shape[0], batch)
        ]
    return torch.cat(outs)


#: architectures of table 3 (training step, NCHW against channels_last)
TRAIN_LAYOUT_MODELS = ("colornet", "unet_isp")


def train_layout_rows(device: str, side: int, batch: int, reps: int) -> list[str]:
    """Table 3's rows: one AdamW + L1 training step of each of :data:`TRAIN_LAYOUT_MODELS` in NCHW
    and in channels_last, interleaved ``reps`` times after one warm-up step each."""
    rows = []
    for name in TRAIN_LAYOUT_MODELS:
        torch.manual_seed(0)
        nchw = build_isp(name).to(device)
        cl = build_isp(name).to(device)
        cl.load_state_dict(nchw.state_dict())
        cl = cl.to(memory_format=torch.channels_last)
        gen = torch.Generator().manual_seed(batch)
        raw = torch.rand(batch, 4, side // 2, side // 2, generator=gen).to(device)
        x = model_input(raw, nchw.input_kind, PreprocessConfig(black=0.0, white=1.0))
        target = torch.rand(batch, 3, side, side, generator=gen).to(device)
        steps = []
        for model, fmt in ((nchw, torch.contiguous_format), (cl, torch.channels_last)):
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
            xi, ti = x.contiguous(memory_format=fmt), target.contiguous(memory_format=fmt)

            def step(model=model, opt=opt, xi=xi, ti=ti) -> None:
                opt.zero_grad(set_to_none=True)
                F.l1_loss(model(xi), ti).backward()
                opt.step()

            steps.append(step)
        t_old, t_new = interleaved(steps[0], steps[1], device, reps)
        ratio = [o / n for o, n in zip(t_old, t_new)]
        diff = max(float((a - b).abs().max()) for a, b in zip(nchw.state_dict().values(), cl.state_dict().values()))
        rows.append(f"| {name} | {batch} | {_mmm([t * 1e3 for t in t_old])} | {_mmm([t * 1e3 for t in t_new])} | "
                    f"{_mmm(ratio)} | {diff:.1e} |")
    return rows


def print_train_layout(rows: list[str]) -> None:
    print("| model | batch | NCHW step ms min/med/max | channels_last step ms min/med/max | "
          "ratio NCHW/channels_last min/med/max (pairs) | max weight diff |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(row)


def main() -> None:
    parser = standard_parser(__doc__, "128x128 output")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repetitions (>= 5 for the README)")
    parser.add_argument("--train-layout-only", action="store_true", help="table 3 alone (training step, NCHW vs channels_last)")
    parser.add_argument("--side", type=int, default=0, help="output side in pixels (default 512, --quick 128)")
    parser.add_argument("--batch", type=int, default=4, help="table 3's batch (default 4)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    threads = args.threads or default_threads()
    side, reps = (128, args.repeats) if args.quick else (512, args.repeats)
    side = args.side or side
    if args.train_layout_only:
        with use_threads(threads):
            print(f"device: {device}, threads: {torch.get_num_threads()}, output {side}x{side}, batch {args.batch}, "
                  f"{reps} interleaved repeats\n")
            print_train_layout(train_layout_rows(device, side, args.batch, reps))
        return
    with use_threads(threads):
        sizes = (512,) if args.quick else (1024, 2048, 3072)
        peaks = [matmul_peak_gflops(device, sizes, reps)]
        rows, train_rows = [], []
        for label, name, kwargs in MODELS:
            peaks.append(matmul_peak_gflops(device, sizes, reps))  # the best over the whole run
            torch.manual_seed(0)
            model = build_isp(name, **kwargs).to(device).eval()
            if hasattr(model, "strip_pixels"):
                model.strip_pixels = 0  # the dense pass it replaced (colornet's strips are part of "new")
            fast = build_isp(name, **kwargs).to(device)
            fast.load_state_dict(model.state_dict())
            fast = fast.to(memory_format=inference_layout(torch.device(device))).eval()
            old_b = ISPBundle(model, name, kwargs, PreprocessConfig(), {})
            new_b = ISPBundle(fast, name, kwargs, PreprocessConfig(), {})
            for batch in (1, 4):
                gen = torch.Generator().manual_seed(batch)
                raw = torch.rand(batch, 4, side // 2, side // 2, generator=gen).to(device)
                x = model_input(raw, model.input_kind, PreprocessConfig(black=0.0, white=1.0))
                xc = x.contiguous(memory_format=inference_layout(torch.device(device)))
                flops = forward_flops(model, x)

                def m_old() -> None:
                    with torch.no_grad():
                        model(x)

                def m_new() -> None:
                    with torch.inference_mode():
                        fast(xc)

                px = batch * side * side / 1e6
                for call, (fo, fn) in (
                    ("model", (m_old, m_new)),
                    ("render", (lambda: old_render(old_b, raw), lambda: render(new_b, raw))),
                ):
                    t_old, t_new = interleaved(fo, fn, device, reps)
                    ratio = statistics.median(o / n for o, n in zip(t_old, t_new))
                    gflops = flops / min(t_new) / 1e9 if call == "model" else None
                    rows.append(
                        (f"| {label} | {count_parameters(model):,} | {batch} | {flops / batch / 1e9:.2f} | {call} | "
                         f"{_mmm([px / t for t in t_old])} | {_mmm([px / t for t in t_new])} | {ratio:.2f} |", gflops)
                    )
                if args.quick or batch == 4:
                    train = build_isp(name, **kwargs).to(device)
                    opt = torch.optim.AdamW(train.parameters(), lr=1e-4, weight_decay=1e-4)
                    target = torch.rand(batch, 3, side, side, generator=gen).to(device)

                    def train_step() -> None:
                        opt.zero_grad(set_to_none=True)
                        F.l1_loss(train(x), target).backward()
                        opt.step()

                    train_rows.append((label, batch, seconds(train_step, device, reps)))
        peaks.append(matmul_peak_gflops(device, sizes, reps))
        peak, peak_n = max(peaks)
        print(
            f"device: {device}, threads: {torch.get_num_threads()}, output {side}x{side}, {reps} interleaved repeats, "
            f"peak (best float32 matmul over the run, n={peak_n}): {peak:.1f} GFLOP/s; "
            f"matmul best at each of {len(peaks)} checks: {', '.join(f'{p:.0f}' for p, _ in peaks)}\n"
        )
        print("| model | params | batch | GFLOP/img | call | NCHW MP/s min/med/max | channels_last MP/s min/med/max | ratio (median of pairs) | % peak (best, new) |")
        print("|---|---:|---:|---:|---|---:|---:|---:|---:|")
        for text, gflops in rows:
            print(text + (f" {100.0 * gflops / peak:.1f} |" if gflops else " |"))
        print("\n| model | batch | train step ms min / median / max |")
        print("|---|---:|---:|")
        for label, batch, ts in train_rows:
            print(f"| {label} | {batch} | {_mmm([t * 1e3 for t in ts])} |")
        print()
        print_train_layout(train_layout_rows(device, side, 4, reps))


if __name__ == "__main__":
    main()
