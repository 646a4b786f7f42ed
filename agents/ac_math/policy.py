"""Policy distributions and the actor's network: a bounded normal over continuous actions, a
categorical (mixed with the uniform) over discrete ones.
"""

from __future__ import annotations

import math
from typing import Any

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp

from rssm.nets import MLP, kernel_init

Array = jax.Array

# DreamerV3's shift of the raw std before the sigmoid: sigmoid(2) = 0.88, so a fresh actor
# (raw outputs near 0) starts with sigma near maxstd and explores widely.
STD_SHIFT = 2.0


def bounded_normal(
    mean_raw: Array, std_raw: Array, minstd: float = 0.1, maxstd: float = 1.0
) -> distrax.Distribution:
    """DreamerV3's continuous policy: Independent(Normal(mu, sigma), 1) over ``[..., A]``.

        mu = tanh(mean_raw),  sigma = (maxstd - minstd) sigmoid(std_raw + STD_SHIFT) + minstd

    The mean lies in (-1, 1) and sigma in (minstd, maxstd), but the distribution itself is an
    ordinary Normal on R^A: samples may leave [-1, 1] (the environment clips them), log_prob
    and entropy are the Normal's, and samples are reparameterized (mu + sigma eps).
    """
    if not 0.0 < minstd < maxstd:
        raise ValueError(f"bounded_normal: need 0 < minstd < maxstd, got {minstd}, {maxstd}")
    if mean_raw.shape != std_raw.shape:
        raise ValueError(f"bounded_normal: mean {mean_raw.shape} != std {std_raw.shape}")
    mean = jnp.tanh(mean_raw.astype(jnp.float32))
    std = (maxstd - minstd) * jax.nn.sigmoid(std_raw.astype(jnp.float32) + STD_SHIFT) + minstd
    return distrax.Independent(distrax.Normal(mean, std), reinterpreted_batch_ndims=1)


def unimix_categorical(logits: Array, unimix: float = 0.01) -> distrax.OneHotCategorical:
    """One-hot categorical over ``[..., K]`` with p = (1 - unimix) softmax(logits) + unimix / K.

    Samples and modes are float32 one-hot vectors. The mixture bounds log p(a) >= log(unimix / K),
    which keeps the REINFORCE term and the KL finite; with unimix 0 it is the plain softmax.
    """
    if not 0.0 <= unimix < 1.0:
        raise ValueError(f"unimix_categorical: unimix must lie in [0, 1), got {unimix}")
    logits = logits.astype(jnp.float32)
    if unimix == 0:
        return distrax.OneHotCategorical(logits=jax.nn.log_softmax(logits, -1), dtype=jnp.float32)
    probs = (1.0 - unimix) * jax.nn.softmax(logits, -1) + unimix / logits.shape[-1]
    return distrax.OneHotCategorical(logits=jnp.log(probs), dtype=jnp.float32)


def sample_action(policy: distrax.Distribution, key: Array) -> Array:
    """a ~ pi, float32 ``[*batch, *event]`` (one-hot for discrete policies, unclipped otherwise)."""
    return policy.sample(seed=key).astype(jnp.float32)


def mode_action(policy: distrax.Distribution) -> Array:
    """The deterministic evaluation action: tanh(mean) for the bounded normal, the one-hot
    argmax for a categorical; float32 ``[*batch, *event]``."""
    return policy.mode().astype(jnp.float32)


class ActorHead(nn.Module):
    """features ``[..., F]`` -> pi(. | s): a bounded normal over ``[..., A]`` (continuous) or a
    one-hot categorical over ``[..., A]`` classes mixed with ``unimix`` of the uniform
    (discrete).

    The MLP is ``rssm.nets.MLP``; one linear layer gives the distribution's parameters.
    """

    action_dim: int
    discrete: bool = False  # categorical over action_dim classes instead of a bounded normal
    layers: int = 2  # hidden layers of the MLP
    units: int = 256  # width of the hidden layers
    norm: str = "rms"  # 'rms', 'layer' or 'none'
    act: str = "silu"  # hidden activation
    minstd: float = 0.1  # continuous: lower bound of the standard deviation
    maxstd: float = 1.0  # continuous: upper bound of the standard deviation
    unimix: float = 0.0  # discrete: weight of the uniform mixture (DreamerV3 2023: 0.01)
    dtype: Any = jnp.float32  # compute dtype; the distribution is float32
    outscale: float = 1.0  # scale of the output layer's initial weights (DreamerV3 2024: 0.01)
    bias: bool = True  # biases in front of norms (DreamerV3 2024); False drops them (2023)
    winit: str = "fan_in"  # weight init: truncated normal over fan_in (2024) or fan_avg (2023)

    @nn.compact
    def __call__(self, feat: Array) -> distrax.Distribution:
        if self.action_dim < 1:
            raise ValueError(f"ActorHead: action_dim must be >= 1, got {self.action_dim}")
        x = MLP(
            self.layers, self.units, self.norm, self.act, False, self.dtype, self.bias, self.winit
        )(feat)
        init = kernel_init(self.winit, self.outscale)
        if self.discrete:
            logits = nn.Dense(self.action_dim, dtype=self.dtype, kernel_init=init)(x)
            return unimix_categorical(logits.astype(jnp.float32), self.unimix)
        # Mean and std from two output layers, as DreamerV3 (one layer of 2A is the same map).
        mean_raw = nn.Dense(self.action_dim, dtype=self.dtype, kernel_init=init)(x)
        std_raw = nn.Dense(self.action_dim, dtype=self.dtype, kernel_init=init)(x)
        return bounded_normal(
            mean_raw.astype(jnp.float32), std_raw.astype(jnp.float32), self.minstd, self.maxstd
        )

    def entropy_range(self) -> tuple[float, float]:
        """(H_min, H_max) of the policy family: A entropies of N(0, minstd) .. N(0, maxstd), or
        0 .. log K for the categorical."""
        if self.discrete:
            return 0.0, math.log(self.action_dim)
        per_dim = lambda std: 0.5 * math.log(2 * math.pi * math.e * std**2)
        return self.action_dim * per_dim(self.minstd), self.action_dim * per_dim(self.maxstd)
