"""Build an offline wheelhouse for a GPU machine without internet (issue 14, part 6): ``make wheelhouse``.

Every package the project needs at run time (its dependencies and theirs, as installed in the
virtualenv; not the ``[test]`` extra), pinned to its version in ``pip freeze --all``, except torch, torchvision and their CUDA wheels (``triton``, ``pytorch-triton*``, ``nvidia-*``,
``cuda-*``), pip itself and the project; plus a wheel of the project. The GPU machine keeps its
own torch: ``make gpu-check`` installs from this folder with ``pip install --no-index``.

Usage (run on a connected machine, with the project's ``.venv`` set up)::

    python benchmarks/wheelhouse.py [--venv .venv] [--out wheelhouse]
                                    [--platform manylinux2014_x86_64] [--python-version 3.11]

``wheelhouse/requirements.txt`` lists the exact pins, the project last. Without ``--platform`` /
``--python-version`` the wheels are for this machine (``pip wheel``: a package published only as
source is built into a wheel here). With them, every wheel that is not pure Python (``none-any``)
is downloaded again for that platform and Python (``pip download --only-binary=:all:``); a pinned
version that has no wheel there fails with pip's message.

This script needs only the standard library (it drives the venv's pip).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROJECT = "uotisp"

#: names (normalised) left out: the GPU machine's own torch stack, and pip
DROP_EXACT = frozenset({"torch", "torchvision", "triton", "pip"})
#: prefixes (normalised) left out: torch's CUDA runtime wheels and its triton builds
DROP_PREFIXES = ("nvidia-", "cuda-", "pytorch-triton")


def normalise(name: str) -> str:
    """PEP 503 name: ``Jinja2`` -> ``jinja2``, ``typing_extensions`` -> ``typing-extensions``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def dropped(name: str, project: str = PROJECT) -> bool:
    """True for a package the wheelhouse leaves out (torch stack, pip, the project)."""
    n = normalise(name)
    return n in DROP_EXACT or n == normalise(project) or n.startswith(DROP_PREFIXES)


def filter_freeze(lines: list[str], project: str = PROJECT, needed: set[str] | None = None) -> list[str]:
    """``pip freeze`` lines -> the ``name==version`` pins of the wheelhouse, in input order; with
    ``needed`` (normalised names) only those.

    Comments, options and editable installs (``-e ...``) are skipped; a direct reference
    (``name @ URL``) cannot come from an index and is refused (ValueError naming it), unless it is a
    dropped package (e.g. the project installed from a folder)."""
    pins = []
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith(("#", "-")):
            continue
        name = re.split(r"\s*(?:==|===|@)\s*", line, maxsplit=1)[0]
        if dropped(name, project) or (needed is not None and normalise(name) not in needed):
            continue
        if "==" not in line or " @ " in line:
            raise ValueError(f"{line!r}: not a name==version pin; install it from an index, or drop it from the venv")
        pins.append(line)
    return pins


#: run by the venv's interpreter: the installed distributions the project needs at run time
CLOSURE = r"""
import importlib.metadata as md, json, re, sys
from packaging.requirements import Requirement

def canon(n):
    return re.sub(r"[-_.]+", "-", n).lower()

seen, todo = {}, [(sys.argv[1], frozenset())]
while todo:
    name, extras = todo.pop()
    key = canon(name)
    if key in seen and extras <= seen[key]:
        continue
    seen[key] = seen.get(key, frozenset()) | extras
    try:
        reqs = md.requires(name) or []
    except md.PackageNotFoundError:
        continue  # an optional dependency that is not installed
    for r in reqs:
        req = Requirement(r)
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in extras | {""}):
            todo.append((req.name, frozenset(req.extras)))
print(json.dumps(sorted(seen)))
"""


def runtime_closure(venv_python: Path, project: str = PROJECT) -> set[str]:
    """Normalised names of the project and everything it needs at run time, as installed in the venv."""
    res = subprocess.run([str(venv_python), "-c", CLOSURE, project], check=True, capture_output=True, text=True)
    return set(json.loads(res.stdout.strip().splitlines()[-1]))


def pip(venv_python: Path, *args: str) -> None:
    cmd = [str(venv_python), "-m", "pip", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def wheel_tags(path: Path) -> tuple[str, str, str, str]:
    """``name-ver(-build)?-py-abi-plat.whl`` -> (normalised name, py, abi, plat)."""
    parts = path.name[: -len(".whl")].split("-")
    return normalise(parts[0]), parts[-3], parts[-2], parts[-1]


def build(venv: Path, out: Path, platforms: list[str], python_version: str | None) -> list[str]:
    py = venv / "bin" / "python"
    if not py.is_file():
        raise SystemExit(f"wheelhouse: {py}: no such interpreter; run `make setup` first (or pass VENV=...)")
    freeze = subprocess.run([str(py), "-m", "pip", "freeze", "--all"], check=True, capture_output=True, text=True).stdout
    pins = filter_freeze(freeze.splitlines(), needed=runtime_closure(py))
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.whl"):  # the folder holds one consistent set
        old.unlink()
    req = out / "requirements.txt"
    req.write_text("\n".join(pins) + "\n")
    pip(py, "wheel", "--no-deps", "-q", "-w", str(out), "-r", str(req))
    if platforms or python_version:
        by_name = {normalise(p.split("==")[0]): p for p in pins}
        native = [w for w in out.glob("*.whl") if wheel_tags(w)[2:] != ("none", "any")]
        again = [by_name[wheel_tags(w)[0]] for w in native]
        for w in native:
            w.unlink()
        if again:
            target = [f"--platform={p}" for p in platforms] + ([f"--python-version={python_version}"] if python_version else [])
            (out / ".native.txt").write_text("\n".join(again) + "\n")
            pip(py, "download", "--no-deps", "-q", "--only-binary=:all:", *target, "-d", str(out), "-r", str(out / ".native.txt"))
            (out / ".native.txt").unlink()
    pip(py, "wheel", "--no-deps", "-q", "-w", str(out), str(REPO))
    project = sorted(out.glob(f"{PROJECT}-*.whl"))
    version = project[-1].name.split("-")[1]
    req.write_text("\n".join(pins + [f"{PROJECT}=={version}"]) + "\n")
    return pins


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--venv", default=str(REPO / ".venv"), help="the virtualenv whose packages to pin (default .venv)")
    p.add_argument("--out", default=str(REPO / "wheelhouse"))
    p.add_argument("--platform", default="", help="pip platform tag(s), comma-separated, e.g. manylinux2014_x86_64")
    p.add_argument("--python-version", default="", help="target Python, e.g. 3.11 (default: the venv's)")
    args = p.parse_args(argv)
    out = Path(args.out)
    platforms = [s for s in args.platform.split(",") if s]
    pins = build(Path(args.venv), out, platforms, args.python_version or None)
    wheels = sorted(out.glob("*.whl"))
    size = sum(w.stat().st_size for w in wheels) / 2**20
    print(f"wheelhouse: {len(wheels)} wheels ({len(pins)} pinned packages + the project), {size:.0f} MiB -> {out}; "
          f"on the GPU machine: make gpu-check")
    return 0


if __name__ == "__main__":
    sys.exit(main())
