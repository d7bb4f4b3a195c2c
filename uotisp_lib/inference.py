"""Exported ISP models: save, load, and render packed RAW to sRGB.

An export is a folder with ``model.safetensors`` (the weights) and ``isp.json`` (architecture name
and keyword arguments for :func:`uotisp_lib.models.build_isp`, the preprocessing config for models
that take pseudo-RGB, and free-form metadata such as the training run). It needs no pickle and no
code beyond this package to load.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from uotisp_lib.config import dumps
from uotisp_lib.preprocessing import PreprocessConfig, Preprocessor

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


@torch.no_grad()
def render(bundle: ISPBundle, raw01: torch.Tensor, batch: int = 16) -> torch.Tensor:
    """Packed RAW ``[B,4,h,w]`` in [0,1] -> sRGB ``[B,3,2h,2w]`` in [0,1], ``batch`` patches at a time."""
    if raw01.ndim != 4 or raw01.shape[1] != 4:
        raise ValueError(f"render: expected packed RAW [B,4,h,w], got shape {tuple(raw01.shape)}")
    bundle.model.eval()
    device = next(bundle.model.parameters()).device
    outs = [
        bundle.model(model_input(raw01[i : i + batch].to(device), bundle.input_kind, bundle.preprocess)).clamp(0, 1).cpu()
        for i in range(0, raw01.shape[0], batch)
    ]
    return torch.cat(outs)


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

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k != "ema_updates"}
        save_file(tensors, str(tmp / "model.safetensors"))
        spec = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "arch": arch,
            "arch_kwargs": arch_kwargs or {},
            "input_kind": getattr(model, "input_kind", "rgb"),
            "preprocess": dataclasses.asdict(preprocess) if preprocess is not None else None,
            "meta": meta or {},
        }
        (tmp / "isp.json").write_text(dumps(spec))
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

    from uotisp_lib.models import build_isp

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
    model = build_isp(spec["arch"], **spec["arch_kwargs"])
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    pre = spec.get("preprocess")
    if pre is not None:
        pre = {k: tuple(v) if isinstance(v, list) else v for k, v in pre.items()}
        pre = PreprocessConfig(**pre)
    return ISPBundle(model.to(device).eval(), spec["arch"], spec["arch_kwargs"], pre, spec.get("meta", {}))


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
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            ya, xa = max(0, y0 - overlap), max(0, x0 - overlap)
            yb, xb = min(h, y1 + overlap), min(w, x1 + overlap)
            piece = render(bundle, raw01[:, :, ya:yb, xa:xb], batch=1)
            out[:, :, 2 * y0 : 2 * y1, 2 * x0 : 2 * x1] = piece[
                :, :, 2 * (y0 - ya) : 2 * (y1 - ya), 2 * (x0 - xa) : 2 * (x1 - xa)
            ]
    return out
