"""Image networks: the encoder of ``[H, W, C]`` images and the decoder back to them.

Both halve (encoder) or double (decoder) the resolution once per stage, ``len(mults)`` stages,
so an image size works when ``image_grid`` accepts it: H and W each divisible by 2**stages,
with a smallest grid of MIN_GRID to MAX_GRID cells a side (DreamerV3's bounds). With four
stages that is 48, 64, 80, ..., 256 pixels a side: 64 x 64 (grid 4 x 4), 96 x 96 (6 x 6),
64 x 96 (4 x 6). Any channel count works (3: colour, 1: gray).

Parameters are float32 and ``dtype`` the compute dtype, as in ``rssm.nets``; the decoder's
output is float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rssm.blocks import BlockDense
from rssm.nets import DenseNormAct, Norm, get_act, kernel_init

Array = jax.Array


def depth_to_space(x: Array, block: int) -> Array:
    """``[B, H, W, b*b*C] -> [B, H*b, W*b, C]`` (pixel shuffle)."""
    b, h, w, c = x.shape
    x = x.reshape(b, h, w, block, block, c // (block * block))
    x = x.transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h * block, w * block, c // (block * block))


def upsample_nearest(x: Array) -> Array:
    """``[B, H, W, C] -> [B, 2H, 2W, C]``, every pixel repeated 2 x 2."""
    return jnp.repeat(jnp.repeat(x, 2, axis=-2), 2, axis=-3)


def max_pool_2x2(x: Array) -> Array:
    """``[B, H, W, C] -> [B, H/2, W/2, C]``, the maximum of each 2 x 2 patch."""
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max((2, 4))


CNNS = ("dreamerv3", "strided")
# Bounds on the side of the smallest grid, after the last halving: DreamerV3 (f8817c4
# dreamerv3/rssm.py Encoder and Decoder) asserts 3 <= H / 2**stages <= 16, and so for W.
MIN_GRID = 3
MAX_GRID = 16


def image_grid(size: tuple[int, int], stages: int) -> tuple[int, int]:
    """The smallest grid ``(H / 2**stages, W / 2**stages)`` of ``size = (H, W)`` images after
    ``stages`` halvings (the encoder's last, the decoder's first).

    The sizes that work are those where each side is 2**stages x n with MIN_GRID <= n <=
    MAX_GRID: for 4 stages 48, 64, 80, ..., 256 (any pair of them, e.g. 64 x 96); for 3
    stages 24, 32, ..., 128. ValueError names them otherwise (e.g. 100 or 40 at 4 stages).
    """
    if stages < 1:
        raise ValueError(f"image networks need at least one stage, got {stages}")
    size = tuple(size)
    if len(size) != 2:
        raise ValueError(f"image size must be (height, width), got {size}")
    factor = 2**stages
    grid = tuple(int(s) // factor for s in size)
    if all(
        int(s) % factor == 0 and MIN_GRID <= g <= MAX_GRID for s, g in zip(size, grid, strict=True)
    ):
        return grid[0], grid[1]
    valid = ", ".join(str(factor * n) for n in range(MIN_GRID, MAX_GRID + 1))
    raise ValueError(
        f"image size {size[0]}x{size[1]} does not fit {stages} stages that halve the "
        f"resolution: height and width must each be {factor} x n with n in "
        f"{MIN_GRID}..{MAX_GRID}, i.e. one of {valid}"
    )


class ConvEncoder(nn.Module):
    """Images -> embedding. ``[..., H, W, C] float -> [..., E]``, E = h * w * depth * mults[-1]
    with ``(h, w) = image_grid((H, W), len(mults))``.

    One stage per entry of ``mults``, with ``depth * mults[i]`` channels, halves the resolution
    (64 -> 4 or 96 -> 6 with four stages), then the grid is flattened. H and W must be sizes
    ``image_grid`` accepts; C is any number of channels (3: colour, 1: gray).

    - ``kind='dreamerv3'`` (2024 release): convolution (``kernel`` 5, stride 1), 2 x 2 max-pool,
      norm, activation.
    - ``kind='strided'``: convolution with stride 2 (``kernel`` 4), norm, activation; about 4x
      fewer FLOPs than 'dreamerv3' at the same depth.

    Inputs must already be floats (e.g. image / 255 - 0.5): integer images are refused, because
    feeding raw uint8 values silently scales the inputs by 255.
    """

    depth: int = 32
    mults: Sequence[int] = (2, 3, 4, 4)
    kernel: int = 5
    kind: str = "dreamerv3"
    norm: str = "rms"
    act: str = "silu"
    dtype: Any = jnp.float32
    bias: bool = True
    winit: str = "fan_in"

    @nn.compact
    def __call__(self, image: Array) -> Array:
        if self.kind not in CNNS:
            raise ValueError(f"unknown ConvEncoder kind {self.kind!r}; expected one of {CNNS}")
        if not jnp.issubdtype(image.dtype, jnp.floating):
            raise ValueError(
                f"ConvEncoder expects float images (e.g. uint8 / 255 - 0.5), got dtype "
                f"{image.dtype} with shape {image.shape}; convert before encoding"
            )
        if image.ndim < 4:
            raise ValueError(f"ConvEncoder expects [..., H, W, C] images, got {image.shape}")
        image_grid(image.shape[-3:-1], len(self.mults))  # raises naming the sizes that work
        lead = image.shape[:-3]
        x = image.reshape(-1, *image.shape[-3:]).astype(self.dtype)
        strided = self.kind == "strided"
        for mult in self.mults:
            x = nn.Conv(
                self.depth * mult,
                (self.kernel, self.kernel),
                strides=2 if strided else 1,
                padding="SAME",
                use_bias=self.bias or self.norm == "none",
                dtype=self.dtype,
                kernel_init=kernel_init(self.winit),
            )(x)
            if not strided:
                x = max_pool_2x2(x)
            x = get_act(self.act)(Norm(self.norm)(x))
        return x.reshape(*lead, -1)


class ConvDecoder(nn.Module):
    """Features -> image mean in [0, 1] space. ``[..., F] -> [..., H, W, channels]`` (float32)
    with ``size = (H, W)``; the first grid is ``(h, w) = image_grid(size, len(mults))``.

    - ``kind='dreamerv3'`` (2024 release): an h x w x (depth * mults[-1]) grid built as
      act(norm(x0 + x1)) with x0 = BlockDense(h_t) over ``blocks`` groups laid out along the
      channels, and x1 a dense layer (2 * ``units``, norm, act) and a linear map from s_t; then
      a stage of 2x nearest-neighbour upsampling and a convolution (``kernel`` 5, norm, act)
      for each but the last entry of ``mults`` (three with four), and a last upsampling and
      convolution to ``channels``, through a sigmoid. The features must be concat(h_t, s_t)
      with h_t of size ``deter``.
    - ``kind='strided'``: a dense layer to the h x w grid, then one stage per entry of
      ``mults``, each a stride-1 convolution to 4x the channels and depth-to-space (the last
      to ``channels``), the last output shifted by +0.5.
      (Transposed convolutions are avoided: their backward pass is pathologically slow on
      XLA:CPU, and depth-to-space has no checkerboard artefacts.)
    """

    depth: int = 32
    mults: Sequence[int] = (2, 3, 4, 4)
    kernel: int = 5
    channels: int = 3
    size: tuple[int, int] = (64, 64)  # (height, width) of the output images
    kind: str = "dreamerv3"
    deter: int = 0  # 'dreamerv3': size of h_t at the front of the features
    units: int = 256  # 'dreamerv3': the stochastic path's width is 2 * units
    blocks: int = 8  # 'dreamerv3': groups of the block-dense spatial projection
    norm: str = "rms"
    act: str = "silu"
    dtype: Any = jnp.float32
    bias: bool = True
    winit: str = "fan_in"

    def _conv(self, features: int, last: bool = False) -> nn.Conv:
        return nn.Conv(
            features,
            (self.kernel, self.kernel),
            padding="SAME",
            use_bias=last or self.bias or self.norm == "none",
            dtype=self.dtype,
            kernel_init=kernel_init(self.winit),
        )

    @nn.compact
    def __call__(self, feat: Array) -> Array:
        if self.kind not in CNNS:
            raise ValueError(f"unknown ConvDecoder kind {self.kind!r}; expected one of {CNNS}")
        lead = feat.shape[:-1]
        x = feat.reshape(-1, feat.shape[-1]).astype(self.dtype)
        act = get_act(self.act)
        top = self.depth * self.mults[-1]
        gh, gw = image_grid(self.size, len(self.mults))
        if self.kind == "strided":
            x = nn.Dense(gh * gw * top, dtype=self.dtype, kernel_init=kernel_init(self.winit))(x)
            x = x.reshape(-1, gh, gw, top)
            outs = [self.depth * m for m in reversed(self.mults[:-1])] + [self.channels]
            for i, ch in enumerate(outs):
                last = i == len(outs) - 1
                x = depth_to_space(self._conv(4 * ch, last)(x), 2)
                if not last:
                    x = act(Norm(self.norm)(x))
            x = x + 0.5
        else:
            g = self.blocks
            if not 0 < self.deter < feat.shape[-1]:
                raise ValueError(
                    f"ConvDecoder(kind='dreamerv3') needs deter (0 < deter < {feat.shape[-1]}), "
                    f"got deter={self.deter}; features are concat(h_t, s_t)"
                )
            if top % g:
                raise ValueError(f"depth * mults[-1] = {top} must be divisible by blocks={g}")
            deter, stoch = x[:, : self.deter], x[:, self.deter :]
            # BlockDense's output is laid out (g, h, w, c): group g's c channels of every cell.
            x0 = BlockDense(gh * gw * top, g, self.dtype, self.winit)(deter)
            x0 = x0.reshape(-1, g, gh, gw, top // g).transpose(0, 2, 3, 1, 4)
            x0 = x0.reshape(-1, gh, gw, top)
            x1 = DenseNormAct(2 * self.units, self.norm, self.act, self.dtype, True, self.winit)(
                stoch
            )
            x1 = nn.Dense(gh * gw * top, dtype=self.dtype, kernel_init=kernel_init(self.winit))(x1)
            x = act(Norm(self.norm)(x0 + x1.reshape(-1, gh, gw, top)))
            for mult in reversed(self.mults[:-1]):
                x = self._conv(self.depth * mult)(upsample_nearest(x))
                x = act(Norm(self.norm)(x))
            x = jax.nn.sigmoid(self._conv(self.channels, last=True)(upsample_nearest(x)))
        return x.astype(jnp.float32).reshape(*lead, *x.shape[1:])
