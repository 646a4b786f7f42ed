"""The fast layouts of rssm/blocks.py compute what the plain formulations compute.

Each case traces a fresh function twice, once inside ``reference_impl`` (the plain einsum of
``BlockDense`` and the plain block GRU of ``rssm/model.py``) and once outside it (the layouts
XLA:CPU runs fastest), and compares values and gradients on the same inputs.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rssm
from rssm import RSSM, CategoricalLatent
from rssm.blocks import BlockDense
from rssm.reference import reference_impl


def _close(fast, plain):
    for x, y in zip(jax.tree.leaves(fast), jax.tree.leaves(plain), strict=True):
        scale = float(jnp.abs(y).max())
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6 * max(scale, 1.0))


@pytest.mark.parametrize("shared", [False, True])
def test_block_dense_layouts_equal_the_plain_einsum(shared):
    g, i, o, s = 3, 4, 5, 6
    layer = BlockDense(features=g * o, blocks=g)
    k = jax.random.split(jax.random.key(0), 4)
    x = jax.random.normal(k[0], (2, 7, g * i))
    sh = jax.random.normal(k[1], (2, 7, s)) if shared else None
    params = layer.init(k[2], x, sh)
    # A bias that is not zero, so that its slicing per block is tested too.
    params["params"]["bias"] = jax.random.normal(k[3], (g * o,))
    loss = lambda p, x, sh: (layer.apply(p, x, sh) ** 2).sum()
    with reference_impl():
        plain = jax.jit(lambda p, x, sh: (layer.apply(p, x, sh), jax.grad(loss)(p, x, sh)))(
            params, x, sh
        )
    flat = jax.jit(lambda p, x, sh: (layer.apply(p, x, sh), jax.grad(loss)(p, x, sh)))(
        params, x, sh
    )
    _close(flat, plain)
    y = plain[0]
    grouped = jax.jit(lambda p, x, sh: layer.apply(p, x, sh, layout="grouped"))(params, x, sh)
    assert grouped.shape == (g, 2 * 7, o)
    _close(grouped.transpose(1, 0, 2).reshape(y.shape), y)
    blocks = jax.jit(lambda p, x, sh: layer.apply(p, x, sh, layout="blocks"))(params, x, sh)
    assert len(blocks) == g and blocks[0].shape == (2, 7, o)
    _close(jnp.concatenate(blocks, -1), y)


def test_block_dense_refuses_an_unknown_layout():
    layer = BlockDense(features=4, blocks=2)
    with pytest.raises(ValueError, match="layout"):
        layer.init(jax.random.key(0), jnp.zeros((1, 4)), layout="rows")


@pytest.mark.parametrize("dyn_layers", [0, 1, 2])
def test_block_gru_layouts_equal_the_plain_formulation(dyn_layers):
    # observe runs the block GRU with the blocks as a batch axis, img_step block by block.
    model = RSSM(
        latent=CategoricalLatent(3, 4),
        action_dim=2,
        deter=16,
        hidden=8,
        blocks=4,
        dyn_layers=dyn_layers,
        initial="zeros",
    )
    b, t = 2, 5
    k = jax.random.split(jax.random.key(1), 4)
    embed = jax.random.normal(k[0], (b, t, 6))
    action = jax.random.uniform(k[1], (b, t, 2), minval=-1.5, maxval=1.5)
    is_first = jnp.zeros((b, t), bool).at[:, 0].set(True)
    params = model.init(k[2], embed, action, is_first, k[3], method=RSSM.observe)

    def run(p):
        post, prior = model.apply(p, embed, action, is_first, k[3], method=RSSM.observe)
        last = jax.tree.map(lambda x: x[:, -1], post)
        step = model.apply(p, last, action[:, 0], k[3], method=RSSM.img_step)
        return post, prior, step

    def loss(p):
        post, prior, step = run(p)
        return sum(jnp.sum(rssm.features(s) ** 2) for s in (post, prior, step))

    with reference_impl():
        plain = jax.jit(lambda p: (run(p), jax.grad(loss)(p)))(params)
    fast = jax.jit(lambda p: (run(p), jax.grad(loss)(p)))(params)
    _close(fast, plain)
    # The comparison is not vacuous: the gradient reaches every block layer.
    grads = plain[1]["params"]
    assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads["gates"]))
