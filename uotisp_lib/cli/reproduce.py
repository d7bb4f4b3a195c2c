"""``uotisp reproduce``: build the data of a profile, run every notebook with papermill, print tables.

Executed notebooks land in ``results/<profile>/executed/`` (not committed); the tables and figures
they write land in ``results/<profile>/tables`` and ``figures``; ``results/<profile>/README.md``
indexes them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from uotisp_lib.config import PROFILES, resolve_run

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
KERNEL = "python3"  # the ipykernel of the interpreter running this command


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("reproduce", help="run every notebook of a profile and regenerate results/")
    p.add_argument("--profile", choices=PROFILES, default="smoke")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-root", default="", help="a real dataset (default: the synthetic benchmark)")
    p.add_argument("--device", default="auto")
    p.add_argument("--only", nargs="*", default=None, help="notebook name prefixes, e.g. 00 02")
    p.add_argument(
        "--results-dir", default="",
        help="where tables, figures and executed notebooks go (default: results/<profile>); "
        "CI regenerates the smoke tables into a temporary folder and compares them with results/smoke",
    )
    return p


def notebook_paths(only: list[str] | None = None) -> list[Path]:
    """The paired notebooks in run order (``NN_name.ipynb``), optionally filtered by prefix."""
    paths = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if only:
        paths = [p for p in paths if any(p.name.startswith(o) for o in only)]
    if not paths:
        raise FileNotFoundError(f"{NOTEBOOKS}: no notebooks NN_*.ipynb found (filter: {only})")
    return paths


def run_notebook(path: Path, out: Path, parameters: dict, cwd: Path = REPO) -> None:
    """Execute one notebook with papermill into ``out`` (raises on a failing cell)."""
    import papermill as pm

    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        pm.execute_notebook(
            str(path), str(out), parameters=parameters, kernel_name=KERNEL, cwd=str(cwd), progress_bar=False
        )
    except pm.PapermillExecutionError as err:
        raise NotebookError(path, out, err) from None


class NotebookError(ValueError):
    """A notebook cell failed; the message (one line) names the notebook, the cell and the cause."""

    def __init__(self, path: Path, executed: Path, err) -> None:
        cause = " ".join(str(err.evalue).split()) or "(no message)"
        super().__init__(
            f"{path.name}: cell {err.cell_index} (In [{err.exec_count}]) failed: {err.ename}: {cause} "
            f"(executed notebook: {executed})"
        )


def run(args: argparse.Namespace) -> int:
    from uotisp_lib.data import ensure_dataset
    from uotisp_lib.reporting import PROFILE_NOTES, write_index

    from uotisp_lib.cli.common import at_least, device
    from uotisp_lib.io import check_output_path

    at_least(args.seed, 0, "--seed")
    device(args.device)
    if args.data_root and not Path(args.data_root).is_dir():
        raise ValueError(f"--data-root {args.data_root}: not a folder; expected a UP-ISP style dataset folder")
    where = {"results_dir": args.results_dir} if args.results_dir else {}
    run_cfg = resolve_run(args.profile, args.data_root or None, args.device, args.seed, **where)
    check_output_path(run_cfg.results_dir, "results folder")
    root = ensure_dataset(run_cfg)
    print(f"data: {root}")
    params = {"profile": args.profile, "seed": args.seed, "data_root": args.data_root, "device": args.device}
    if args.results_dir:
        params["results_dir"] = str(run_cfg.results_dir)
    executed = run_cfg.results_dir / "executed"
    for nb in notebook_paths(args.only):
        t0 = time.perf_counter()
        print(f"running {nb.name} ...", flush=True)
        run_notebook(nb, executed / nb.name, params)
        print(f"  done in {time.perf_counter() - t0:.1f} s", flush=True)
    index = write_index(run_cfg.results_dir)
    for md in sorted(run_cfg.tables_dir.glob("*.md")):
        print(f"\n## {md.stem}\n\n{md.read_text()}")
    if args.profile in PROFILE_NOTES:
        print(f"\nNOTE ({args.profile} profile): {PROFILE_NOTES[args.profile]}")
    print(f"results: {run_cfg.results_dir}  (index: {index})", file=sys.stderr)
    return 0
