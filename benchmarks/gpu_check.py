"""Offline GPU check (issue 14, part 6): ``make gpu-check`` on a GPU machine, after ``make wheelhouse``.

Runs with the machine's own Python and torch (``PYTHON=...`` in make), in this order, each step
under its own timeout and all of them under one budget (default 8 minutes), and prints a Markdown
table of step, device, seconds and status:

1. ``install``: ``pip install --no-index --find-links wheelhouse --no-deps`` of the pins in
   ``wheelhouse/requirements.txt`` (the project's wheel included). torch and torchvision are never
   installed; packages that torch or torchvision require and that are already installed are left
   as they are too (unless the project requires them directly). torch's version is checked
   unchanged afterwards. ``--no-install`` skips the step.
2. ``data``: the smoke profile's synthetic benchmark (built once into the cache).
3. ``notebook NN_name``: each notebook under papermill in the smoke profile on the device
   (``uotisp reproduce --profile smoke --device cuda --only NN``), tables into a temporary folder
   (never into ``results/``).
4. ``amp bf16`` / ``amp fp16``: one ISP network, autocast forward + backward + Adam step on CUDA:
   finite loss and gradients, and (fp16) the gradient scaler took at least one step of five.
5. ``ddp train``: ``torchrun --nproc_per_node=<GPUs>`` of ``uotisp train`` (smoke profile,
   ``--set epochs=2``, ``--amp bf16``); every rank reports the CUDA memory it allocated (> 0 means
   the training ran on the GPU) and ``history.csv`` must hold finite losses for each epoch.

Without CUDA it says so in one line and exits 2, unless ``--allow-cpu``: the same steps on the CPU
(to test the plumbing; 2 gloo processes, ``--amp off``, the AMP rows ``skipped: CPU``), with the
table written to a temporary file, never to ``results/gpu_check.md``. On CUDA the table goes to
``results/gpu_check.md`` (commit it). Exit status: 0 when every step passed, 1 otherwise.

Imports only the standard library at start (torch is looked up in a child process), so it runs
before the wheelhouse is installed.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULT = REPO / "results" / "gpu_check.md"
BUDGET_S = 480.0
#: per-step caps in seconds (each step also stops when the budget is spent)
CAPS = {"install": 180.0, "data": 90.0, "notebook": 150.0, "amp": 60.0, "ddp": 180.0}
TAIL = 2000  # characters of a failing step's output kept for the report


@dataclass
class Row:
    step: str
    device: str
    seconds: float
    status: str
    output: str = ""

    @property
    def ok(self) -> bool:
        """Passed or skipped (``failed: ...`` otherwise)."""
        return not self.status.startswith("failed")


def format_table(rows: list[Row]) -> str:
    """The Markdown table of the check: step, device, seconds (1 decimal), status."""
    lines = ["| step | device | seconds | status |", "|---|---|---:|---|"]
    for r in rows:
        status = r.status.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {r.step} | {r.device} | {r.seconds:.1f} | {status} |")
    return "\n".join(lines) + "\n"


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_step(step: str, device: str, cmd: list[str], timeout: float, env: dict | None = None,
             cwd: Path | None = None) -> Row:
    """Run ``cmd`` (its own process group, so torchrun's workers die with it) for at most
    ``timeout`` seconds -> a row: ``ok``, ``failed: exit N`` or ``failed: timeout after T s``."""
    t0 = time.perf_counter()
    if timeout <= 0:
        return Row(step, device, 0.0, "failed: no time left in the budget")
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        status = "ok" if proc.returncode == 0 else f"failed: exit {proc.returncode}"
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, _ = proc.communicate()
        status = f"failed: timeout after {timeout:g} s"
    finally:
        if proc.poll() is None:
            _kill_group(proc)
    return Row(step, device, time.perf_counter() - t0, status, (out or "")[-TAIL:])


class Budget:
    """Seconds left of the whole check; a step gets ``min(cap, left)``."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def give(self, cap: float) -> float:
        return max(0.0, min(cap, self.end - time.monotonic()))


def probe_torch(python: str) -> dict | None:
    """torch's version, CUDA availability and devices in ``python`` (None if torch does not import)."""
    code = ("import json, torch; c = torch.cuda.is_available(); print(json.dumps({'torch': torch.__version__, "
            "'cuda': c, 'cuda_version': torch.version.cuda, 'count': torch.cuda.device_count() if c else 0, "
            "'name': torch.cuda.get_device_name(0) if c else ''}))")
    res = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- install


def requirement_name(line: str) -> str:
    return re.split(r"[\s;<>=!~\[(@]", line.strip(), maxsplit=1)[0]


def install_list(pins: list[str], keep: set[str]) -> list[str]:
    """The pins to install: every pin whose (normalised) name is not in ``keep``; torch and torchvision
    never (they are not in a wheelhouse; dropped here too in case one was added by hand)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from wheelhouse import normalise

    skip = {normalise(n) for n in keep} | {"torch", "torchvision"}
    return [p for p in pins if p.strip() and not p.startswith("#") and normalise(requirement_name(p)) not in skip]


def kept_torch_deps(python: str) -> set[str]:
    """Names that torch / torchvision require, already installed in ``python``, that the project does
    not require directly: left as they are so the machine's torch keeps its own versions."""
    code = r"""
import importlib.metadata as md, json, re
def names(dist):
    try:
        reqs = md.requires(dist) or []
    except md.PackageNotFoundError:
        return set()
    return {re.split(r"[\s;<>=!~\[(]", r, maxsplit=1)[0] for r in reqs if "extra ==" not in r}
def installed(n):
    try:
        md.version(n); return True
    except md.PackageNotFoundError:
        return False
deps = {n for n in names("torch") | names("torchvision") if installed(n)}
print(json.dumps(sorted(deps)))
"""
    res = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    torch_deps = set(json.loads(res.stdout.strip().splitlines()[-1]))
    import tomllib

    sys.path.insert(0, str(Path(__file__).parent))
    from wheelhouse import normalise

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    direct = {normalise(requirement_name(r)) for r in project}
    return {n for n in torch_deps if normalise(n) not in direct}


def install(python: str, wheelhouse: Path, timeout: float, device: str, torch_before: str) -> Row:
    req = wheelhouse / "requirements.txt"
    if not req.is_file():
        return Row("install", device, 0.0, f"failed: {req} missing; run `make wheelhouse` on a connected machine")
    keep = kept_torch_deps(python)
    pins = install_list(req.read_text().splitlines(), keep)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
        fh.write("\n".join(pins) + "\n")
    cmd = [python, "-m", "pip", "install", "-q", "--no-index", "--find-links", str(wheelhouse), "--no-deps", "-r", fh.name]
    row = run_step("install", device, cmd, timeout)
    os.unlink(fh.name)
    if row.ok:
        after = probe_torch(python)
        if after is None or after["torch"] != torch_before:
            row.status = f"failed: torch changed ({torch_before} -> {after and after['torch']})"
        else:
            row.status = f"ok ({len(pins)} packages; torch {torch_before} and {len(keep)} of its deps left as they were)"
    return row


# ---------------------------------------------------------------- AMP probe (child process)


def amp_probe(mode: str, device: str) -> dict:
    """One ISP network, autocast forward + backward + Adam step: loss finite, gradients finite, and
    for fp16 the number of the five scaler steps that were taken (not skipped)."""
    import torch

    from uotisp_lib.models import build_isp

    torch.manual_seed(0)
    model = build_isp("tinyraw").to(device)
    shape = (4, 4, 32, 32) if model.input_kind == "packed" else (4, 3, 64, 64)
    x = torch.rand(*shape, device=device) * 0.8 + 0.1
    target = torch.rand(4, 3, 64, 64, device=device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    dtype = torch.bfloat16 if mode == "bf16" else torch.float16
    scaler = torch.amp.GradScaler(device.split(":")[0]) if mode == "fp16" else None
    losses, taken, dtypes = [], 0, set()
    for _ in range(5):
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.split(":")[0], dtype=dtype):
            y = model(x)
            dtypes.add(str(y.dtype))
            loss = (y.float() - target).abs().mean()
        losses.append(float(loss.detach()))
        before = [p.detach().clone() for p in model.parameters()]
        if scaler is None:
            loss.backward()
            finite = all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            finite = True
        changed = any(not torch.equal(b, p.detach()) for b, p in zip(before, model.parameters()))
        taken += int(changed and finite)
    mem = torch.cuda.max_memory_allocated() if device.startswith("cuda") else 0
    return {"losses": losses, "steps_taken": taken, "output_dtypes": sorted(dtypes), "cuda_max_memory": mem}


def check_amp(mode: str, device: str, python: str, env: dict, timeout: float) -> Row:
    step = f"amp {mode}"
    if not device.startswith("cuda"):
        return Row(step, device, 0.0, "skipped: CPU (mixed precision is CUDA only)")
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "amp.json"
        row = run_step(step, device, [python, __file__, "--amp-probe", mode, "--device", device, "--result", str(result)],
                       timeout, env=env, cwd=REPO)
        if row.ok:
            r = json.loads(result.read_text())
            if not all(math.isfinite(v) for v in r["losses"]):
                row.status = f"failed: non-finite loss {r['losses']}"
            elif r["steps_taken"] == 0:
                row.status = "failed: every optimiser step was skipped (gradient scaler or non-finite gradients)"
            elif r["cuda_max_memory"] <= 0:
                row.status = "failed: no CUDA memory allocated"
            else:
                row.status = (f"ok (loss {r['losses'][0]:.4f} -> {r['losses'][-1]:.4f}, {r['steps_taken']}/5 steps taken, "
                              f"output {'/'.join(r['output_dtypes'])}, {r['cuda_max_memory'] / 2**20:.0f} MiB)")
    return row


# ---------------------------------------------------------------- DDP training


def train_worker(result_dir: str, argv: list[str]) -> int:
    """One torchrun process: ``uotisp train ARGV``, then write the CUDA memory this rank allocated."""
    import torch

    from uotisp_lib.cli import main

    rc = main(argv)
    mem = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0
    rank = os.environ.get("RANK", "0")
    Path(result_dir, f"rank{rank}.json").write_text(json.dumps({"rc": rc, "cuda_max_memory": mem}))
    return rc


def history_ok(path: Path, epochs: int) -> str:
    """'' when ``history.csv`` has ``epochs`` rows of finite losses, else why not."""
    if not path.is_file():
        return f"no {path.name}"
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if len(rows) != epochs:
        return f"{len(rows)} epochs in {path.name}, expected {epochs}"
    for r in rows:
        for k, v in r.items():
            if k and ("loss" in k or k == "total") and v not in ("", None) and not math.isfinite(float(v)):
                return f"epoch {r.get('epoch')}: {k} = {v}"
    return ""


def ddp_train(device: str, nproc: int, epochs: int, python: str, env: dict, work: Path, timeout: float) -> Row:
    out, report = work / "ddp-run", work / "ddp-ranks"
    report.mkdir(parents=True, exist_ok=True)
    amp = "bf16" if device.startswith("cuda") else "off"
    argv = ["train", "--out", str(out), "--profile", "smoke", "--device", device, "--amp", amp, "--set", f"epochs={epochs}"]
    cmd = [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", __file__,
           "--train-worker", str(report), "--", *argv]
    step = f"ddp train ({nproc} proc{'s' if nproc > 1 else ''}, amp {amp}, {epochs} epoch{'s' if epochs > 1 else ''})"
    row = run_step(step, device, cmd, timeout, env=env, cwd=REPO)
    if not row.ok:
        return row
    ranks = [json.loads(p.read_text()) for p in sorted(report.glob("rank*.json"))]
    bad = history_ok(out / "history.csv", epochs)
    if len(ranks) != nproc:
        row.status = f"failed: {len(ranks)} of {nproc} processes reported"
    elif bad:
        row.status = f"failed: {bad}"
    elif device.startswith("cuda") and not all(r["cuda_max_memory"] > 0 for r in ranks):
        row.status = "failed: a process allocated no CUDA memory (did not train on the GPU)"
    elif device.startswith("cuda"):
        row.status = "ok (CUDA memory per rank: " + ", ".join(f"{r['cuda_max_memory'] / 2**20:.0f} MiB" for r in ranks) + ")"
    return row


# ---------------------------------------------------------------- the check


def notebooks(only: list[str] | None) -> list[str]:
    names = sorted(p.stem for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    return [n for n in names if not only or any(n.startswith(o) for o in only)]


def child_env(device: str) -> dict:
    """The checkout first on the path (the notebooks live here), headless plots, unbuffered output."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in [str(REPO), os.environ.get("PYTHONPATH", "")] if p),
               MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    if device == "cpu":
        env.setdefault("OMP_NUM_THREADS", "1")
    return env


def header(info: dict, device: str, budget: float, spent: float) -> str:
    when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    gpu = f"{info['count']} x {info['name']}, CUDA {info['cuda_version']}" if info["cuda"] else "no CUDA device"
    return (f"# GPU check (`make gpu-check`)\n\n{when}; torch {info['torch']}; {gpu}; Python "
            f"{sys.version.split()[0]}; device `{device}`; {spent:.0f} s of the {budget:.0f} s budget.\n\n")


def run_check(args: argparse.Namespace) -> int:
    python = args.python or sys.executable
    info = probe_torch(python)
    if info is None:
        print(f"gpu-check: torch does not import in {python}; install the machine's own torch first "
              "(the wheelhouse never holds torch)", file=sys.stderr)
        return 2
    if not info["cuda"] and not args.allow_cpu:
        print(f"gpu-check: no CUDA device (torch {info['torch']}, torch.cuda.is_available() is False); "
              "nothing checked (--allow-cpu runs the same steps on the CPU)", file=sys.stderr)
        return 2
    device = "cuda" if info["cuda"] else "cpu"
    out = Path(args.out) if args.out else (RESULT if device == "cuda" else None)
    if device == "cpu" and out is not None and out.resolve() == RESULT.resolve():
        print(f"gpu-check: {RESULT.relative_to(REPO)} is for a GPU run; a CPU run writes elsewhere (--out)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="uotisp-gpu-check-"))
    if out is None:
        out = work / "gpu_check.md"
    budget = Budget(args.budget)
    t_start = time.monotonic()
    env = child_env(device)
    rows: list[Row] = []

    def add(row: Row) -> None:
        rows.append(row)
        print(f"{row.step}: {row.status} ({row.seconds:.1f} s)", flush=True)
        if not row.ok and row.output:
            print("  " + row.output.strip().replace("\n", "\n  ")[-TAIL:], flush=True)

    if args.no_install:
        add(Row("install", "-", 0.0, "skipped (--no-install)"))
    else:
        add(install(python, Path(args.wheelhouse), budget.give(CAPS["install"]), "-", info["torch"]))
    if not rows[-1].ok:
        print("gpu-check: the install failed; nothing else runs", file=sys.stderr)
    else:
        results_dir = work / "results"
        data = ("from uotisp_lib.config import resolve_run; from uotisp_lib.data import ensure_dataset; "
                f"print(ensure_dataset(resolve_run('smoke', None, {device!r}, 0)))")
        add(run_step("data (smoke benchmark)", device, [python, "-c", data], budget.give(CAPS["data"]), env=env, cwd=REPO))
        for nb in notebooks(args.only):
            cmd = [python, "-m", "uotisp_lib.cli", "reproduce", "--profile", "smoke", "--device", device,
                   "--only", nb[:2], "--results-dir", str(results_dir)]
            add(run_step(f"notebook {nb}", device, cmd, budget.give(CAPS["notebook"]), env=env, cwd=REPO))
        for mode in ("bf16", "fp16"):
            add(check_amp(mode, device, python, env, budget.give(CAPS["amp"])))
        nproc = args.nproc or (info["count"] if device == "cuda" else 2)
        add(ddp_train(device, max(1, nproc), args.epochs, python, env, work, budget.give(CAPS["ddp"])))
    spent = time.monotonic() - t_start
    table = format_table(rows)
    print("\n" + table)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(header(info, device, args.budget, spent) + table)
    passed = all(r.ok for r in rows)
    print(f"gpu-check: {'passed' if passed else 'FAILED'} in {spent:.0f} s; table: {out}; work folder: {work}")
    return 0 if passed else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--train-worker"]:  # inside torchrun
        sep = argv.index("--")
        return train_worker(argv[1], argv[sep + 1:])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--wheelhouse", default=str(REPO / "wheelhouse"))
    p.add_argument("--python", default="", help="the interpreter to install into and run (default: this one)")
    p.add_argument("--allow-cpu", action="store_true", help="without CUDA, run the same steps on the CPU (plumbing test)")
    p.add_argument("--no-install", action="store_true", help="skip the pip install from the wheelhouse")
    p.add_argument("--out", default="", help="where the table goes (default results/gpu_check.md on CUDA, a temporary file on CPU)")
    p.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for the whole check (default 480)")
    p.add_argument("--only", nargs="*", default=None, help="notebook name prefixes (default: every notebook)")
    p.add_argument("--epochs", type=int, default=2, help="epochs of the DDP training (default 2)")
    p.add_argument("--nproc", type=int, default=0, help="processes of the DDP training (default: GPUs; CPU: 2)")
    p.add_argument("--amp-probe", choices=("bf16", "fp16"), default=None, help=argparse.SUPPRESS)
    p.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    p.add_argument("--result", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.amp_probe:
        Path(args.result).write_text(json.dumps(amp_probe(args.amp_probe, args.device)))
        return 0
    return run_check(args)


if __name__ == "__main__":
    sys.exit(main())
