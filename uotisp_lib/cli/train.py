"""``uotisp train``: train an ISP on a UP-ISP folder with the UOT or the pseudo-pair trainer.

``--data`` is a UP-ISP folder, a Zurich RAW-to-RGB folder or a folder of DNG files (with their
renderings ``<name>.jpg`` for paired training), cut into ``--patch`` patches on the fly
(:mod:`uotisp_lib.data.dng_folder`); the layout is detected.

The run folder ``--out`` holds ``ckpt/`` (checkpoints, one per epoch), ``export/`` (the latest map,
for ``uotisp infer`` / ``eval``), ``best/`` (the map of the best epoch: highest validation PSNR when
the data has val/gt, else lowest ground-truth-free proxy), ``history.csv`` (one row per epoch) and
``tb/`` (the same history as TensorBoard event files: ``tensorboard --logdir OUT/tb``).
Running the same command again resumes from the newest checkpoint (or reuses a finished run);
``--fresh`` moves the old run aside and starts over.

The configuration starts from the profile (``--profile``: the study defaults of notebooks 04 / 05),
then ``--config FILE.toml``, then ``--arch`` / ``--mode`` / ``--seed``, then each ``--set key=value``
(fields of UOTTrainConfig or PseudoPairConfig, dotted for nested ones: ``--set uot.tau=8``).

Several processes (data-parallel): ``torchrun --nproc_per_node=N --no-python uotisp train ...``
(one GPU per process on CUDA, gloo processes on the CPU; ``batch_size`` stays the global batch, so
the run is the single-process run with the same configuration and resumes under any N). Rank 0
alone prints and writes; if a process dies the others stop and say so, and the same command
resumes from the last checkpoint. ``--amp bf16|fp16`` trains in mixed precision on CUDA (the fp16
loss scales are checkpointed); ``--channels-last`` and ``--compile`` change how the same steps run
(the configuration and its hash stay the same, so a run resumes with or without them).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

TRAINERS = ("uot", "pseudo-pairs")
AMP_MODES = ("off", "bf16", "fp16")  # uotisp_lib.train.AMP_MODES (not imported: keeps --help fast)
MODES = ("unpaired", "paired")
PROFILES = ("smoke", "cpu", "full")  # uotisp_lib.config.PROFILES (not imported: keeps --help fast)
DNG_PATCH = 256  # uotisp_lib.data.layouts.DNG_PATCH (not imported: keeps --help fast)

EXAMPLES = """examples:
  uotisp train --data DATA --out runs/uot --profile cpu
  uotisp train --data DATA --out runs/uot --arch unet_isp --set uot.tau=8 --set epochs=20
  uotisp train --data DATA --out runs/mine --arch mypkg.nets:MyISP --set arch_kwargs='{width=16}'
  uotisp train --data DATA --out runs/mine --plugin mypkg.nets --arch my_isp
  uotisp train --trainer pseudo-pairs --mode paired --data DATA --out runs/l1
  torchrun --nproc_per_node=2 --no-python uotisp train --data DATA --out runs/uot --amp bf16
"""


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "train", help="train an ISP (UOT or pseudo-pairs) on a UP-ISP folder; resumes automatically",
        description=__doc__.split("\n\n", 1)[1], epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--trainer", choices=TRAINERS, default="uot", help="uot (EGUOT-ISP, default) or pseudo-pairs (Borelli)")
    p.add_argument("--mode", choices=MODES, default=None,
                   help="unpaired (default): train/raws -> train/jpegs; paired: also the ground truth train/gt")
    p.add_argument("--arch", default=None,
                   help="ISP network: colornet, tinyraw, unet_isp, a registered plug-in, or package.module:Class "
                        "(default: the profile's)")
    p.add_argument("--plugin", action="append", default=[], metavar="PACKAGE.MODULE",
                   help="import this module first, so the ISPs it registers (@register_isp) are known to --arch "
                        "by name (repeatable; installed packages can instead declare an entry point in group "
                        "uotisp.isps)")
    p.add_argument("--data", default="",
                   help="UP-ISP folder: train/raws/*.npy, train/jpegs/*.jpg (+ train/gt for paired, val/ and test/ "
                        "optional), a Zurich RAW-to-RGB folder, or a folder of DNGs ([train/]<name>.dng, + <name>.jpg "
                        "renderings); default: the profile's synthetic benchmark, built on first use")
    p.add_argument("--patch", type=int, default=None,
                   help=f"DNG folders only: packed pixels a side of the patches cut from each DNG (default {DNG_PATCH})")
    p.add_argument("--out", required=True, help="run folder (ckpt/, export/, best/, history.csv, tb/)")
    p.add_argument("--profile", choices=PROFILES, default="smoke", help="default sizes and hyper-parameters (default smoke)")
    p.add_argument("--seed", type=int, default=None, help="training seed (default 0)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a config field, e.g. --set epochs=20 --set uot.tau=8 (repeatable)")
    p.add_argument("--config", default=None, metavar="FILE.toml", help="config fields from a TOML file ([uot] table for uot.*)")
    p.add_argument("--pairs", default="fgw",
                   help="pseudo-pairs, unpaired: fgw, ot, uot or knn (a pair graph as `uotisp match` builds), "
                        "random, or a GRAPH.npz written by `uotisp match` (default fgw)")
    p.add_argument("--amp", choices=AMP_MODES, default="off",
                   help="mixed precision on CUDA: bf16, or fp16 with a gradient scaler (default off; "
                        "refused on the CPU, which trains in float32)")
    p.add_argument("--channels-last", action="store_true",
                   help="train in channels_last memory format (same results within float rounding; off by default, "
                        "see benchmarks/README.md for when it is faster)")
    p.add_argument("--compile", action="store_true",
                   help="compile the map with torch.compile (first steps slower; needs a C++ compiler on the CPU); "
                        "checkpoints are the same, so a run resumes with or without it")
    p.add_argument("--stream", action="store_true",
                   help="read the patches per batch (memory-mapped .npy, decoded images) instead of loading whole "
                        "splits into memory: memory does not grow with the dataset (UP-ISP layouts; same results)")
    p.add_argument("--workers", type=int, default=0, metavar="N",
                   help="with --stream: DataLoader processes reading the next batches ahead (default 0)")
    p.add_argument("--fresh", action="store_true",
                   help="start over: an existing run folder is moved aside to <out>.old-<time> (never deleted)")
    return p


def build_config(trainer: str, profile, overrides: dict, mode: str | None, arch: str | None, seed: int | None):
    """The trainer's config: the profile's defaults, then ``overrides`` (``--config`` entries, then
    ``--arch`` / ``--mode`` / ``--seed``, then ``--set``; see :mod:`uotisp_lib.overrides`)."""
    from uotisp_lib.experiments import pseudo_pair_config
    from uotisp_lib.overrides import apply_overrides
    from uotisp_lib.study import base_config

    flags = {}
    if arch is not None:
        flags["arch"] = (arch, f"--arch {arch}")
    if seed is not None:
        flags["seed"] = (seed, f"--seed {seed}")
    if mode is not None:
        flags["mode" if trainer == "uot" else "paired"] = (mode if trainer == "uot" else mode == "paired", f"--mode {mode}")
    ov = {**overrides["config"], **flags, **overrides["set"]}
    first = {k: v[0] for k, v in ov.items() if k in ("arch", "seed", "paired")}
    arch0 = first["arch"] if isinstance(first.get("arch"), str) else None
    seed0 = first["seed"] if isinstance(first.get("seed"), int) else 0
    if trainer == "uot":
        base = base_config(profile.uot, arch0 or profile.uot.arch, seed0)
    else:
        base = pseudo_pair_config(profile.train, arch0 or "colornet", seed0, paired=first.get("paired") is True)
    return apply_overrides(base, ov)


def check_arch(cfg) -> str:
    """Build the configured network once (cheap) -> its ``input_kind``; one-line errors name --arch."""
    from uotisp_lib.models import resolve_isp
    from uotisp_lib.models.registry import ENTRY_POINT_GROUP

    try:
        cls = resolve_isp(cfg.arch)
    except KeyError as err:
        raise ValueError(f"--arch {cfg.arch}: {err.args[0]}, or a name registered by a --plugin module "
                         f"(or an entry point of group {ENTRY_POINT_GROUP})") from None
    except ValueError as err:
        raise ValueError(f"--arch {cfg.arch}: {err}") from None
    try:
        model = cls(**dict(cfg.arch_kwargs))
    except (TypeError, ValueError) as err:
        raise ValueError(f"--arch {cfg.arch}: arch_kwargs {dict(cfg.arch_kwargs)} do not build it ({' '.join(str(err).split())})") from None
    return model.input_kind


def check_data(root: Path, need_gt: bool, patch: int | None = None):
    """One line naming --data unless ``root`` holds train/raws and train/jpegs (and train/gt): a
    UP-ISP folder, a Zurich RAW-to-RGB folder (detected; its canon JPEGs are both), or a DNG folder
    (detected; its DNGs are the raws, their renderings the gt and, without a jpegs/ folder, the
    targets). ``patch`` (--patch) is refused for the other layouts. Returns the layout (files listed,
    none read)."""
    from uotisp_lib.data.layouts import scan_dataset

    if not root.is_dir():
        raise ValueError(f"--data {root}: {'is not a folder' if root.exists() else 'does not exist'}; expected a UP-ISP folder")
    layout = scan_dataset(root)
    check_patch(patch, layout)
    kinds = ("raws", "jpegs", "gt") if need_gt else ("raws", "jpegs")
    for kind in kinds:
        if not layout.files.get("train", {}).get(kind):
            why = " (--mode paired needs the ground truth)" if kind == "gt" else ""
            if layout.format == "dng":
                what = {"raws": "DNG files", "jpegs": "targets", "gt": "renderings"}[kind]
                raise ValueError(f"--data {root}: no train {what}{why}; expected [train/]<name>.dng with its rendering "
                                 "<name>.jpg|.jpeg|.png beside it" + ("" if need_gt else ", or targets in [train/]jpegs/"))
            raise ValueError(f"--data {root}: no train/{kind}{why}; expected train/raws/*.npy, train/jpegs/*.jpg"
                             + (", train/gt/*.png" if need_gt else ""))
    if need_gt and layout.format == "dng":
        layout.check_rendered("train")  # every DNG needs its rendering (listed, not read)
    return layout


def check_patch(patch: int | None, layout) -> None:
    """--patch: at least 1, and for DNG folders only (one line naming it otherwise)."""
    from uotisp_lib.cli.common import at_least

    if patch is None:
        return
    at_least(patch, 1, "--patch")
    if layout.format != "dng":
        raise ValueError(f"--patch {patch}: applies to DNG folders only; {layout.root} is a {layout.format} folder "
                         "of fixed patches")


def check_out(out: Path, fresh: bool) -> None:
    """Refuse a non-empty --out that holds no run (its files would mix with a run's)."""
    from uotisp_lib.cli.common import is_empty_dir
    from uotisp_lib.io import check_output_path

    check_output_path(out, "--out")
    is_run = (out / "ckpt").is_dir() or (out / "data.json").is_file()  # data.json: started, no checkpoint yet
    if out.is_dir() and not is_empty_dir(out) and not fresh and not is_run:
        raise ValueError(f"--out {out}: folder is not empty and holds no run (no ckpt/); expected a new folder, "
                         "an empty one, or a run folder to resume (or --fresh to move it aside)")


def check_same_data(out: Path, record: dict) -> None:
    """A run resumes only on the data it started on: ``<out>/data.json`` (:func:`record_data`) holds
    the data folder and (DNG folders) the patch size of the first start; a resume with another one
    is one line naming --data / --patch (the config hash does not cover them)."""
    path = out / "data.json"
    if not path.is_file():
        return
    saved = json.loads(path.read_text())
    for key, flag in (("data", "--data"), ("patch", "--patch")):
        if saved.get(key) != record.get(key):
            raise ValueError(f"{flag} {record.get(key)}: the run in {out} was trained on {flag} {saved.get(key)}; "
                             "use the same, or --fresh to move the run aside, or another --out")


def record_data(out: Path, record: dict) -> None:
    """Write ``<out>/data.json`` once the data has been read (rank 0; kept when it exists)."""
    from uotisp_lib import distributed
    from uotisp_lib.io import atomic_write_text

    path = out / "data.json"
    if distributed.is_main() and not path.is_file():
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True) + "\n")


def move_aside(out: Path) -> Path | None:
    """Rename a non-empty run folder to ``<out>.old-<time>`` (under its run lock, so a folder in use
    is refused); None when there is nothing to move."""
    from uotisp_lib.checkpoint import RunLockedError, run_lock
    from uotisp_lib.cli.common import is_empty_dir

    if not out.exists() or is_empty_dir(out):
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside, n = out.with_name(f"{out.name}.old-{stamp}"), 1
    while aside.exists():
        aside, n = out.with_name(f"{out.name}.old-{stamp}-{n}"), n + 1
    try:
        with run_lock(out):
            os.rename(out, aside)
    except RunLockedError as err:
        raise ValueError(f"--out {err}") from None
    return aside


def pair_sampler(spec: str, root: Path, data, match, device: str):
    """The pair sampler of ``--pairs``: random, a matching method, or a GRAPH.npz."""
    from uotisp_lib.experiments import graph_pair_fn, random_pair_fn
    from uotisp_lib.matching import PairGraph, build_pair_graph

    if spec == "random":
        return random_pair_fn(data.targets.stems)
    if spec.endswith(".npz"):
        graph = PairGraph.load(spec)
    else:
        graph, _ = build_pair_graph(root, spec, k=match.k_images, k_patch=match.k_patches, backend=match.backend,
                                    seed=0, device=device, target_ids=data.target_image_ids)
    return graph_pair_fn(graph, set(data.targets.stems))


def check_pairs(spec: str) -> None:
    from uotisp_lib.matching import METHODS

    if spec == "random" or spec in METHODS:
        return
    if not spec.endswith(".npz"):
        raise ValueError(f"--pairs {spec}: expected one of {', '.join(METHODS)}, or a GRAPH.npz file")
    if not Path(spec).is_file():
        raise ValueError(f"--pairs {spec}: no such file; expected a GRAPH.npz written by `uotisp match`")


def check_amp(amp: str, dev: str) -> None:
    """Mixed precision is for CUDA; the CPU trains in float32 (one line naming --amp otherwise)."""
    if amp != "off" and not dev.startswith("cuda"):
        raise ValueError(f"--amp {amp}: mixed precision needs a CUDA device (got --device {dev}); "
                         "CPU training stays float32, expected --amp off")


def check_compile(compile: bool, dev: str) -> None:
    """--compile on the CPU needs a C++ compiler for the generated kernels (one line naming it otherwise)."""
    import shutil

    if not compile or dev.startswith("cuda"):
        return
    names = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "c++", "clang++"]
    if not any(shutil.which(n) for n in names):
        raise ValueError(f"--compile: torch.compile on the CPU needs a C++ compiler ({', '.join(names)} on PATH); "
                         "none found: install one, or train without --compile")


def run(args: argparse.Namespace) -> int:
    from uotisp_lib import distributed
    from uotisp_lib.cli.common import device

    dev = distributed.local_device(device(args.device))
    check_amp(args.amp, dev)
    check_compile(args.compile, dev)
    with distributed.process_group(dev):
        try:
            return _run(args, dev)
        except SystemExit as err:  # SIGTERM: torchrun stops every process when one fails
            if distributed.is_distributed():
                _stopped(args, f"stopped by a signal (exit {err.code}): another process failed or the job was interrupted")
            raise
        except RuntimeError as err:  # a collective whose peer is gone
            if not distributed.is_distributed() or not _is_peer_loss(err):
                raise
            _stopped(args, "lost contact with another process (it died or was killed)")
            return 1


def _is_peer_loss(err: RuntimeError) -> bool:
    import torch.distributed as dist

    text = str(err).lower()
    return isinstance(err, getattr(dist, "DistBackendError", ())) or any(
        w in text for w in ("connection closed", "connection reset", "broken pipe", "timed out", "gloo"))


def _stopped(args: argparse.Namespace, why: str) -> None:
    """One line on stderr: which process stopped, why, and how to resume."""
    import sys

    from uotisp_lib import distributed
    from uotisp_lib.checkpoint import LATEST

    pointer = Path(args.out) / "ckpt" / LATEST
    last = pointer.read_text().strip() if pointer.is_file() else "none yet"
    # the leading newline ends a progress bar left mid-line, so the message is a line of its own
    print(f"\nuotisp train: error: process {distributed.rank()} of {distributed.world_size()} {why}; the job stops. "
          f"Last checkpoint: {last}; run the same command again to resume", file=sys.stderr, flush=True)


def _run(args: argparse.Namespace, dev: str) -> int:
    from uotisp_lib import distributed
    from uotisp_lib.checkpoint import RunLockedError
    from uotisp_lib.cli.common import at_least
    from uotisp_lib.config import get_profile, seed_everything
    from uotisp_lib.overrides import load_toml, parse_sets
    from uotisp_lib.train import ConfigMismatchError, config_hash

    say = print if distributed.is_main() else (lambda *a, **k: None)  # rank 0 alone talks
    # ---- everything checked before any work
    if args.seed is not None:
        at_least(args.seed, 0, "--seed")
    out = Path(args.out)
    check_out(out, args.fresh)
    profile = get_profile(args.profile)
    overrides = {"config": load_toml(args.config) if args.config else {}, "set": parse_sets(args.overrides)}
    if args.plugin:
        from uotisp_lib.models import load_plugins

        try:
            load_plugins(args.plugin)
        except ValueError as err:
            raise ValueError(f"--plugin: {err}") from None
    cfg = build_config(args.trainer, profile, overrides, args.mode, args.arch, args.seed)
    paired = cfg.mode == "paired" if args.trainer == "uot" else cfg.paired
    check_arch(cfg)
    if args.trainer == "pseudo-pairs" and not paired:
        check_pairs(args.pairs)
    if args.data:
        layout = check_data(Path(args.data), paired, args.patch)
        if layout.format == "dng" and args.trainer == "pseudo-pairs" and not paired and args.pairs != "random":
            raise ValueError(f"--pairs {args.pairs}: pair graphs are not built on DNG folders; expected --pairs random "
                             "or --mode paired (or --trainer uot)")
    elif args.patch is not None:
        raise ValueError(f"--patch {args.patch}: applies to DNG folders only; expected --data DNG_FOLDER")
    world = distributed.world_size()
    if cfg.batch_size < world:
        raise ValueError(f"--set batch_size={cfg.batch_size}: the global batch is split over {world} processes; "
                         f"expected batch_size >= {world}")
    distributed.barrier()  # every process checked --out before rank 0 writes into it
    # ---- the work
    aside = None
    if args.fresh and distributed.is_main():
        aside = move_aside(out)
    distributed.barrier()
    if aside is not None:
        say(f"--fresh: moved the old run {out} aside to {aside}")
    seed_everything(cfg.seed)
    with distributed.main_first():  # a synthetic benchmark is built once, by rank 0
        root = _data_root(args, profile, cfg.seed, dev)
    from uotisp_lib.experiments import load_training_data, run_pseudo_pair, run_uot

    dng = args.data and layout.format == "dng"
    where = {"data": str(Path(root).resolve()), "patch": (args.patch or DNG_PATCH) if dng else None}
    check_same_data(out, where)
    data = load_training_data(root, proxy_fraction=profile.train.proxy_fraction, seed=cfg.seed,
                              patch=args.patch or DNG_PATCH, stream=args.stream)
    record_data(out, where)
    procs = f", {world} processes" if world > 1 else ""
    say(f"train {args.trainer} ({'paired' if paired else 'unpaired'}, {cfg.arch}) on {root}: {len(data.raw_train)} RAW "
        f"patches, {len(data.targets)} target patches; config hash {config_hash(cfg)}{procs} -> {out}")
    try:
        if args.trainer == "uot":
            row, trainer = run_uot(data, cfg, out, dev, amp=args.amp, num_workers=args.workers, progress=True, log=say,
                                   channels_last=args.channels_last, compile=args.compile)
        else:
            with distributed.main_first():  # a pair graph (and its caches) is built once, by rank 0
                pair_fn, extractor = _pair_setup(args, paired, root, data, profile, dev)
            row, trainer = run_pseudo_pair(data, cfg, args.out, pair_fn, dev, _preprocess(), extractor,
                                           amp=args.amp, num_workers=args.workers, progress=True, log=say,
                                           channels_last=args.channels_last, compile=args.compile)
    except RunLockedError as err:
        raise ValueError(f"--out {err}") from None
    except ConfigMismatchError as err:
        raise ValueError(f"--out {out}: holds a run of another configuration ({', '.join(err.diff)} differ); "
                         "use --fresh to move it aside and start over, or another --out") from None
    if distributed.is_main():
        _report(trainer, row, out)
    return 0


def _data_root(args: argparse.Namespace, profile, seed: int, dev: str) -> Path:
    """``--data``, or the profile's synthetic benchmark (the UOT study's own for ``--trainer uot``)."""
    from uotisp_lib.config import resolve_run
    from uotisp_lib.data import ensure_dataset

    run_cfg = resolve_run(profile.name, args.data or None, dev, seed)
    if args.data or args.trainer != "uot" or profile.uot.synth is None:
        return ensure_dataset(run_cfg)
    return ensure_dataset(run_cfg, profile.uot.synth, "uot")


def _preprocess():
    from uotisp_lib.preprocessing import PreprocessConfig

    return PreprocessConfig()


def _pair_setup(args, paired: bool, root: Path, data, profile, dev: str):
    """The pseudo-pair trainer's pair sampler and Gram feature extractor (None, None when paired)."""
    from uotisp_lib.features import load_gram_extractor

    pair_fn, extractor = None, None
    if not paired:
        pair_fn = pair_sampler(args.pairs, root, data, profile.match, dev)
        if profile.train.gram:
            extractor, _ = load_gram_extractor("auto", dev)
    return pair_fn, extractor


def _report(trainer, row: dict, out: Path) -> None:
    """The run's last epoch, where its export and history are, and how to score it."""
    last = trainer.state.history[-1] if trainer.state.history else {}
    scores = "".join(f", {k} {last[k]:.4g}" for k in ("val_psnr", "proxy") if k in last)
    extra = trainer.state.extra
    best = ""
    if "best_epoch" in extra:
        how = "highest val_psnr" if extra.get("selection", "val_psnr") == "val_psnr" else "lowest proxy, no val ground truth"
        best = f", best: {out / 'best'} (epoch {extra['best_epoch']}, {how})"
    print(f"done: epoch {trainer.state.extra['epoch']}/{trainer.epochs}, step {trainer.state.step}{scores}; "
          f"export: {out / 'export'}{best}; history: {out / 'history.csv'}")
    print(f"score it: uotisp eval --checkpoint {out / 'export'} --data DATA --split test")
