"""Subprocess workers for tests/test_no_silent_loss.py: a tiny training run and the ``uotisp``
command, each with hooks that kill the process (SIGKILL, as ``kill -9``) or hang at a chosen point.

    python workers.py train RUN_DIR [--lr LR] [--wait FILE] [--kill-at-step N] [--kill-before-export]
    python workers.py cli [--kill-before-move N --into DIR] [--hang MODULE:FUNCTION] -- ARGS...

``train`` prints the SHA-256 of the final weights on success; a refused run prints its one-line
reason on stderr and exits 2.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import os
import signal
import sys
import time
from pathlib import Path


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def tiny_data(n: int = 12, size: int = 16):
    """Sources and targets as in tests/test_train.py (a learnable colour transform)."""
    import torch

    from uotisp_lib.data.datasets import PatchSet

    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, size, size, generator=g) * 0.6 + 0.2
    y = (x * torch.tensor([1.2, 1.0, 0.7]).view(1, 3, 1, 1)).clamp(0, 1) ** 0.8
    stems = tuple(f"img_{i}" for i in range(n))
    return PatchSet(stems, x), PatchSet(stems, y)


def tiny_trainer(run_dir: Path, lr: float = 1e-3):
    """A two-epoch, three-steps-per-epoch PseudoPairTrainer on :func:`tiny_data`."""
    import torch

    from uotisp_lib.train import PseudoPairConfig, PseudoPairTrainer

    src, tgt = tiny_data()

    def pairs(stems, gen):
        return [tgt.stems[i] for i in torch.randint(0, len(tgt), (len(stems),), generator=gen)]

    cfg = PseudoPairConfig(stage1_epochs=1, stage2_epochs=1, batch_size=4, lr=lr, d_width=8)
    return PseudoPairTrainer(cfg, src, tgt, pairs, run_dir)


def weights_sha(model) -> str:
    """SHA-256 of a model's tensors, in state_dict order."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def train(args: argparse.Namespace) -> int:
    import torch

    from uotisp_lib.checkpoint import RunLockedError
    from uotisp_lib.train import EpochTrainer

    torch.set_num_threads(args.threads)
    trainer = tiny_trainer(Path(args.run_dir), args.lr)
    step_fn, export_fn = trainer.train_step, EpochTrainer.export

    def train_step(stems, epoch):
        if args.kill_at_step is not None and trainer.state.step == args.kill_at_step:
            _die()
        if args.wait and trainer.state.step == 0:
            print("waiting", flush=True)
            deadline = time.monotonic() + 20
            while not Path(args.wait).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        return step_fn(stems, epoch)

    def export(self, out=None):
        if args.kill_before_export and out is None and self.state.extra["epoch"] == self.epochs:
            _die()  # the final checkpoint is written, the export is not
        return export_fn(self, out)

    trainer.train_step = train_step
    EpochTrainer.export = export
    try:
        trainer.fit()
    except RunLockedError as err:
        print(err, file=sys.stderr)
        return 2
    print(weights_sha(trainer.model))
    return 0


def cli(args: argparse.Namespace) -> int:
    from uotisp_lib.cli import main

    if args.kill_before_move:
        into, count, replace = Path(args.into).absolute(), [0], os.replace

        def hooked(src, dst, *a, **k):
            dst = Path(dst).absolute()
            if dst == into or into in dst.parents:
                count[0] += 1
                if count[0] == args.kill_before_move:
                    _die()
            return replace(src, dst, *a, **k)

        os.replace = hooked
    if args.hang:
        module, name = args.hang.split(":")
        mod = importlib.import_module(module)

        def hang(*a, **k):
            print("hanging", flush=True)
            time.sleep(60)

        setattr(mod, name, hang)
    return main(args.argv)


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="mode", required=True)
    t = sub.add_parser("train")
    t.add_argument("run_dir")
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--wait", default=None)
    t.add_argument("--kill-at-step", type=int, default=None)
    t.add_argument("--kill-before-export", action="store_true")
    c = sub.add_parser("cli")
    c.add_argument("--kill-before-move", type=int, default=0)
    c.add_argument("--into", default=None)
    c.add_argument("--hang", default=None)
    c.add_argument("argv", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    if getattr(args, "argv", None) and args.argv[0] == "--":
        args.argv = args.argv[1:]
    return args


if __name__ == "__main__":
    a = parse(sys.argv[1:])
    sys.exit(train(a) if a.mode == "train" else cli(a))
