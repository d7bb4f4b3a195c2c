"""The environment files agree with pyproject.toml, and CI runs exactly the README's test command."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CONDA_TO_PIP = {"pytorch": "torch"}


def _split(req: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", req)
    assert m, req
    return m.group(1).lower().replace("_", "-"), m.group(2).replace(" ", "")


def _pyproject_deps() -> dict[str, str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return dict(_split(r) for r in data["project"]["dependencies"])


def _conda_deps() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"][0] == "conda-forge" and "defaults" not in env["channels"]
    out: dict[str, str] = {}
    pip_section: list[str] = []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip_section = dep["pip"]
            continue
        name, spec = _split(dep)
        if name in ("python", "pip"):
            continue
        out[CONDA_TO_PIP.get(name, name)] = spec
    assert pip_section and pip_section[-1] == "-e .", "the pip: section must end in '-e .'"
    for dep in pip_section[:-1]:
        name, spec = _split(dep)
        out[name] = spec
    return out


def _test_extra() -> dict[str, str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return dict(_split(r) for r in data["project"]["optional-dependencies"]["test"])


def test_environment_matches_pyproject():
    conda, extra = _conda_deps(), _test_extra()
    test_only = {k: v for k, v in conda.items() if k in extra}
    assert {k: v for k, v in conda.items() if k not in extra} == _pyproject_deps()
    assert test_only == {k: extra[k] for k in test_only}  # test packages listed in both agree
    assert "hypothesis" in test_only


def test_constraints_pin_the_local_torch_pair():
    pins = dict(_split(l) for l in (ROOT / "constraints-ci.txt").read_text().splitlines() if l and l[0] != "#")
    assert pins == {"torch": "==2.14.1", "torchvision": "==0.29.1"}


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = [l.strip() for l in (ROOT / ".ci" / "run").read_text().splitlines()]
    commands = [l for l in ci if l and not l.startswith("#") and not l.startswith(("set ", "cd "))]
    assert commands == ["make test"]
    assert "\nmake test\n" in readme and "\nmake reproduce\n" in readme
