"""Networks and output distributions: shapes, dtypes, exact inverses and gradients."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rssm
from rssm.dists import symlog_bins, twohot
from rssm.nets import depth_to_space


def test_symlog_symexp_are_inverse():
    x = jnp.array([-1e6, -50.0, -1.0, -1e-3, 0.0, 1e-3, 1.0, 50.0, 1e6])
    np.testing.assert_allclose(rssm.symexp(rssm.symlog(x)), x, rtol=1e-5)
    np.testing.assert_allclose(rssm.symlog(jnp.array([np.e - 1, 0.0])), [1.0, 0.0], rtol=1e-6)


def test_twohot_round_trip_and_weights():
    bins = symlog_bins(255)
    x = jnp.array([-19.9, -3.3, 0.0, 0.05, 7.123, 19.99])
    enc = twohot(x, bins)
    assert enc.shape == (6, 255)
    np.testing.assert_allclose(enc.sum(-1), 1.0, atol=1e-6)
    np.testing.assert_allclose((enc * bins).sum(-1), x, atol=1e-5)
    assert int((enc > 0).sum(-1).max()) <= 2
    # Out of range targets clip to the end bins.
    np.testing.assert_allclose(twohot(jnp.array([100.0]), bins)[0, -1], 1.0)


def test_twohot_dist_mean_and_gradient():
    bins = symlog_bins(255)
    x = jnp.array([-250.0, -1.5, 0.0, 3.0, 1000.0])
    target = twohot(rssm.symlog(x), bins)
    dist = rssm.TwoHotSymlogDist(jnp.log(target + 1e-12), bins)
    np.testing.assert_allclose(dist.mean(), x, rtol=1e-4, atol=1e-4)
    logits = jax.random.normal(jax.random.key(0), (5, 255))
    grad = jax.grad(lambda lg: rssm.TwoHotSymlogDist(lg, bins).log_prob(x).sum())(logits)
    # d/dlogits sum_k y_k log softmax_k = y - softmax (y sums to 1).
    np.testing.assert_allclose(grad, target - jax.nn.softmax(logits, -1), atol=1e-6)


def test_depth_to_space_places_channels_as_pixels():
    x = jnp.arange(1 * 2 * 2 * 8).reshape(1, 2, 2, 8)
    y = depth_to_space(x, 2)
    assert y.shape == (1, 4, 4, 2)
    # Output pixel (2i + a, 2j + b) holds input (i, j) channels [(a * 2 + b) * C : ... + C].
    for i in range(2):
        for j in range(2):
            for a in range(2):
                for b in range(2):
                    np.testing.assert_array_equal(
                        y[0, 2 * i + a, 2 * j + b],
                        x[0, i, j, (a * 2 + b) * 2 : (a * 2 + b) * 2 + 2],
                    )


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_conv_encoder_decoder_shapes(dtype):
    enc = rssm.ConvEncoder(depth=4, dtype=dtype)
    dec = rssm.ConvDecoder(depth=4, dtype=dtype)
    img = jax.random.uniform(jax.random.key(0), (2, 3, 64, 64, 3)) - 0.5
    pe = enc.init(jax.random.key(1), img)
    emb = enc.apply(pe, img)
    assert emb.shape == (2, 3, 4 * 4 * 16)
    pd = dec.init(jax.random.key(2), emb)
    out = dec.apply(pd, emb)
    assert out.shape == (2, 3, 64, 64, 3) and out.dtype == jnp.float32
    for leaf in jax.tree.leaves((pe, pd)):
        assert leaf.dtype == jnp.float32  # parameters stay float32 under bfloat16 compute


@pytest.mark.parametrize(
    "dist, shape, target",
    [
        ("mse", (4,), np.ones((2, 3, 4))),
        ("normal", (4,), np.ones((2, 3, 4))),
        ("symlog_mse", (4,), np.ones((2, 3, 4))),
        ("binary", (), np.ones((2, 3))),
        ("symlog_twohot", (), np.ones((2, 3))),
    ],
)
def test_heads_log_prob_shapes(dist, shape, target):
    head = rssm.Head(shape=shape, dist=dist, layers=1, units=8, bins=15)
    feat = jnp.ones((2, 3, 5))
    params = head.init(jax.random.key(0), feat)
    lp = head.apply(params, feat).log_prob(jnp.asarray(target, jnp.float32))
    assert lp.shape == (2, 3) and lp.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(lp)))


def test_normal_head_is_the_exact_unit_gaussian_density():
    head = rssm.Head(shape=(2,), dist="normal", std=1.0, layers=1, units=4)
    feat = jnp.ones((1, 3))
    params = head.init(jax.random.key(0), feat)
    dist = head.apply(params, feat)
    x = jnp.array([[0.3, -1.2]])
    mu = dist.mean()
    expected = (-0.5 * jnp.log(2 * jnp.pi) - 0.5 * (x - mu) ** 2).sum(-1)
    np.testing.assert_allclose(dist.log_prob(x), expected, rtol=1e-6)


def test_importing_rssm_imports_no_agents_or_experiments():
    code = (
        "import sys, rssm; bad = [m for m in sys.modules if m.split('.')[0] in "
        "('agents', 'experiments', 'dm_control', 'mujoco', 'orbax', 'wandb')]; "
        "assert not bad, bad; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr
