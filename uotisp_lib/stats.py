"""Colour statistics shared by the pair matching descriptors and the statistic losses.

All functions take float tensors ``[B,3,H,W]`` (RGB in [0,1]) or feature maps ``[B,C,H,W]`` on any
device and are differentiable. Definitions follow Borelli's "Semantic Pseudo-Pairing" (arXiv
2605.07495, docs/references.md "Matching" and "Losses"): BT.601 YUV with U and V shifted by +0.5, a
64-bin Y soft histogram (Gaussian sigma 0.02), a 32x32 joint UV soft histogram (sigma 0.03),
channel mean/std moments and Gram matrices ``G = F F^T / (C H W)``.
"""

from __future__ import annotations

import kornia
import torch

Tensor = torch.Tensor

#: std is computed as sqrt(var + STD_EPS), so its gradient stays finite on flat images.
STD_EPS = 1e-10


def _check_4d(x: object, fn: str, channels: int | None = 3) -> Tensor:
    """Raise a clear error unless ``x`` is a floating tensor ``[B,C,H,W]`` (C = ``channels``)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{fn}: expected a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{fn}: expected a floating tensor, got dtype {x.dtype}")
    want = f"[B,{channels},H,W]" if channels else "[B,C,H,W]"
    if x.ndim != 4 or (channels is not None and x.shape[1] != channels):
        raise ValueError(f"{fn}: expected a tensor of shape {want}, got {tuple(x.shape)}")
    if x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"{fn}: expected a non-empty image {want}, got {tuple(x.shape)}")
    return x


def _check_bins(bins: int, sigma: float, fn: str) -> None:
    if int(bins) != bins or bins < 1:
        raise ValueError(f"{fn}: bins must be a positive integer, got {bins!r}")
    if not sigma > 0:
        raise ValueError(f"{fn}: sigma must be > 0, got {sigma!r}")


def rgb_to_yuv(rgb: Tensor) -> Tensor:
    """RGB ``[B,3,H,W]`` in [0,1] -> YUV ``[B,3,H,W]``: BT.601 luma Y in [0,1] and chroma U, V
    shifted by +0.5 (so a gray pixel has U = V = 0.5; U in about [0.06, 0.94], V in [-0.12, 1.12]).

    Uses :func:`kornia.color.rgb_to_yuv` (Y = 0.299 R + 0.587 G + 0.114 B, i.e. BT.601 luma;
    U = 0.492 (B - Y), V = 0.877 (R - Y)).
    """
    _check_4d(rgb, "rgb_to_yuv")
    yuv = kornia.color.rgb_to_yuv(rgb)
    shift = torch.tensor([0.0, 0.5, 0.5], dtype=yuv.dtype, device=yuv.device).view(1, 3, 1, 1)
    return yuv + shift


def bin_centres(bins: int, like: Tensor) -> Tensor:
    """Uniform bin centres ``(i + 0.5) / bins`` in [0,1], dtype and device of ``like``."""
    return (torch.arange(bins, dtype=like.dtype, device=like.device) + 0.5) / bins


#: Floor of the kernel's exponent: weights below ``exp(-40) = 4.2e-18`` become exactly that, so a
#: weight, and the product of two (the joint U-V histogram's matmul), is a normal float32 (smallest
#: 1.2e-38; the floor's square is 1.8e-35). Without it most of a pixel's bins underflow to subnormal
#: numbers, which Intel cores compute through a slow microcode path: on this project's 2-core Xeon
#: the floor makes the descriptor's U-V histogram of a 768x896 image 4.1x faster than a floor of
#: -80 and the U-V histogram loss of a 4x128x128 training batch (forward and backward) 6.1x faster
#: than none (``benchmarks/bench_descriptors.py``, 2 threads). The change to a
#: histogram is below 1e-17 per bin, and to its gradient below 1e-15 (weights that small have no
#: gradient left to give).
LOG_FLOOR = -40.0


def _kernel(values: Tensor, bins: int, sigma: float) -> Tensor:
    """Per-value Gaussian weights over the bin centres, floored at ``exp(LOG_FLOOR)``: ``[B,P] -> [B,P,bins]``."""
    d = values.unsqueeze(-1) - bin_centres(bins, values)
    return torch.exp((-0.5 * (d / sigma) ** 2).clamp(min=LOG_FLOOR))


#: pixels per block of the no-grad histogram path (a ``[B,HIST_BLOCK,bins]`` buffer, reused)
HIST_BLOCK = 16384


def _kernel_into(values: Tensor, centres: Tensor, sigma: float, out: Tensor) -> Tensor:
    """:func:`_kernel` of ``values [B,p]`` written in place into ``out [B,>=p,bins]`` -> its ``[B,p,bins]`` view.

    The exponent is clamped at :data:`LOG_FLOOR`, as in :func:`_kernel` (torch's exp also takes a
    path about 10x slower for arguments that underflow, and most of a pixel's bins are far from it)."""
    o = out[:, : values.shape[1]]
    torch.sub(values.unsqueeze(-1), centres, out=o)
    o.mul_(1.0 / sigma).square_().mul_(-0.5).clamp_(min=LOG_FLOOR).exp_()
    return o


def _blocked(values: Tensor) -> bool:
    """Take the blocked, in-place path: no gradient is needed and the image is larger than a block."""
    return not (torch.is_grad_enabled() and values.requires_grad) and values.shape[1] > HIST_BLOCK


def _normalise(h: Tensor) -> Tensor:
    return h / h.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(h.dtype).tiny)


def soft_histogram_y(rgb: Tensor, bins: int = 64, sigma: float = 0.02) -> Tensor:
    """Soft histogram of BT.601 luma: ``[B,3,H,W] -> [B,bins]``, each row sums to 1.

    Each pixel adds ``exp(-(Y - c_i)^2 / (2 sigma^2))`` to bin i (centres ``(i + 0.5)/bins``).
    Memory ``B*H*W*bins`` values with gradients; without, blocks of :data:`HIST_BLOCK` pixels.
    """
    _check_4d(rgb, "soft_histogram_y")
    _check_bins(bins, sigma, "soft_histogram_y")
    y = rgb_to_yuv(rgb)[:, 0].flatten(1)
    if not _blocked(y):
        return _normalise(_kernel(y, bins, sigma).sum(dim=1))
    # no grad, large image: blocks of HIST_BLOCK pixels through one reused buffer (same sums, no
    # B*H*W*bins temporaries: those made the descriptor's page faults and most of its time)
    c, buf = bin_centres(bins, y), y.new_empty(y.shape[0], HIST_BLOCK, bins)
    h = y.new_zeros(y.shape[0], bins)
    for i in range(0, y.shape[1], HIST_BLOCK):
        h += _kernel_into(y[:, i : i + HIST_BLOCK], c, sigma, buf).sum(dim=1)
    return _normalise(h)


def soft_histogram_uv(rgb: Tensor, bins: int = 32, sigma: float = 0.03) -> Tensor:
    """Joint soft histogram of the shifted chroma (U, V): ``[B,3,H,W] -> [B,bins*bins]`` (U major:
    entry ``u*bins + v``), each row sums to 1.

    The 2-D Gaussian kernel is separable, so we build per-pixel weights over U bins and V bins
    (``[B,P,bins]`` each) and contract them with one batched matmul; memory ``2*B*H*W*bins``
    instead of ``B*H*W*bins^2`` (without gradients: blocks of :data:`HIST_BLOCK` pixels).
    """
    _check_4d(rgb, "soft_histogram_uv")
    _check_bins(bins, sigma, "soft_histogram_uv")
    yuv = rgb_to_yuv(rgb)
    u, v = yuv[:, 1].flatten(1), yuv[:, 2].flatten(1)
    if not _blocked(u):
        ku = _kernel(u, bins, sigma)
        kv = _kernel(v, bins, sigma)
        joint = torch.bmm(ku.transpose(1, 2), kv)  # [B,bins,bins]
        return _normalise(joint.flatten(1))
    c = bin_centres(bins, u)
    bu, bv = u.new_empty(u.shape[0], HIST_BLOCK, bins), u.new_empty(u.shape[0], HIST_BLOCK, bins)
    joint = u.new_zeros(u.shape[0], bins, bins)
    for i in range(0, u.shape[1], HIST_BLOCK):
        ku = _kernel_into(u[:, i : i + HIST_BLOCK], c, sigma, bu)
        kv = _kernel_into(v[:, i : i + HIST_BLOCK], c, sigma, bv)
        joint.baddbmm_(ku.transpose(1, 2), kv)
    return _normalise(joint.flatten(1))


def channel_moments(rgb: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and standard deviation over pixels: ``[B,C,H,W] -> ([B,C], [B,C])``.

    std is the population std ``sqrt(var + STD_EPS)`` (finite gradient on flat images).
    """
    _check_4d(rgb, "channel_moments", channels=None)
    flat = rgb.flatten(2)
    mean = flat.mean(dim=2)
    var = ((flat - mean.unsqueeze(-1)) ** 2).mean(dim=2)
    return mean, torch.sqrt(var + STD_EPS)


def gram_matrix(feat: Tensor) -> Tensor:
    """Gram matrix ``G = F F^T / (C H W)`` of feature maps: ``[B,C,H,W] -> [B,C,C]``."""
    _check_4d(feat, "gram_matrix", channels=None)
    b, c, h, w = feat.shape
    f = feat.reshape(b, c, h * w)
    return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)


def gram_upper(g: Tensor) -> Tensor:
    """Upper triangle (diagonal included, row major) of square matrices: ``[B,C,C] -> [B,C(C+1)/2]``."""
    if not isinstance(g, torch.Tensor) or g.ndim != 3 or g.shape[1] != g.shape[2]:
        shape = tuple(g.shape) if isinstance(g, torch.Tensor) else type(g).__name__
        raise ValueError(f"gram_upper: expected square matrices [B,C,C], got {shape}")
    c = g.shape[1]
    iu = torch.triu_indices(c, c, device=g.device)
    return g[:, iu[0], iu[1]]
