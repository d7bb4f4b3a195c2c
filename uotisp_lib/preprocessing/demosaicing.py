"""Demosaicing backends: RGGB mosaic ``[B,1,H,W]`` in [0,1] -> RGB ``[B,3,H,W]``.

- ``bilinear``: :func:`kornia.color.raw_to_rgb` (kornia's ``CFA.BG`` is the RGGB layout).
- ``malvar``: Malvar, He and Cutler, "High-quality linear interpolation for demosaicing of
  Bayer-patterned color images", ICASSP 2004 (gradient-corrected bilinear, 5x5 kernels).
- ``menon``: Menon, Andriani and Calvagno, "Demosaicing with directional filtering and a posteriori
  decision", IEEE TIP 2007, via ``colour_demosaicing`` (NumPy on CPU; not differentiable).
- ``demosaicnet``: Gharbi et al., "Deep joint demosaicking and denoising", SIGGRAPH Asia 2016, with
  the MIT weights shipped in the ``demosaicnet`` wheel (Borelli's choice).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from .raw import check_bayer

Tensor = torch.Tensor

DEMOSAIC_METHODS = ("bilinear", "malvar", "menon", "demosaicnet")


def demosaic(bayer: Tensor, method: str = "malvar", clip: bool = True) -> Tensor:
    """RGGB mosaic ``[B,1,H,W]`` (H, W even, >= 4) -> RGB ``[B,3,H,W]``; ``clip`` clamps to [0,1]
    (the interpolating kernels overshoot at edges)."""
    fns = {
        "bilinear": demosaic_bilinear,
        "malvar": demosaic_malvar,
        "menon": demosaic_menon,
        "demosaicnet": demosaic_demosaicnet,
    }
    if method not in fns:
        raise ValueError(f"demosaic: unknown method {method!r}; expected one of {', '.join(DEMOSAIC_METHODS)}")
    out = fns[method](bayer)
    return out.clamp(0.0, 1.0) if clip else out


def demosaic_bilinear(bayer: Tensor) -> Tensor:
    """Bilinear demosaicing of an RGGB mosaic ``[B,1,H,W]`` -> ``[B,3,H,W]`` (kornia).

    kornia names patterns as OpenCV does, reading from pixel (1, 1): ``CFA.BG`` is an RGGB sensor
    (red at the top-left), which the tests check on a pure red scene.
    """
    from kornia.color import CFA, raw_to_rgb

    check_bayer(bayer, "demosaic_bilinear", min_side=4)
    return raw_to_rgb(bayer, CFA.BG)


def _malvar_kernels(dtype: torch.dtype, device: torch.device) -> Tensor:
    """The five 5x5 filters of Malvar-He-Cutler (2004, Fig. 2), stacked ``[5,1,5,5]``:
    identity, G at R/B sites, R/B at G sites from horizontal neighbours, the same from vertical
    neighbours, and R at B / B at R sites."""
    identity = torch.zeros(5, 5)
    identity[2, 2] = 8.0
    g_at_rb = torch.tensor(
        [[0, 0, -1, 0, 0], [0, 0, 2, 0, 0], [-1, 2, 4, 2, -1], [0, 0, 2, 0, 0], [0, 0, -1, 0, 0]],
        dtype=torch.float32,
    )
    row = torch.tensor(
        [[0, 0, 0.5, 0, 0], [0, -1, 0, -1, 0], [-1, 4, 5, 4, -1], [0, -1, 0, -1, 0], [0, 0, 0.5, 0, 0]]
    )
    col = row.t()
    diag = torch.tensor(
        [[0, 0, -1.5, 0, 0], [0, 2, 0, 2, 0], [-1.5, 0, 6, 0, -1.5], [0, 2, 0, 2, 0], [0, 0, -1.5, 0, 0]]
    )
    k = torch.stack([identity, g_at_rb, row, col, diag]) / 8.0
    return k.unsqueeze(1).to(dtype=dtype, device=device)


# Which Malvar filter (index into _malvar_kernels) gives each output colour at each site of the
# 2x2 RGGB cell (R, Gr, Gb, B): Gr sites have red left/right, Gb sites have red above/below.
_MALVAR_PICK = {
    "R": (0, 2, 3, 4),
    "G": (1, 0, 0, 1),
    "B": (4, 3, 2, 0),
}


def demosaic_malvar(bayer: Tensor) -> Tensor:
    """Malvar-He-Cutler (ICASSP 2004) gradient-corrected linear demosaicing, RGGB ``[B,1,H,W]`` ->
    ``[B,3,H,W]``.

    Hand-written because neither kornia nor torchvision provides it: one conv2d with the five 5x5
    filters, then a per-site selection. Reflect padding keeps the CFA phase at the borders. Exact on
    images whose channels are linear ramps (away from a 2-pixel border).
    """
    check_bayer(bayer, "demosaic_malvar", min_side=4)
    b = bayer.shape[0]
    filt = F.conv2d(F.pad(bayer, (2, 2, 2, 2), mode="reflect"), _malvar_kernels(bayer.dtype, bayer.device))
    sites = F.pixel_unshuffle(filt, 2)  # [B, 5*4, h, w]: channel 4*k + site
    sites = sites.view(b, 5, 4, *sites.shape[-2:])
    out = []
    for colour in ("R", "G", "B"):
        picked = torch.stack([sites[:, k, s] for s, k in enumerate(_MALVAR_PICK[colour])], dim=1)
        out.append(F.pixel_shuffle(picked, 2))
    return torch.cat(out, dim=1)


def demosaic_menon(bayer: Tensor) -> Tensor:
    """Menon et al. (2007) DDFAPD demosaicing via ``colour_demosaicing`` (with its refining step).

    Runs in NumPy float64 on the CPU, image by image; the result returns to ``bayer``'s device and
    dtype. No gradient flows through it. A slow quality reference.
    """
    check_bayer(bayer, "demosaic_menon", min_side=4)
    arr = bayer.detach().to("cpu", torch.float64).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its scipy.ndimage.filters imports warn
        try:
            from colour_demosaicing import demosaicing_CFA_Bayer_Menon2007
        except ImportError as e:
            raise ImportError(
                "demosaic backend 'menon' needs the colour-demosaicing package: pip install colour-demosaicing"
            ) from e
        outs = [demosaicing_CFA_Bayer_Menon2007(a[0], pattern="RGGB") for a in arr]
    rgb = torch.stack([torch.from_numpy(o).permute(2, 0, 1) for o in outs])
    return rgb.to(device=bayer.device, dtype=bayer.dtype)


_DEMOSAICNET_CACHE: dict[tuple[str, torch.dtype], nn.Module] = {}

#: Pixels the unpadded DemosaicNet loses on each side (15 quarter-resolution 3x3 convs + one 3x3).
_DEMOSAICNET_MARGIN = 31


def load_demosaicnet(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> nn.Module:
    """The pretrained ``demosaicnet.BayerDemosaick`` (MIT weights bundled in the wheel), frozen, in
    eval mode, cached per device and dtype."""
    key = (str(torch.device(device)), dtype)
    if key in _DEMOSAICNET_CACHE:
        return _DEMOSAICNET_CACHE[key]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its pkg_resources import warns
            import demosaicnet
    except ImportError as e:
        raise ImportError(
            "demosaic backend 'demosaicnet' needs the demosaicnet package and setuptools<81 "
            f"(it imports pkg_resources): pip install demosaicnet 'setuptools<81' ({e})"
        ) from e
    try:
        model = demosaicnet.BayerDemosaick(pretrained=True)
    except (OSError, RuntimeError) as e:
        raise RuntimeError(
            "demosaic backend 'demosaicnet': could not load the weights bundled with the demosaicnet "
            f"package (demosaicnet/data/bayer.pth); reinstall it: pip install --force-reinstall demosaicnet ({e})"
        ) from e
    model = model.eval().requires_grad_(False).to(device=device, dtype=dtype)
    _DEMOSAICNET_CACHE[key] = model
    return model


def reflect_pad_even(x: Tensor, pad: int) -> Tensor:
    """Reflect-pad the last two dims by an even ``pad`` on every side, in steps when the image is
    smaller than the pad. An even reflect pad keeps the 2x2 CFA phase."""
    if pad % 2:
        raise ValueError(f"reflect_pad_even: pad must be even to keep the CFA phase, got {pad}")
    left = pad
    while left > 0:
        step = min(left, (min(x.shape[-2:]) - 1) // 2 * 2)
        if step <= 0:
            raise ValueError(f"reflect_pad_even: image {tuple(x.shape[-2:])} too small to reflect-pad")
        x = F.pad(x, (step, step, step, step), mode="reflect")
        left -= step
    return x


def demosaic_demosaicnet(bayer: Tensor) -> Tensor:
    """DemosaicNet (Gharbi et al. 2016) on an RGGB mosaic ``[B,1,H,W]`` -> ``[B,3,H,W]``.

    The network expects a GRBG mosaic split into 3 masked colour planes; flipping an RGGB mosaic of
    even width left-right makes it GRBG, so we flip in and out. The unpadded network shrinks the
    image by 31 px a side, so the mosaic is reflect-padded by 32 px and the output cropped by 1.
    Differentiable with respect to the input (weights frozen).
    """
    check_bayer(bayer, "demosaic_demosaicnet", min_side=4)
    model = load_demosaicnet(bayer.device, bayer.dtype)
    grbg = bayer.flip(-1)
    h, w = grbg.shape[-2:]
    planes = grbg.new_zeros(grbg.shape[0], 3, h, w)
    planes[:, 1, 0::2, 0::2] = grbg[:, 0, 0::2, 0::2]  # G
    planes[:, 0, 0::2, 1::2] = grbg[:, 0, 0::2, 1::2]  # R
    planes[:, 2, 1::2, 0::2] = grbg[:, 0, 1::2, 0::2]  # B
    planes[:, 1, 1::2, 1::2] = grbg[:, 0, 1::2, 1::2]  # G
    pad = _DEMOSAICNET_MARGIN + 1
    out = model(reflect_pad_even(planes, pad))
    crop = pad - _DEMOSAICNET_MARGIN
    return out[..., crop : crop + h, crop : crop + w].flip(-1)
