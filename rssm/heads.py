"""Output heads: an MLP and a distribution over the predicted quantity (``rssm.dists``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp

from rssm.dists import (
    MSEDist,
    SymlogMSEDist,
    TwoHotDist,
    TwoHotSymlogDist,
    symexp_bins,
    symlog_bins,
)
from rssm.nets import MLP, kernel_init

Array = jax.Array

# The floor of a learned Normal head's std: a density free to shrink onto its targets would
# grow log p without bound.
MIN_STD = 1e-2
HEADS = ("mse", "normal", "symlog_mse", "binary", "symexp_twohot", "symlog_twohot")


class Head(nn.Module):
    """An MLP followed by an output distribution over ``shape``.

    dist:
      'mse'           MSEDist: log p = -||x - mu||^2.
      'normal'        Normal(mu, std) with fixed ``std`` (an exact density; std=1 is the
                      likelihood p(x|z) = N(z, 1) of the linear-Gaussian model of
                      ``rssm.vi``), or learned when std <= 0 (softplus + ``MIN_STD``).
      'symlog_mse'    SymlogMSEDist: squared error in symlog space.
      'binary'        Bernoulli(logits), e.g. the continue flag c_t.
      'symexp_twohot' TwoHotDist over ``bins`` bins at symexp(linspace(-20, 20)), for scalars of
                      any scale (reward, value): DreamerV3 2024, an unbiased readout.
      'symlog_twohot' TwoHotSymlogDist (DreamerV3 2023): two-hot in symlog space.

    ``outscale`` multiplies the output layer's initial weights (DreamerV3 starts reward and value
    heads at 0 and the policy at 0.01).
    """

    shape: Sequence[int] = ()
    dist: str = "mse"
    layers: int = 2
    units: int = 256
    norm: str = "rms"
    act: str = "silu"
    std: float = 1.0
    bins: int = 255
    dtype: Any = jnp.float32
    outscale: float = 1.0
    bias: bool = True
    winit: str = "fan_in"

    @nn.compact
    def __call__(self, feat: Array):
        if self.dist not in HEADS:
            raise ValueError(f"unknown head dist {self.dist!r}; expected one of {HEADS}")
        x = MLP(
            self.layers, self.units, self.norm, self.act, False, self.dtype, self.bias, self.winit
        )(feat)
        shape = tuple(self.shape)
        dims = len(shape)
        size = 1
        for s in shape:
            size *= s
        out_init = kernel_init(self.winit, self.outscale)
        if self.dist in ("symexp_twohot", "symlog_twohot"):
            if shape:
                raise ValueError(f"{self.dist} heads predict scalars; got shape {shape}")
            logits = nn.Dense(self.bins, kernel_init=out_init, dtype=self.dtype)(x)
            logits = logits.astype(jnp.float32)
            if self.dist == "symexp_twohot":
                return TwoHotDist(logits, symexp_bins(self.bins))
            return TwoHotSymlogDist(logits, symlog_bins(self.bins))
        out = nn.Dense(size, dtype=self.dtype, kernel_init=out_init)(x).astype(jnp.float32)
        out = out.reshape(*out.shape[:-1], *shape)
        if self.dist == "mse":
            return MSEDist(out, dims)
        if self.dist == "symlog_mse":
            return SymlogMSEDist(out, dims)
        if self.dist == "binary":
            return distrax.Independent(distrax.Bernoulli(logits=out), dims)
        # normal
        if self.std > 0:
            std = jnp.full_like(out, self.std)
        else:
            raw = nn.Dense(size, dtype=self.dtype, kernel_init=out_init)(x).astype(jnp.float32)
            std = jax.nn.softplus(raw.reshape(out.shape)) + MIN_STD
        return distrax.Independent(distrax.Normal(out, std), dims)
