"""Overrides of frozen config dataclasses from the command line (``key=value``) or a TOML file.

Keys are field names, dotted for nested dataclasses (``uot.tau``); values are TOML literals
(``8``, ``1e-3``, ``true``, ``"x"``, ``[0.5, 0.9]``, ``{base = "reference"}``) or bare words
(``luma``; a comma list ``colour,structure`` for a tuple; ``none`` for an optional field). Each
value is checked against the field's annotation; an unknown key or a wrong type is a one-line
``ValueError`` naming the key and where it came from.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Union

#: flat override: dotted key -> (value, where it came from, e.g. "--set uot.tau=8")
Overrides = dict[str, tuple[Any, str]]


def parse_literal(text: str) -> Any:
    """A TOML literal (number, bool, string, array, inline table), else the text itself."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text.strip()


def parse_sets(items: list[str], option: str = "--set") -> Overrides:
    """``["uot.tau=8", "epochs=20"]`` -> ``{"uot.tau": (8, "--set uot.tau=8"), ...}``."""
    out: Overrides = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"{option} {item!r}: expected key=value, e.g. {option} epochs=20")
        out[key.strip()] = (parse_literal(value), f"{option} {item}")
    return out


def load_toml(path: str | Path, option: str = "--config") -> Overrides:
    """A TOML file's keys flattened (tables give dotted keys: ``[uot] tau = 8`` is ``uot.tau``)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{option} {path}: no such file; expected a TOML file of config fields")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{option} {path}: not valid TOML ({' '.join(str(err).split())})") from None
    out: Overrides = {}

    def walk(prefix: str, table: dict) -> None:
        for k, v in table.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict) and not _is_pairs_key(key):
                walk(key + ".", v)
            else:
                out[key] = (v, f"{option} {path}: {key}")

    walk("", data)
    return out


# keys whose value is itself a table (``arch_kwargs = {base = "reference"}``), not a section
_PAIRS = ("arch_kwargs", "cost_kwargs")


def _is_pairs_key(key: str) -> bool:
    return key.rsplit(".", 1)[-1] in _PAIRS


def apply_overrides(cfg: Any, overrides: Overrides, prefix: str = "") -> Any:
    """``cfg`` (a frozen dataclass) with every override applied, each value checked against its
    field's annotation; nested dataclasses are rebuilt (so their ``__post_init__`` checks run).
    ``prefix``: the dotted path of ``cfg`` itself, for messages."""
    if not overrides:
        return cfg
    changes: dict[str, Any] = {}
    nested: dict[str, Overrides] = {}
    names = {f.name: f for f in dataclasses.fields(cfg)}
    hints = typing.get_type_hints(type(cfg))
    for key, (value, where) in overrides.items():
        head, dot, rest = key.partition(".")
        full = prefix + key
        if head not in names:
            raise ValueError(f"{where}: unknown key {full!r} for {type(cfg).__name__}; expected one of {', '.join(names)}")
        sub = getattr(cfg, head)
        if dataclasses.is_dataclass(sub):
            if not dot:
                raise ValueError(f"{where}: {full!r} is a section of {type(sub).__name__}; set its fields ({full}.<field>=...)")
            nested.setdefault(head, {})[rest] = (value, where)
        elif dot:
            raise ValueError(f"{where}: unknown key {full!r}; {head!r} of {type(cfg).__name__} has no fields")
        else:
            changes[head] = coerce(value, hints[head], full, where)
    for head, sub_overrides in nested.items():
        changes[head] = apply_overrides(getattr(cfg, head), sub_overrides, f"{prefix}{head}.")
    try:
        return dataclasses.replace(cfg, **changes)
    except (TypeError, ValueError) as err:
        wheres = "; ".join(w for _, w in overrides.values())
        raise ValueError(f"{wheres}: {' '.join(str(err).split())}") from None


def coerce(value: Any, tp: Any, key: str, where: str) -> Any:
    """``value`` as the annotation ``tp`` asks (int -> float allowed, comma lists -> tuples, ``none``
    -> None for optional fields), or a one-line ValueError naming ``key``."""
    try:
        return _coerce(value, tp)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {key} expects {type_name(tp)}, got {value!r}") from None


def _coerce(value: Any, tp: Any) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is object:
        return value
    if origin in (Union, types.UnionType):
        if type(None) in args and (value is None or (isinstance(value, str) and value.lower() in ("none", "null"))):
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a)
            except (TypeError, ValueError):
                pass
        raise TypeError(tp)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise TypeError(tp)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TypeError(tp)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise TypeError(tp)
    if tp is str:
        if isinstance(value, str):
            return value
        raise TypeError(tp)
    if origin is tuple:
        if isinstance(value, str):
            items = [parse_literal(v) for v in value.split(",") if v.strip()]
        elif isinstance(value, dict):
            items = sorted(value.items())
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            raise TypeError(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0]) for v in items)
        if len(items) != len(args):
            raise ValueError(tp)
        return tuple(_coerce(v, a) for v, a in zip(items, args))
    raise TypeError(tp)


def type_name(tp: Any) -> str:
    """A reader's name of an annotation: ``int``, ``float or none``, ``a list of str``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is object:
        return "any value"
    if origin in (Union, types.UnionType):
        return " or ".join("none" if a is type(None) else type_name(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            if typing.get_origin(args[0]) is tuple:
                return "a table of key = value pairs"
            return f"a list of {type_name(args[0])} (a, b, ...)"
        return f"a list of {len(args)} ({', '.join(type_name(a) for a in args)})"
    if tp is bool:
        return "a bool (true or false)"
    return getattr(tp, "__name__", str(tp))
