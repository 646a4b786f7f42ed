"""Block-diagonal layers, and the layouts XLA:CPU runs them fastest in.

``BlockDense`` is a dense layer with one ``[I, O]`` matrix per block; its plain formulation (one
einsum) and the block GRU's (``RSSM._block_gates`` and ``gru_update``, ``rssm/model.py``) are the
definitions. The functions below compute the same numbers in other layouts, and run whenever
``rssm.reference.reference_active()`` is False:

- 'grouped': the blocks as the leading batch axis of one batched matmul, ``[G, N, O]``: the
  fastest backward pass (training, ``RSSM.observe``). XLA:CPU lays out the einsum with N as the
  minor axis of its output and pays for strided copies in whatever consumes it; this order runs
  several times faster.
- 'blocks': G separate matmuls whose ``[..., O]`` outputs need no transposes: the fastest forward
  pass (imagination and planning, ``RSSM.img_step``).
- a shared input appended to every block's input is one dense product, not G broadcast copies.

Measured by ``benchmarks/update.py`` (seconds per update; ``--profile`` splits it by part) and
``benchmarks/elbo_step.py``; held equal to the plain formulations by ``tests/rssm/test_blocks.py``
(and the whole update by ``tests/agents/test_dreamer.py``).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rssm.nets import get_act, gru_update, kernel_init
from rssm.reference import reference_active

Array = jax.Array
LAYOUTS = ("flat", "grouped", "blocks")


class BlockDense(nn.Module):
    """Block-diagonal dense layer: ``[..., G * I] -> [..., G * O]`` with G = ``blocks``.

    One ``[I, O]`` weight matrix per block (DreamerV3's BlockLinear); the input's g-th slice of
    I features only reaches the g-th slice of the output:

        y_g = [x_g, shared] W_g + b_g

    ``shared [..., S]`` (optional) is appended to every block's input, so block g's matrix is
    ``[I + S, O]``.
    """

    features: int  # total outputs G * O
    blocks: int
    dtype: Any = jnp.float32
    winit: str = "fan_in"

    @nn.compact
    def __call__(
        self, x: Array, shared: Array | None = None, layout: str = "flat"
    ) -> Array | list[Array]:
        """``[..., G * I] -> [..., G * O]`` ('flat'). The fast forms also give 'grouped',
        ``[G, N, O]`` with N = prod(...), and 'blocks', a list of the G blocks' ``[..., O]``."""
        g = self.blocks
        if x.shape[-1] % g or self.features % g:
            raise ValueError(
                f"BlockDense: input {x.shape[-1]} and features {self.features} must both be "
                f"divisible by blocks={g}"
            )
        if layout not in LAYOUTS:
            raise ValueError(f"BlockDense: layout={layout!r}; expected one of {LAYOUTS}")
        i, o = x.shape[-1] // g, self.features // g
        s = 0 if shared is None else shared.shape[-1]
        kernel = self.param("kernel", kernel_init(self.winit), (g, i + s, o))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        kernel, bias = kernel.astype(self.dtype), bias.astype(self.dtype)
        if not reference_active():
            return dense_layout(x.astype(self.dtype), shared, kernel, bias, layout)
        if layout != "flat":
            raise ValueError(f"BlockDense: layout {layout!r} exists only in the fast forms")
        lead = x.shape[:-1]
        x = x.astype(self.dtype).reshape(*lead, g, i)
        if shared is not None:
            shared = jnp.broadcast_to(shared.astype(self.dtype)[..., None, :], (*lead, g, s))
            x = jnp.concatenate([x, shared], -1)
        y = jnp.einsum("...gi,gio->...go", x, kernel).reshape(*lead, self.features)
        return y + bias


def dense_layout(
    x: Array, shared: Array | None, kernel: Array, bias: Array, layout: str
) -> Array | list[Array]:
    """``BlockDense`` on ``x [..., G * I]`` (and ``shared [..., S]``) with ``kernel
    [G, I + S, O]`` and ``bias [G * O]``, in ``layout``."""
    g, _, o = kernel.shape
    lead, i = x.shape[:-1], x.shape[-1] // g
    x = x.reshape(*lead, g, i)
    # The shared input's contribution to every block, [..., G * O]: one dense product.
    sh = None
    if shared is not None:
        dense = kernel[:, i:].transpose(1, 0, 2).reshape(-1, g * o)
        sh = shared.astype(kernel.dtype) @ dense
    if layout == "blocks":
        ys = [x[..., j, :] @ kernel[j, :i] + bias[j * o : (j + 1) * o] for j in range(g)]
        if sh is not None:
            ys = [y + sh[..., j * o : (j + 1) * o] for j, y in enumerate(ys)]
        return ys
    y = jnp.matmul(x.reshape(-1, g, i).transpose(1, 0, 2), kernel[:, :i])  # [G, N, O]
    if sh is not None:
        y = y + sh.reshape(-1, g, o).transpose(1, 0, 2)
    y = y + bias.reshape(g, 1, o)
    if layout == "grouped":
        return y
    return y.transpose(1, 0, 2).reshape(*lead, g * o)


def block_gates(mdl: nn.Module, deter: Array, stoch: Array, action: Array, layout: str):
    """``RSSM._block_gates`` of the bound RSSM ``mdl`` in ``layout``: 'grouped'
    ``[G, N, 3 D / G]`` or 'blocks', a list of G arrays ``[..., 3 D / G]``."""
    x = mdl.block_input(deter, stoch, action)
    h = deter.astype(x.dtype)
    if not mdl.dyn:  # no block layer: the gates see [h_g, x] themselves
        return mdl.gates(h, x, layout=layout)
    # Hidden block layers return flat activations (their norm spans all blocks).
    inner = "flat" if layout == "grouped" else layout
    for i, (layer, norm) in enumerate(zip(mdl.dyn, mdl.dyn_norm, strict=True)):
        y = layer(h, x, layout=inner) if i == 0 else layer(h, layout=inner)
        if inner == "blocks":
            y = jnp.concatenate(y, -1)
        h = get_act(mdl.act)(norm(y))
    return mdl.gates(h, layout=layout)


def block_gru(mdl: nn.Module, deter: Array, stoch: Array, action: Array, per_block: bool) -> Array:
    """The block GRU's h' ``[..., D]`` of the bound RSSM ``mdl``: block by block (``per_block``:
    the elementwise work reads and writes ``[..., D / G]`` slices in their natural layout), or
    with the gates in block-major layout ``[G, N, D / G]``, so that it reads contiguous memory."""
    g, d = mdl.blocks, mdl.deter // mdl.blocks
    h = deter.astype(jnp.float32)
    if per_block:
        outs = []
        for j, part in enumerate(block_gates(mdl, deter, stoch, action, "blocks")):
            reset, cand, update = jnp.split(part.astype(jnp.float32), 3, -1)
            outs.append(gru_update(reset, cand, update, h[..., j * d : (j + 1) * d]))
        return jnp.concatenate(outs, -1)
    parts = block_gates(mdl, deter, stoch, action, "grouped").astype(jnp.float32)
    reset, cand, update = jnp.split(parts, 3, -1)  # [G, N, D / G] each
    out = gru_update(reset, cand, update, h.reshape(-1, g, d).transpose(1, 0, 2))
    return out.transpose(1, 0, 2).reshape(*deter.shape[:-1], mdl.deter)
