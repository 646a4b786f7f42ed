"""Published RSSM configurations by name: PlaNet's, and DreamerV3's sizes (2024 release)."""

from __future__ import annotations

from typing import Any

from rssm.latent import CategoricalLatent, GaussianLatent
from rssm.model import RSSM


def planet(action_dim: int, **overrides: Any) -> RSSM:
    """PlaNet (Hafner et al. 2019; google-research/planet models/rssm.py): Gaussian latent of
    30 (std = softplus + 0.1), TensorFlow's GRUBlockCell of 200 on a ReLU dense embedding of
    (s_{t-1}, a_{t-1}), one ReLU layer of 200 before the prior and the posterior, no norms,
    zero initial state."""
    kw = dict(
        latent=GaussianLatent(30, 0.1),
        deter=200,
        hidden=200,
        core="planet",
        img_layers=1,
        obs_layers=1,
        norm="none",
        act="relu",
        initial="zeros",
    )
    return RSSM(action_dim=action_dim, **{**kw, **overrides})


# DreamerV3 model sizes as in its 2024 release (danijar/dreamerv3, configs.yaml: size1m ...
# size400m): (deter, hidden, classes) with 32 categorical groups and 8 GRU blocks. The same
# entries set the encoder/decoder depth and the MLP width (``DREAMER_WIDTHS``).
DREAMER_SIZES = {
    "size1m": (512, 64, 4),
    "size12m": (2048, 256, 16),
    "size25m": (3072, 384, 24),
    "size50m": (4096, 512, 32),
    "size100m": (6144, 768, 48),
    "size200m": (8192, 1024, 64),
    "size400m": (12288, 1536, 96),
}
# (cnn depth, mlp units) of each size.
DREAMER_WIDTHS = {
    "size1m": (4, 64),
    "size12m": (16, 256),
    "size25m": (24, 384),
    "size50m": (32, 512),
    "size100m": (48, 768),
    "size200m": (64, 1024),
    "size400m": (96, 1536),
}


def dreamer(size: str, action_dim: int, **overrides: Any) -> RSSM:
    """DreamerV3's RSSM (2024 release) of a named size (see ``DREAMER_SIZES``): block GRU with
    8 blocks, 32 categoricals with 1% unimix, h_0 = 0, RMSNorm, SiLU."""
    if size not in DREAMER_SIZES:
        raise ValueError(f"unknown size {size!r}; expected one of {sorted(DREAMER_SIZES)}")
    deter, hidden, classes = DREAMER_SIZES[size]
    kw = dict(
        latent=CategoricalLatent(32, classes, 0.01),
        deter=deter,
        hidden=hidden,
        blocks=8,
        initial="zeros",
    )
    return RSSM(action_dim=action_dim, **{**kw, **overrides})
