"""Discriminators (critics) on sRGB images.

* :class:`UNetDiscriminatorSN`: the U-Net discriminator with spectral normalisation of Real-ESRGAN
  (Wang, Xie, Dong, Shan, "Real-ESRGAN: Training Real-World Blind Super-Resolution with Pure
  Synthetic Data", ICCVW 2021), used by Borelli Image (arXiv 2605.07495) for the stage-2 hinge GAN.
  It returns per-pixel logits. 4,376,897 parameters with ``num_feat=64`` (the papers' "about
  4.4M").

The expert committee of EGUOT-ISP (arXiv 2512.05635: colour, structure and frequency experts) is
planned for a separate module (``models/experts.py``, issue 6); its experts should follow the same
call convention: ``[B, 3, H, W]`` sRGB in [0, 1] -> logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

__all__ = ["UNetDiscriminatorSN"]


class UNetDiscriminatorSN(nn.Module):
    """Real-ESRGAN U-Net discriminator with spectral norm (Wang et al. 2021), per-pixel logits.

    Encoder: conv3x3(in->f) then three 4x4 stride-2 convolutions (f->2f->4f->8f). Decoder: three
    bilinear x2 upsamplings each followed by a 3x3 convolution (8f->4f->2f->f), with additive skips
    from the encoder; then two 3x3 convolutions (f->f) and a 3x3 convolution to one logit channel.
    LeakyReLU(0.2) everywhere; every convolution but the first and the last is spectrally normalised
    and has no bias.

    Input ``[B, C, H, W]`` (H, W multiples of 8) -> logits ``[B, 1, H, W]`` (unbounded).
    """

    def __init__(self, num_in_ch: int = 3, num_feat: int = 64, skip_connection: bool = True) -> None:
        super().__init__()
        if num_feat < 1 or num_in_ch < 1:
            raise ValueError(f"UNetDiscriminatorSN: num_in_ch and num_feat must be >= 1, got {num_in_ch}, {num_feat}")
        f = num_feat
        self.num_in_ch = num_in_ch
        self.skip_connection = skip_connection

        def sn_conv(cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 1) -> nn.Module:
            return spectral_norm(nn.Conv2d(cin, cout, kernel, stride, padding, bias=False))

        self.conv0 = nn.Conv2d(num_in_ch, f, 3, 1, 1)
        self.down = nn.ModuleList([sn_conv(f, 2 * f, 4, 2), sn_conv(2 * f, 4 * f, 4, 2), sn_conv(4 * f, 8 * f, 4, 2)])
        self.up = nn.ModuleList([sn_conv(8 * f, 4 * f, 3), sn_conv(4 * f, 2 * f, 3), sn_conv(2 * f, f, 3)])
        self.refine = nn.ModuleList([sn_conv(f, f, 3), sn_conv(f, f, 3)])
        self.out = nn.Conv2d(f, 1, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` images -> ``[B, 1, H, W]`` per-pixel logits."""
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != self.num_in_ch:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"UNetDiscriminatorSN: expected images [B, {self.num_in_ch}, H, W], got {shape}")
        if x.shape[-2] % 8 or x.shape[-1] % 8:
            raise ValueError(
                f"UNetDiscriminatorSN: expected H and W to be multiples of 8 (three stride-2 levels), "
                f"got {tuple(x.shape[-2:])}"
            )
        act = lambda t: F.leaky_relu(t, 0.2)  # noqa: E731
        skips = [act(self.conv0(x))]
        for conv in self.down:
            skips.append(act(conv(skips[-1])))
        y = skips.pop()
        for conv in self.up:
            y = act(conv(F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)))
            skip = skips.pop()
            if self.skip_connection:
                y = y + skip
        for conv in self.refine:
            y = act(conv(y))
        return self.out(y)


class PotentialNet(nn.Module):
    """The UOT potential ``v``: sRGB ``[B,3,H,W]`` -> one real value per image ``[B]``.

    A plain strided CNN (LeakyReLU, no normalisation, no spectral norm: UOTM regularises the
    potential with the R1 penalty instead), global average pooling, then a linear read-out. Our
    choice; UOTM's potentials are larger networks of the same kind. ``width`` channels at the first
    level, doubled at each of ``levels`` stride-2 levels.

    ``pool`` (ours, issue 10): the image is first averaged over ``pool x pool`` blocks
    (:func:`torch.nn.functional.avg_pool2d`; H and W multiples of ``pool``), so the potential sees
    colour and tone at a coarser scale and not the sensor noise or demosaicing texture of the map's
    outputs, which clean target JPEGs lack and which a pixel-level potential separates first. It is
    still a potential on sRGB (a function of ``y``); structure is left to the cost and the experts.
    """

    def __init__(self, width: int = 32, levels: int = 3, slope: float = 0.2, pool: int = 1) -> None:
        super().__init__()
        if int(pool) != pool or pool < 1:
            raise ValueError(f"PotentialNet: pool must be an integer >= 1, got {pool!r}")
        self.pool = int(pool)
        layers: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1), nn.LeakyReLU(slope)]
        c = width
        for _ in range(levels):
            layers += [nn.Conv2d(c, 2 * c, 4, stride=2, padding=1), nn.LeakyReLU(slope)]
            c *= 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c, 1)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if y.ndim != 4 or y.shape[1] != 3:
            raise ValueError(f"PotentialNet: expected sRGB [B,3,H,W], got shape {tuple(y.shape)}")
        if self.pool > 1:
            if y.shape[-2] % self.pool or y.shape[-1] % self.pool:
                raise ValueError(f"PotentialNet: H and W must be multiples of pool={self.pool}, got {tuple(y.shape[-2:])}")
            y = F.avg_pool2d(y, self.pool)
        return self.head(self.features(y).mean(dim=(2, 3))).squeeze(1)
