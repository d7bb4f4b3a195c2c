"""Exported ISP models: save, load, and render packed RAW to sRGB.

An export is a folder with ``model.safetensors`` (the weights) and ``isp.json`` (architecture name
and keyword arguments for :func:`uotisp_lib.models.build_isp`, ``source``: the ``module:qualname``
of the network's class, the preprocessing config for models that take pseudo-RGB, and free-form
metadata such as the training run). It needs no pickle; a built-in network needs no code beyond
this package, a plug-in one (:mod:`uotisp_lib.models.registry`) its module on the import path. Exports written by a trainer record in ``meta`` the ``step``
they came from and their ``role`` (``latest`` for ``<run>/export``, ``best`` for ``<run>/best``);
:func:`stale_export` says when a ``latest`` export is older than its run's newest checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from uotisp_lib.config import dumps
from uotisp_lib.io import apply_umask, clean_stale_temps, make_temp_dir
from uotisp_lib.preprocessing import PreprocessConfig, Preprocessor
from uotisp_lib.threads import use_threads

FORMAT = "uotisp-isp"
FORMAT_VERSION = 1


@dataclass
class ISPBundle:
    """A loaded ISP: the network, how to feed it, and where it came from."""

    model: nn.Module
    arch: str
    arch_kwargs: dict[str, Any]
    preprocess: PreprocessConfig | None  # None for models on packed RAW
    meta: dict[str, Any]

    @property
    def input_kind(self) -> str:
        return getattr(self.model, "input_kind", "rgb")

    def to(self, device: str | torch.device) -> "ISPBundle":
        self.model.to(device)
        return self


def model_input(raw01: torch.Tensor, input_kind: str, preprocess: PreprocessConfig | None) -> torch.Tensor:
    """Packed RAW ``[B,4,h,w]`` in [0,1] -> the network's input: itself (``packed``) or the
    pseudo-RGB ``[B,3,2h,2w]`` of ``preprocess`` (``rgb``)."""
    if input_kind == "packed":
        return raw01
    if input_kind != "rgb":
        raise ValueError(f"unknown model input kind {input_kind!r}; expected 'packed' or 'rgb'")
    cfg = dataclasses.replace(preprocess or PreprocessConfig(), black=0.0, white=1.0)
    return Preprocessor(cfg)(raw01)


def inference_layout(device: torch.device) -> torch.memory_format:
    """Memory format of inference on ``device``: ``channels_last`` on the CPU, where it made the
    convolutions of every ISP faster (colornet 1.8-2x, unet_isp 1.4x, tinyraw 1.1x; see
    ``benchmarks/bench_models.py``), else the default (contiguous) format."""
    return torch.channels_last if torch.device(device).type == "cpu" else torch.contiguous_format


def render(bundle: ISPBundle, raw01: torch.Tensor, batch: int = 16) -> torch.Tensor:
    """Packed RAW ``[B,4,h,w]`` in [0,1] -> sRGB ``[B,3,2h,2w]`` in [0,1], ``batch`` patches at a time.

    Runs under :func:`torch.inference_mode` with the thread policy of :func:`uotisp_lib.threads.use_threads`,
    inputs in :func:`inference_layout`; the result is an ordinary contiguous tensor, equal to the
    default-layout forward pass within float rounding."""
    if raw01.ndim != 4 or raw01.shape[1] != 4:
        raise ValueError(f"render: expected packed RAW [B,4,h,w], got shape {tuple(raw01.shape)}")
    bundle.model.eval()
    device = next(bundle.model.parameters()).device
    layout = inference_layout(device)
    with use_threads(), torch.inference_mode():
        outs = []
        for i in range(0, raw01.shape[0], batch):
            x = model_input(raw01[i : i + batch].to(device), bundle.input_kind, bundle.preprocess)
            outs.append(bundle.model(x.contiguous(memory_format=layout)).clamp(0, 1).cpu())
    return torch.cat(outs).contiguous()  # outside inference mode: a normal tensor


def export_isp(
    out: str | Path,
    model: nn.Module,
    arch: str,
    arch_kwargs: dict[str, Any] | None = None,
    preprocess: PreprocessConfig | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` as an export folder ``out`` (replaced atomically as a whole)."""
    from safetensors.torch import save_file

    from uotisp_lib.models.registry import isp_source

    out = Path(out)
    clean_stale_temps(out.parent, out.name)
    tmp = make_temp_dir(out)
    try:
        tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k != "ema_updates"}
        save_file(tensors, str(tmp / "model.safetensors"))
        spec = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "arch": arch,
            "arch_kwargs": arch_kwargs or {},
            "input_kind": getattr(model, "input_kind", "rgb"),
            "source": isp_source(model),  # module:qualname, so a plug-in class is found again
            "preprocess": dataclasses.asdict(preprocess) if preprocess is not None else None,
            "meta": meta or {},
        }
        (tmp / "isp.json").write_text(dumps(spec))
        apply_umask(tmp)  # safetensors writes 0600
        old = out.with_name(f".{out.name}.old")
        if out.exists():
            out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def load_isp(path: str | Path, device: str | torch.device = "cpu") -> ISPBundle:
    """Load an export folder written by :func:`export_isp`."""
    from safetensors.torch import load_file

    path = Path(path)
    spec_file = path / "isp.json"
    if not spec_file.is_file():
        raise FileNotFoundError(f"{path}: not an exported ISP (expected isp.json and model.safetensors in it)")
    try:
        spec = json.loads(spec_file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{spec_file}: not valid JSON ({err})") from None
    if spec.get("format") != FORMAT:
        raise ValueError(f"{spec_file}: format {spec.get('format')!r}, expected {FORMAT!r}")
    arch, kwargs = spec.get("arch"), spec.get("arch_kwargs") or {}
    cls = _isp_class(spec_file, arch, spec.get("source"))
    try:
        model = cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{spec_file}: arch_kwargs {kwargs} do not build {arch!r} ({_one_line(err)})") from None
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: missing; expected the weights beside isp.json")
    try:
        tensors = load_file(str(weights))
    except Exception as err:  # SafetensorError: truncated or not safetensors
        raise ValueError(f"{weights}: not a readable safetensors file ({_one_line(err)})") from None
    _check_fit(weights, tensors, model, arch)
    model.load_state_dict(tensors)
    pre = spec.get("preprocess")
    if pre is not None:
        pre = {k: tuple(v) if isinstance(v, list) else v for k, v in pre.items()}
        pre = PreprocessConfig(**pre)
    model = model.to(device)
    model = model.to(memory_format=inference_layout(next(model.parameters()).device))
    return ISPBundle(model.eval(), spec["arch"], spec["arch_kwargs"], pre, spec.get("meta", {}))


def _isp_class(spec_file: Path, arch: object, source: object):
    """The class of an export's ``arch``: a registered name, an import path ``module:Class``, or
    (a plug-in registered by name in another process) the ``source`` it was saved from. A class that
    cannot be found is a one-line ValueError naming it."""
    from uotisp_lib.models.registry import ISP_REGISTRY, load_entry_point, resolve_isp

    if not isinstance(arch, str) or not arch:
        raise ValueError(f"{spec_file}: arch {arch!r}; expected a registered ISP name or package.module:Class")
    if ":" not in arch and arch not in ISP_REGISTRY:  # an installed plug-in (entry point uotisp.isps)?
        try:
            load_entry_point(arch)
        except ValueError as err:
            raise ValueError(f"{spec_file}: {err}") from None
    if arch in ISP_REGISTRY or ":" in arch:
        where = arch
    elif isinstance(source, str) and ":" in source:
        where = source
    else:
        raise ValueError(f"{spec_file}: unknown architecture {arch!r}; expected one of {sorted(ISP_REGISTRY)}")
    try:
        cls = resolve_isp(where)
    except ValueError as err:
        raise ValueError(f"{spec_file}: {err}; put its package on PYTHONPATH (or install it)") from None
    if ":" not in arch and arch not in ISP_REGISTRY:  # importing the source must register the name
        raise ValueError(
            f"{spec_file}: unknown architecture {arch!r}; expected one of {sorted(ISP_REGISTRY)} "
            f"(importing its source {source!r} did not register it)"
        )
    return ISP_REGISTRY.get(arch, cls)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _check_fit(file: Path, tensors: dict[str, torch.Tensor], model: nn.Module, arch: str) -> None:
    """One-line ValueError naming ``file`` when its tensors do not fit ``model`` (names or shapes)."""
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in tensors.items()}
    missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    shapes = sorted(k for k in set(want) & set(have) if want[k] != have[k])
    if not (missing or extra or shapes):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if extra:
        parts.append(f"{len(extra)} unexpected (e.g. {extra[0]})")
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} of another shape (e.g. {k}: {have[k]}, expected {want[k]})")
    raise ValueError(f"{file}: weights do not fit architecture {arch!r}: " + ", ".join(parts))


def export_step(path: str | Path) -> int | None:
    """The training step an export came from (``meta.step``), or None when unknown or absent."""
    try:
        step = json.loads((Path(path) / "isp.json").read_text()).get("meta", {}).get("step")
    except (OSError, ValueError, AttributeError):
        return None
    return step if isinstance(step, int) else None


def stale_export(path: str | Path) -> str | None:
    """A warning when the ``latest`` export ``path`` is older than the newest checkpoint of its run
    (``<run>/ckpt`` beside it); None when it is current or cannot be compared."""
    path = Path(path)
    try:
        meta = json.loads((path / "isp.json").read_text()).get("meta", {})
    except (OSError, ValueError, AttributeError):
        return None
    steps = [int(p.name.split("-")[1]) for p in (path.parent / "ckpt").glob("step-*") if p.name.split("-")[1].isdigit()]
    if meta.get("role") == "best" or not isinstance(meta.get("step"), int) or not steps:
        return None
    if meta["step"] >= max(steps):
        return None
    return (
        f"{path}: export is from step {meta['step']} but its run has a checkpoint at step {max(steps)} "
        "(training was interrupted before exporting; rerun the training to refresh the export)"
    )


@torch.no_grad()
def render_tiled(bundle: ISPBundle, raw01: torch.Tensor, tile: int = 256, overlap: int = 16) -> torch.Tensor:
    """Render one large packed RAW ``[1,4,H,W]`` (e.g. a whole DNG) tile by tile -> ``[1,3,2H,2W]``.

    Tiles of ``tile`` packed pixels overlap by ``overlap`` on each side; only their centres are kept,
    so the result equals :func:`render` of the whole image wherever the model's (and the
    preprocessing's) receptive field is under ``overlap`` packed pixels, at a fraction of the memory.
    """
    if raw01.ndim != 4 or raw01.shape[:2] != (1, 4):
        raise ValueError(f"render_tiled: expected packed RAW [1,4,H,W], got shape {tuple(raw01.shape)}")
    if tile <= 0 or overlap < 0:
        raise ValueError(f"render_tiled: expected tile > 0 and overlap >= 0, got {tile}, {overlap}")
    _, _, h, w = raw01.shape
    out = torch.zeros(1, 3, 2 * h, 2 * w)
    with use_threads():
        _render_tiles(bundle, raw01, out, tile, overlap)
    return out


def _render_tiles(bundle: ISPBundle, raw01: torch.Tensor, out: torch.Tensor, tile: int, overlap: int) -> None:
    _, _, h, w = raw01.shape
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            ya, xa = max(0, y0 - overlap), max(0, x0 - overlap)
            yb, xb = min(h, y1 + overlap), min(w, x1 + overlap)
            piece = render(bundle, raw01[:, :, ya:yb, xa:xb], batch=1)
            out[:, :, 2 * y0 : 2 * y1, 2 * x0 : 2 * x1] = piece[
                :, :, 2 * (y0 - ya) : 2 * (y1 - ya), 2 * (x0 - xa) : 2 * (x1 - xa)
            ]
