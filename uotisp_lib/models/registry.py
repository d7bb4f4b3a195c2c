"""The ISP registry: names and import paths of ISP networks, and where a model's class came from.

An ISP is any ``nn.Module`` whose class attribute ``input_kind`` says what it eats:

* ``"packed"``: packed RAW ``[B,4,h,w]`` in [0,1] -> sRGB ``[B,3,2h,2w]`` in [0,1] (as ``tinyraw``);
* ``"rgb"``: the preprocessed pseudo-RGB ``[B,3,2h,2w]`` in [0,1] -> sRGB ``[B,3,2h,2w]`` (as ``colornet``).

It is named either by a registered name (:func:`register_isp`) or by an import path
``package.module:Class`` (:func:`resolve_isp`), so a network of your own needs no change here.
A name registered in a module of your own is known once that module is imported: by
:func:`load_plugins` (``uotisp train --plugin package.module``), or, for an installed package, by
an entry point in the group ``uotisp.isps`` (:data:`ENTRY_POINT_GROUP`) whose name is the ISP's
name and whose object is its class or the module that registers it, looked up the first time the
name is asked for.
Exports record :func:`isp_source` (``module:qualname``) so a fresh process can rebuild the class.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from torch import nn

INPUT_KINDS = ("packed", "rgb")

#: entry-point group of installed plug-in ISPs: ``name = "package.module:Class"`` (or ``"package.module"``)
ENTRY_POINT_GROUP = "uotisp.isps"

#: name -> class (or factory) of every registered ISP
ISP_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


class ISPNotFoundError(ValueError):
    """An ISP named by import path (``module:Class``) cannot be imported or is not an ISP."""


def register_isp(name: str, input_kind: str | None = None):
    """Class decorator: register an ISP under ``name`` (``build_isp(name)``, ``--arch name``).

    ``input_kind`` (``"packed"`` or ``"rgb"``) is set as the class attribute, or checked against it
    when the class already has one. A name already taken by another class is refused."""

    def deco(cls):
        kind = input_kind if input_kind is not None else getattr(cls, "input_kind", None)
        if kind not in INPUT_KINDS:
            raise ValueError(f"register_isp({name!r}): input_kind must be one of {INPUT_KINDS}, got {kind!r}")
        if getattr(cls, "input_kind", kind) != kind:
            raise ValueError(f"register_isp({name!r}): {cls.__name__}.input_kind is {cls.input_kind!r}, not {kind!r}")
        old = ISP_REGISTRY.get(name)
        if old is not None and isp_source(old) != isp_source(cls):
            raise ValueError(f"register_isp: name {name!r} is taken by {isp_source(old)}")
        cls.input_kind = kind
        ISP_REGISTRY[name] = cls
        return cls

    return deco


def isp_source(obj: object) -> str:
    """``module:qualname`` of a model (or class): where :func:`resolve_isp` finds it again."""
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}:{cls.__qualname__}"


def resolve_isp(arch: str) -> Callable[..., nn.Module]:
    """The class of ``arch``: a registered name, or an import path ``package.module:Class``
    (imported here; the class must be an ``nn.Module`` with ``input_kind`` ``packed`` or ``rgb``).

    Raises ``KeyError`` for an unknown name and :class:`ISPNotFoundError` (one line naming the
    path) for an import path that cannot be found or is not an ISP."""
    if arch in ISP_REGISTRY:
        return ISP_REGISTRY[arch]
    if ":" not in arch and load_entry_point(arch):
        return ISP_REGISTRY[arch]
    if ":" not in arch:
        raise KeyError(f"build_isp: unknown ISP {arch!r}; expected one of {sorted(ISP_REGISTRY)} or package.module:Class")
    module, _, qualname = arch.partition(":")
    try:
        obj = importlib.import_module(module)
    except Exception as err:  # ModuleNotFoundError, or the module's own import error
        raise ISPNotFoundError(f"ISP class {arch!r} cannot be found: cannot import {module!r} ({_one_line(err)})") from None
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ISPNotFoundError(f"ISP class {arch!r} cannot be found: module {module!r} has no {qualname!r}")
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise ISPNotFoundError(f"ISP class {arch!r}: expected a subclass of torch.nn.Module, got {type(obj).__name__}")
    if getattr(obj, "input_kind", None) not in INPUT_KINDS:
        raise ISPNotFoundError(
            f"ISP class {arch!r}: expected a class attribute input_kind of 'packed' or 'rgb', got {getattr(obj, 'input_kind', None)!r}"
        )
    return obj


def load_plugins(modules: list[str] | tuple[str, ...]) -> list[str]:
    """Import each module of ``modules`` (``package.module``), so the ISPs it registers with
    :func:`register_isp` are known by name. Returns the names it added to the registry.
    A module that cannot be imported is a one-line :class:`ISPNotFoundError` naming it."""
    before = set(ISP_REGISTRY)
    for module in modules:
        if not isinstance(module, str) or not module or ":" in module:
            raise ISPNotFoundError(f"plug-in {module!r}: expected a module name package.module")
        try:
            importlib.import_module(module)
        except Exception as err:  # ModuleNotFoundError, or the module's own import error
            raise ISPNotFoundError(f"plug-in {module!r} cannot be imported ({_one_line(err)}); "
                                   "put its package on PYTHONPATH (or install it)") from None
    return sorted(set(ISP_REGISTRY) - before)


def entry_point_names() -> list[str]:
    """Names of the installed plug-in ISPs (entry points of group :data:`ENTRY_POINT_GROUP`), not loaded."""
    return sorted({ep.name for ep in _entry_points()})


def _entry_points():
    from importlib.metadata import entry_points

    try:
        return list(entry_points(group=ENTRY_POINT_GROUP))
    except Exception:  # a broken installed distribution must not break the registered names
        return []


def load_entry_point(name: str) -> bool:
    """Load the entry point ``name`` of group :data:`ENTRY_POINT_GROUP`, if any: its object is the
    ISP class (registered under ``name`` here unless its module did) or a module that registers it.
    True when ``name`` is registered afterwards."""
    for ep in _entry_points():
        if ep.name != name:
            continue
        try:
            obj = ep.load()
        except Exception as err:
            raise ISPNotFoundError(f"ISP {name!r}: entry point {ep.value!r} of group {ENTRY_POINT_GROUP} "
                                   f"cannot be loaded ({_one_line(err)})") from None
        if name not in ISP_REGISTRY and isinstance(obj, type) and issubclass(obj, nn.Module):
            try:
                register_isp(name)(obj)
            except ValueError as err:
                raise ISPNotFoundError(f"ISP {name!r}: entry point {ep.value!r} of group {ENTRY_POINT_GROUP}: {err}") from None
        if name not in ISP_REGISTRY:
            raise ISPNotFoundError(f"ISP {name!r}: entry point {ep.value!r} of group {ENTRY_POINT_GROUP} "
                                   f"neither is an ISP class nor registers {name!r}")
        return True
    return False


def build_isp(name: str, **kwargs: object) -> nn.Module:
    """Build an ISP by registered name (``colornet``, ``tinyraw``, ``unet_isp``, plug-ins) or import
    path ``package.module:Class``; keyword arguments go to its constructor, e.g.
    ``build_isp("colornet", head="lut3d")``."""
    return resolve_isp(name)(**kwargs)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__
