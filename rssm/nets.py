"""Networks: activations, norms, the dense unit and the MLP every other network is built from.

Parameters are float32; ``dtype`` sets the compute dtype (float32 or bfloat16). Every head casts
its output back to float32 before building a distribution, so losses are computed in float32.

Initialization follows DreamerV3: weights from a truncated normal with variance 1 / fan
(``winit='fan_in'``, the 2024 release; ``'fan_avg'`` for the 2023 code), biases zero, and an
``outscale`` that multiplies the output layer's initial weights (0 starts a head at zero).

Block-diagonal layers are ``rssm.blocks``, image networks ``rssm.conv``, output heads
``rssm.heads``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rssm.dists import symlog

Array = jax.Array

ACTIVATIONS = {
    "silu": nn.silu,
    "elu": nn.elu,
    "relu": nn.relu,
    "gelu": nn.gelu,
    "tanh": jnp.tanh,
    "none": lambda x: x,
}
NORMS = ("rms", "layer", "none")
WINITS = ("fan_in", "fan_avg")


def get_act(name: str) -> Callable[[Array], Array]:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def kernel_init(
    winit: str = "fan_in", scale: float = 1.0, batch_axis: Sequence[int] = ()
) -> Callable[..., Array]:
    """Truncated normal with variance 1 / fan (``winit``), multiplied by ``scale``.

    The fan counts every input of a block-diagonal kernel ``[G, I, O]`` (G * I, as DreamerV3's
    BlockLinear does) unless ``batch_axis`` names the block axis.
    """
    if winit not in WINITS:
        raise ValueError(f"unknown winit {winit!r}; expected one of {WINITS}")
    if scale == 0.0:
        return nn.initializers.zeros
    base = nn.initializers.variance_scaling(
        1.0, winit, "truncated_normal", batch_axis=tuple(batch_axis)
    )
    if scale == 1.0:
        return base
    return lambda key, shape, dtype=jnp.float32: base(key, shape, dtype) * scale


# The norms' epsilons, as their references set them: DreamerV3 2024's RMSNorm and the LayerNorm
# of DreamerV2 and the DreamerV3 2023 code.
RMS_EPS = 1e-4
LAYER_EPS = 1e-3


class Norm(nn.Module):
    """'rms' (RMSNorm, DreamerV3 2024, eps ``RMS_EPS``), 'layer' (LayerNorm, DreamerV2 / V3
    2023, eps ``LAYER_EPS``) or 'none'. Runs in float32."""

    kind: str = "rms"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        if self.kind == "none":
            return x
        dtype = x.dtype
        x = x.astype(jnp.float32)
        if self.kind == "rms":
            x = nn.RMSNorm(epsilon=RMS_EPS)(x)
        elif self.kind == "layer":
            x = nn.LayerNorm(epsilon=LAYER_EPS)(x)
        else:
            raise ValueError(f"unknown norm {self.kind!r}; expected one of {NORMS}")
        return x.astype(dtype)


class DenseNormAct(nn.Module):
    """act(norm(W x + b)): the unit every MLP here is built from.

    ``bias``: DreamerV3's 2024 layers keep a bias in front of the norm; its 2023 layers (and
    DreamerV2) drop it whenever a norm follows. Without a norm the bias is always used.
    """

    features: int
    norm: str = "rms"
    act: str = "silu"
    dtype: Any = jnp.float32
    bias: bool = True
    winit: str = "fan_in"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = nn.Dense(
            self.features,
            use_bias=self.bias or self.norm == "none",
            dtype=self.dtype,
            kernel_init=kernel_init(self.winit),
        )(x)
        return get_act(self.act)(Norm(self.norm)(x))


class MLP(nn.Module):
    """``layers`` x DenseNormAct(units): ``[..., D] -> [..., units]``.

    With ``symlog_inputs`` the input is first mapped through symlog (DreamerV3's vector encoder),
    which makes the network indifferent to the scale of raw proprioceptive observations.
    """

    layers: int = 2
    units: int = 256
    norm: str = "rms"
    act: str = "silu"
    symlog_inputs: bool = False
    dtype: Any = jnp.float32
    bias: bool = True
    winit: str = "fan_in"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise TypeError(f"MLP expects floating inputs, got dtype {x.dtype}")
        if self.symlog_inputs:
            x = symlog(x)
        x = x.astype(self.dtype)
        for _ in range(self.layers):
            x = DenseNormAct(self.units, self.norm, self.act, self.dtype, self.bias, self.winit)(x)
        return x


def gru_update(reset: Array, cand: Array, update: Array, h: Array) -> Array:
    """h' = u * c + (1 - u) * h with r = sigmoid(reset), c = tanh(r * cand) and
    u = sigmoid(update - 1), from the gate pre-activations (any shape, all alike)."""
    r = jax.nn.sigmoid(reset)
    c = jnp.tanh(r * cand)
    # The -1 bias makes the update gate start mostly closed, so h carries over by default.
    u = jax.nn.sigmoid(update - 1.0)
    return u * c + (1 - u) * h
