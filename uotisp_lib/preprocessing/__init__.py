"""Preprocessing of packed RGGB RAW: normalise, white balance, demosaic, denoise, gamma.

Tensors are float, NCHW, on any device. Packed RAW is ``[B,4,h,w]`` in canonical order
``[R, Gr, Gb, B]`` (:func:`reorder_channels` converts other packings); :func:`normalize` maps raw
units to [0,1]; everything after works on [0,1]. The Bayer mosaic is ``[B,1,2h,2w]`` RGGB, the
output RGB ``[B,3,2h,2w]``. :class:`Preprocessor` chains the stages per a :class:`PreprocessConfig`.

Submodules: :mod:`.raw` (levels, order, white balance, packing), :mod:`.demosaicing`,
:mod:`.denoising`, :mod:`.tone`, :mod:`.pipeline`.
"""

from .demosaicing import (
    DEMOSAIC_METHODS,
    demosaic,
    demosaic_bilinear,
    demosaic_demosaicnet,
    demosaic_malvar,
    demosaic_menon,
    load_demosaicnet,
)
from .denoising import DENOISE_METHODS, FFDNET_ENV, FFDNet, denoise, denoise_guided, load_ffdnet
from .pipeline import PreprocessConfig, Preprocessor
from .raw import (
    BAYER_ORDERS,
    CANONICAL_CHANNELS,
    apply_white_balance,
    gray_world_gains,
    mosaic,
    normalize,
    pack_bayer,
    reorder_channels,
    unpack_bayer,
    white_balance,
)
from .tone import GAMMA_MODES, apply_gamma, gamma, srgb

__all__ = [
    "BAYER_ORDERS",
    "CANONICAL_CHANNELS",
    "DEMOSAIC_METHODS",
    "DENOISE_METHODS",
    "FFDNET_ENV",
    "GAMMA_MODES",
    "FFDNet",
    "PreprocessConfig",
    "Preprocessor",
    "apply_gamma",
    "apply_white_balance",
    "demosaic",
    "demosaic_bilinear",
    "demosaic_demosaicnet",
    "demosaic_malvar",
    "demosaic_menon",
    "denoise",
    "denoise_guided",
    "gamma",
    "gray_world_gains",
    "load_demosaicnet",
    "load_ffdnet",
    "mosaic",
    "normalize",
    "pack_bayer",
    "reorder_channels",
    "srgb",
    "unpack_bayer",
    "white_balance",
]
