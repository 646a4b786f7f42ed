"""Networks: MLP, convolutional image encoder/decoder, and distribution heads.

Parameters are float32; ``dtype`` sets the compute dtype (float32 or bfloat16). Every head casts
its output back to float32 before building a distribution, so losses are computed in float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp

from rssm.dists import MSEDist, SymlogMSEDist, TwoHotSymlogDist, symlog, symlog_bins

Array = jax.Array

ACTIVATIONS = {
    "silu": nn.silu,
    "elu": nn.elu,
    "relu": nn.relu,
    "gelu": nn.gelu,
    "tanh": jnp.tanh,
    "none": lambda x: x,
}


def get_act(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class Norm(nn.Module):
    """'rms' (RMSNorm, DreamerV3), 'layer' (LayerNorm, DreamerV2) or 'none'. Runs in float32."""

    kind: str = "rms"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        if self.kind == "none":
            return x
        dtype = x.dtype
        x = x.astype(jnp.float32)
        if self.kind == "rms":
            x = nn.RMSNorm(epsilon=1e-4)(x)
        elif self.kind == "layer":
            x = nn.LayerNorm(epsilon=1e-3)(x)
        else:
            raise ValueError(f"unknown norm {self.kind!r}; expected 'rms', 'layer' or 'none'")
        return x.astype(dtype)


class DenseNormAct(nn.Module):
    """act(norm(W x)): the unit every MLP here is built from."""

    features: int
    norm: str = "rms"
    act: str = "silu"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = nn.Dense(self.features, use_bias=self.norm == "none", dtype=self.dtype)(x)
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

    @nn.compact
    def __call__(self, x: Array) -> Array:
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise TypeError(f"MLP expects floating inputs, got dtype {x.dtype}")
        if self.symlog_inputs:
            x = symlog(x)
        x = x.astype(self.dtype)
        for _ in range(self.layers):
            x = DenseNormAct(self.units, self.norm, self.act, self.dtype)(x)
        return x


def depth_to_space(x: Array, block: int) -> Array:
    """``[B, H, W, b*b*C] -> [B, H*b, W*b, C]`` (pixel shuffle)."""
    b, h, w, c = x.shape
    x = x.reshape(b, h, w, block, block, c // (block * block))
    x = x.transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h * block, w * block, c // (block * block))


class ConvEncoder(nn.Module):
    """64x64x3 images -> embedding. ``[..., 64, 64, 3] float -> [..., E]``.

    Four stride-2 convolutions (64 -> 32 -> 16 -> 8 -> 4) with ``depth * mults[i]`` channels, then
    flatten. Inputs must already be floats (e.g. image / 255 - 0.5): integer images are refused,
    because feeding raw uint8 values silently scales the inputs by 255.
    """

    depth: int = 32
    mults: Sequence[int] = (2, 3, 4, 4)
    kernel: int = 4
    norm: str = "rms"
    act: str = "silu"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, image: Array) -> Array:
        if not jnp.issubdtype(image.dtype, jnp.floating):
            raise ValueError(
                f"ConvEncoder expects float images (e.g. uint8 / 255 - 0.5), got dtype "
                f"{image.dtype} with shape {image.shape}; convert before encoding"
            )
        if image.ndim < 4 or image.shape[-3:-1] != (64, 64):
            raise ValueError(f"ConvEncoder expects [..., 64, 64, C] images, got {image.shape}")
        lead = image.shape[:-3]
        x = image.reshape(-1, *image.shape[-3:]).astype(self.dtype)
        for mult in self.mults:
            x = nn.Conv(
                self.depth * mult,
                (self.kernel, self.kernel),
                strides=2,
                padding="SAME",
                use_bias=self.norm == "none",
                dtype=self.dtype,
            )(x)
            x = get_act(self.act)(Norm(self.norm)(x))
        return x.reshape(*lead, -1)


class ConvDecoder(nn.Module):
    """Features -> image mean. ``[..., F] -> [..., 64, 64, channels]`` (float32).

    A dense layer to a 4x4 grid, then four upsampling stages, each a stride-1 convolution to
    4x the channels followed by depth-to-space. Transposed convolutions are avoided on purpose:
    their backward pass is pathologically slow on XLA:CPU, and depth-to-space is free of the
    checkerboard artefacts of strided transposes.
    """

    depth: int = 32
    mults: Sequence[int] = (2, 3, 4, 4)
    kernel: int = 3
    channels: int = 3
    norm: str = "rms"
    act: str = "silu"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, feat: Array) -> Array:
        lead = feat.shape[:-1]
        x = feat.reshape(-1, feat.shape[-1]).astype(self.dtype)
        top = self.depth * self.mults[-1]
        x = nn.Dense(4 * 4 * top, dtype=self.dtype)(x).reshape(-1, 4, 4, top)
        outs = [self.depth * m for m in reversed(self.mults[:-1])] + [self.channels]
        for i, ch in enumerate(outs):
            last = i == len(outs) - 1
            x = nn.Conv(
                4 * ch,
                (self.kernel, self.kernel),
                padding="SAME",
                use_bias=last or self.norm == "none",
                dtype=self.dtype,
            )(x)
            x = depth_to_space(x, 2)
            if not last:
                x = get_act(self.act)(Norm(self.norm)(x))
        return x.astype(jnp.float32).reshape(*lead, 64, 64, self.channels)


HEADS = ("mse", "normal", "symlog_mse", "binary", "symlog_twohot")


class Head(nn.Module):
    """An MLP followed by an output distribution over ``shape``.

    dist:
      'mse'           MSEDist: log p = -||x - mu||^2.
      'normal'        Normal(mu, std) with fixed ``std`` (an exact density; std=1 is the
                      unit-variance Gaussian of the lesson's model), or learned when std <= 0.
      'symlog_mse'    SymlogMSEDist: squared error in symlog space.
      'binary'        Bernoulli(logits), e.g. the continue flag c_t.
      'symlog_twohot' TwoHotSymlogDist over ``bins`` bins, for scalars of any scale (reward,
                      value); the output layer starts at zero so early predictions are 0.
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

    @nn.compact
    def __call__(self, feat: Array):
        if self.dist not in HEADS:
            raise ValueError(f"unknown head dist {self.dist!r}; expected one of {HEADS}")
        x = MLP(self.layers, self.units, self.norm, self.act, dtype=self.dtype)(feat)
        shape = tuple(self.shape)
        dims = len(shape)
        size = 1
        for s in shape:
            size *= s
        if self.dist == "symlog_twohot":
            if shape:
                raise ValueError(f"symlog_twohot heads predict scalars; got shape {shape}")
            logits = nn.Dense(self.bins, kernel_init=nn.initializers.zeros, dtype=self.dtype)(x)
            return TwoHotSymlogDist(logits.astype(jnp.float32), symlog_bins(self.bins))
        out = nn.Dense(size, dtype=self.dtype)(x).astype(jnp.float32)
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
            raw = nn.Dense(size, dtype=self.dtype)(x).astype(jnp.float32)
            std = jax.nn.softplus(raw.reshape(out.shape)) + 1e-2
        return distrax.Independent(distrax.Normal(out, std), dims)
