"""Networks: dense and block-dense layers, MLP, image encoder/decoder, distribution heads.

Parameters are float32; ``dtype`` sets the compute dtype (float32 or bfloat16). Every head casts
its output back to float32 before building a distribution, so losses are computed in float32.

Initialization follows DreamerV3: weights from a truncated normal with variance 1 / fan
(``winit='fan_in'``, the 2024 release; ``'fan_avg'`` for the 2023 code), biases zero, and an
``outscale`` that multiplies the output layer's initial weights (0 starts a head at zero).
"""

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
    symlog,
    symlog_bins,
)
from rssm.reference import reference_active

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


def get_act(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def kernel_init(winit: str = "fan_in", scale: float = 1.0, batch_axis: Sequence[int] = ()):
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


class Norm(nn.Module):
    """'rms' (RMSNorm, DreamerV3 2024, eps 1e-4), 'layer' (LayerNorm, DreamerV2 / V3 2023,
    eps 1e-3) or 'none'. Runs in float32."""

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


class BlockDense(nn.Module):
    """Block-diagonal dense layer: ``[..., G * I] -> [..., G * O]`` with G = ``blocks``.

    One ``[I, O]`` weight matrix per block (DreamerV3's BlockLinear); the input's g-th slice of
    I features only reaches the g-th slice of the output.

    ``shared [..., S]`` (optional) is appended to every block's input: block g sees
    [x_g, shared] through its ``[I + S, O]`` matrix. It is computed as one dense product
    shared @ [W_0; ...; W_{G-1}] instead of on G broadcast copies (the same result and
    parameters, less memory traffic).
    """

    features: int  # total outputs G * O
    blocks: int
    dtype: Any = jnp.float32
    winit: str = "fan_in"

    @nn.compact
    def __call__(self, x: Array, shared: Array | None = None, layout: str = "flat"):
        """``[..., G * I] -> [..., G * O]`` ('flat'), ``[G, N, O]`` with N = prod(...)
        ('grouped'), or a list of the G blocks' ``[..., O]`` ('blocks').

        'flat' and 'grouped' run one batched matmul with the blocks leading (the fastest
        backward pass on XLA:CPU); 'blocks' runs G separate matmuls, whose outputs need no
        transposes (the fastest forward pass, e.g. for imagination).
        """
        g = self.blocks
        if x.shape[-1] % g or self.features % g:
            raise ValueError(
                f"BlockDense: input {x.shape[-1]} and features {self.features} must both be "
                f"divisible by blocks={g}"
            )
        i, o = x.shape[-1] // g, self.features // g
        s = 0 if shared is None else shared.shape[-1]
        kernel = self.param("kernel", kernel_init(self.winit), (g, i + s, o))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        kernel = kernel.astype(self.dtype)
        lead = x.shape[:-1]
        x = x.astype(self.dtype).reshape(*lead, g, i)
        if reference_active():
            if shared is not None:
                shared = jnp.broadcast_to(shared.astype(self.dtype)[..., None, :], (*lead, g, s))
                x, shared = jnp.concatenate([x, shared], -1), None
            y = jnp.einsum("...gi,gio->...go", x, kernel).reshape(*lead, self.features)
            y = y + bias.astype(self.dtype)
            if layout == "grouped":
                return y.reshape(-1, g, o).transpose(1, 0, 2)
            if layout == "blocks":
                return [y[..., j * o : (j + 1) * o] for j in range(g)]
            return y
        bias = bias.astype(self.dtype)
        # The shared input's contribution to every block, [..., G * O]: one dense product.
        sh = None
        if shared is not None:
            dense = kernel[:, i:].transpose(1, 0, 2).reshape(s, self.features)
            sh = shared.astype(self.dtype) @ dense
        if layout == "blocks":
            ys = [x[..., j, :] @ kernel[j, :i] + bias[j * o : (j + 1) * o] for j in range(g)]
            if sh is not None:
                ys = [y + sh[..., j * o : (j + 1) * o] for j, y in enumerate(ys)]
            return ys
        # Blocks as the leading batch axis of one batched matmul, [G, N, I] @ [G, I, O]:
        # XLA:CPU lays out the einsum above with N as the minor axis of its output and pays
        # for strided copies in whatever consumes it; this order runs several times faster.
        y = jnp.matmul(x.reshape(-1, g, i).transpose(1, 0, 2), kernel[:, :i])  # [G, N, O]
        if sh is not None:
            y = y + sh.reshape(-1, g, o).transpose(1, 0, 2)
        y = y + bias.reshape(g, 1, o)
        if layout == "grouped":
            return y
        return y.transpose(1, 0, 2).reshape(*lead, self.features)


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


class ConvEncoder(nn.Module):
    """64x64 images -> embedding. ``[..., 64, 64, C] float -> [..., E]``.

    Four stages with ``depth * mults[i]`` channels halve the resolution (64 -> 4), then flatten:

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
        if image.ndim < 4 or image.shape[-3:-1] != (64, 64):
            raise ValueError(f"ConvEncoder expects [..., 64, 64, C] images, got {image.shape}")
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
    """Features -> image mean in [0, 1] space. ``[..., F] -> [..., 64, 64, channels]`` (float32).

    - ``kind='dreamerv3'`` (2024 release): a 4 x 4 x (depth * mults[-1]) grid built as
      act(norm(x0 + x1)) with x0 = BlockDense(h_t) over ``blocks`` groups laid out along the
      channels, and x1 a dense layer (2 * ``units``, norm, act) and a linear map from s_t; then
      three stages of 2x nearest-neighbour upsampling and a convolution (``kernel`` 5, norm,
      act), and a last upsampling and convolution to ``channels``, through a sigmoid. The
      features must be concat(h_t, s_t) with h_t of size ``deter``.
    - ``kind='strided'``: a dense layer to the 4 x 4 grid, then four stages of a stride-1
      convolution to 4x the channels and depth-to-space, the last output shifted by +0.5.
      (Transposed convolutions are avoided: their backward pass is pathologically slow on
      XLA:CPU, and depth-to-space has no checkerboard artefacts.)
    """

    depth: int = 32
    mults: Sequence[int] = (2, 3, 4, 4)
    kernel: int = 5
    channels: int = 3
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
        if self.kind == "strided":
            x = nn.Dense(4 * 4 * top, dtype=self.dtype, kernel_init=kernel_init(self.winit))(x)
            x = x.reshape(-1, 4, 4, top)
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
            x0 = BlockDense(4 * 4 * top, g, self.dtype, self.winit)(deter)
            x0 = x0.reshape(-1, g, 4, 4, top // g).transpose(0, 2, 3, 1, 4).reshape(-1, 4, 4, top)
            x1 = DenseNormAct(2 * self.units, self.norm, self.act, self.dtype, True, self.winit)(
                stoch
            )
            x1 = nn.Dense(4 * 4 * top, dtype=self.dtype, kernel_init=kernel_init(self.winit))(x1)
            x = act(Norm(self.norm)(x0 + x1.reshape(-1, 4, 4, top)))
            for mult in reversed(self.mults[:-1]):
                x = self._conv(self.depth * mult)(upsample_nearest(x))
                x = act(Norm(self.norm)(x))
            x = jax.nn.sigmoid(self._conv(self.channels, last=True)(upsample_nearest(x)))
        return x.astype(jnp.float32).reshape(*lead, 64, 64, self.channels)


HEADS = ("mse", "normal", "symlog_mse", "binary", "symexp_twohot", "symlog_twohot")


class Head(nn.Module):
    """An MLP followed by an output distribution over ``shape``.

    dist:
      'mse'           MSEDist: log p = -||x - mu||^2.
      'normal'        Normal(mu, std) with fixed ``std`` (an exact density; std=1 is the
                      likelihood p(x|z) = N(z, 1) of the linear-Gaussian model of
                      ``rssm.vi``), or learned when std <= 0.
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
            std = jax.nn.softplus(raw.reshape(out.shape)) + 1e-2
        return distrax.Independent(distrax.Normal(out, std), dims)
