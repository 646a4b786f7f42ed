"""Networks and output distributions: shapes, dtypes, exact inverses and gradients."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rssm
from rssm.blocks import BlockDense
from rssm.conv import depth_to_space, image_grid
from rssm.dists import symlog_bins, twohot
from rssm.reference import reference_impl


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


def test_symexp_bins_are_antisymmetric_and_zero_logits_read_exactly_zero():
    bins = rssm.symexp_bins(255)
    assert bins.shape == (255,) and float(bins[127]) == 0.0
    np.testing.assert_array_equal(bins, -bins[::-1])
    np.testing.assert_allclose([bins[0], bins[-1]], [-rssm.symexp(20.0), rssm.symexp(20.0)])
    assert bool(jnp.all(jnp.diff(bins) > 0))
    even = rssm.symexp_bins(256)
    np.testing.assert_array_equal(even, -even[::-1])
    for b in (bins, even):
        dist = rssm.TwoHotDist(jnp.zeros((3, b.shape[0])), b)
        np.testing.assert_array_equal(dist.mean(), 0.0)  # exactly, despite bins up to 5e8
    # The mirrored sum is the plain expectation for other logits.
    logits = 3 * jax.random.normal(jax.random.key(0), (4, 255))
    dist = rssm.TwoHotDist(logits, bins)
    probs = np.asarray(jax.nn.softmax(logits, -1), np.float64)
    naive = (probs * np.asarray(bins, np.float64)).sum(-1)
    np.testing.assert_allclose(dist.mean(), naive, rtol=1e-4)


def test_twohot_raw_space_encoding_round_trips():
    bins = rssm.symexp_bins(255)
    x = jnp.array([-1234.5, -2.0, -0.01, 0.0, 0.3, 1.0, 10.0, 77.7])
    enc = twohot(x, bins)
    np.testing.assert_allclose((enc * bins).sum(-1), x, rtol=1e-5, atol=1e-7)
    dist = rssm.TwoHotDist(jnp.log(enc + 1e-30), bins)
    np.testing.assert_allclose(dist.mean(), x, rtol=1e-4, atol=1e-6)


def _loss_optimal_readout(make, bins, values, probs, steps=600):
    """Minimizes E_y[-log p(y)] over the logits by Adam and returns the head's readout."""
    values, probs = jnp.asarray(values), jnp.asarray(probs)
    loss = lambda lg: -(probs * make(lg, bins).log_prob(values)).sum()
    logits = jnp.zeros((values.shape[0], bins.shape[0]))  # one logit row, broadcast per value
    opt = __import__("optax").adam(0.1)
    state = opt.init(logits)

    @jax.jit
    def step(lg, st):
        g = jax.grad(lambda row: loss(jnp.broadcast_to(row[:1], lg.shape)))(lg)
        g = jnp.broadcast_to(g.sum(0, keepdims=True), lg.shape)
        up, st = opt.update(g, st)
        return lg + up, st

    for _ in range(steps):
        logits, state = step(logits, state)
    return float(make(logits[:1], bins).mean()[0])


def test_twohot_readout_of_a_stochastic_target_is_its_mean():
    # Rewards 0 with p = 0.9 and 10 with p = 0.1: the mean is 1.0.
    values, probs = [0.0, 10.0], [0.9, 0.1]
    unbiased = _loss_optimal_readout(rssm.TwoHotDist, rssm.symexp_bins(255), values, probs)
    assert abs(unbiased - 1.0) < 1e-2, unbiased
    # The 2023 variant's optimum is symexp(E[symlog y]) = symexp(0.1 * log 11) = 0.271.
    biased = _loss_optimal_readout(rssm.TwoHotSymlogDist, symlog_bins(255), values, probs)
    np.testing.assert_allclose(biased, np.expm1(0.1 * np.log(11.0)), atol=1e-2)


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


@pytest.mark.parametrize(
    "kind, dtype",
    [("dreamerv3", jnp.float32), ("dreamerv3", jnp.bfloat16), ("strided", jnp.float32)],
)
def test_conv_encoder_decoder_shapes(kind, dtype):
    enc = rssm.ConvEncoder(depth=4, kind=kind, dtype=dtype)
    # The features a decoder sees are concat(h_t, s_t); here h_t is the first 40 entries.
    dec = rssm.ConvDecoder(depth=4, kind=kind, deter=40, units=8, blocks=4, dtype=dtype)
    img = jax.random.uniform(jax.random.key(0), (2, 3, 64, 64, 3)) - 0.5
    pe = enc.init(jax.random.key(1), img)
    emb = enc.apply(pe, img)
    assert emb.shape == (2, 3, 4 * 4 * 16)
    feat = jnp.concatenate([emb[..., :40], emb[..., :24]], -1)
    pd = dec.init(jax.random.key(2), feat)
    out = dec.apply(pd, feat)
    assert out.shape == (2, 3, 64, 64, 3) and out.dtype == jnp.float32
    if kind == "dreamerv3":  # a sigmoid: predictions lie in the target space [0, 1]
        assert bool(jnp.all((out >= 0) & (out <= 1)))
    for leaf in jax.tree.leaves((pe, pd)):
        assert leaf.dtype == jnp.float32  # parameters stay float32 under bfloat16 compute


@pytest.mark.parametrize("kind", ["dreamerv3", "strided"])
@pytest.mark.parametrize("shape", [(64, 64, 3), (96, 96, 1), (64, 96, 3)])
def test_conv_round_trip_of_any_size_and_channels(kind, shape):
    # Four stages: 64 -> 4, 96 -> 6; the embedding is the last grid x 16 channels (depth 4 x 4).
    h, w, c = shape
    enc = rssm.ConvEncoder(depth=4, kind=kind)
    dec = rssm.ConvDecoder(depth=4, kind=kind, channels=c, size=(h, w), deter=40, units=8, blocks=4)
    img = jax.random.uniform(jax.random.key(0), (2, 3, h, w, c)) - 0.5
    pe = enc.init(jax.random.key(1), img)
    emb = enc.apply(pe, img)
    assert emb.shape == (2, 3, (h // 16) * (w // 16) * 16)
    pd = dec.init(jax.random.key(2), emb)
    assert dec.apply(pd, emb).shape == (2, 3, h, w, c)
    # The first layer sees c channels; the decoder's first grid is (h/16, w/16) wide.
    assert pe["params"]["Conv_0"]["kernel"].shape == (5, 5, c, 8)
    first = "BlockDense_0" if kind == "dreamerv3" else "Dense_0"
    assert pd["params"][first]["bias"].shape == ((h // 16) * (w // 16) * 16,)


def test_image_grid_takes_the_sizes_dreamerv3_takes():
    assert image_grid((64, 64), 4) == (4, 4)
    assert image_grid((96, 96), 4) == (6, 6)
    assert image_grid((64, 96), 4) == (4, 6)
    assert image_grid((48, 256), 4) == (3, 16)  # the bounds DreamerV3 asserts: 3 to 16
    assert image_grid((96, 96), 3) == (12, 12)
    # 100 is no multiple of 16; 40 is not either; 32 -> 2 and 272 -> 17 leave the bounds.
    for size in ((100, 100), (40, 40), (32, 32), (272, 272), (64, 100)):
        with pytest.raises(ValueError, match=r"one of 48, 64, 80, 96, 112, .*, 256"):
            image_grid(size, 4)
    enc = rssm.ConvEncoder(depth=4)
    with pytest.raises(ValueError, match=r"image size 100x100 .* one of 48, 64, 80, 96"):
        enc.init(jax.random.key(0), jnp.zeros((1, 100, 100, 3)))
    dec = rssm.ConvDecoder(depth=4, size=(40, 40), deter=8, units=8, blocks=4)
    with pytest.raises(ValueError, match="image size 40x40"):
        dec.init(jax.random.key(0), jnp.zeros((1, 16)))


def test_encoder_max_pools_and_decoder_blocks_are_block_diagonal():
    # The 'dreamerv3' encoder's first stage is conv (stride 1) then a 2x2 max: a single bright
    # pixel moves the stage output only inside its 2x2 pooling window's neighbourhood.
    # One stage on 32 x 32 images: a 16 x 16 grid, the largest DreamerV3 takes.
    enc = rssm.ConvEncoder(depth=1, mults=(1,), kernel=1, kind="dreamerv3", norm="none")
    img = jnp.zeros((1, 32, 32, 3))
    params = enc.init(jax.random.key(0), img)
    base = enc.apply(params, img).reshape(16, 16)
    changed = set()
    for value in (1.0, -1.0):  # one sign raises the conv output above the window's others
        lit = enc.apply(params, img.at[0, 10, 13].set(value)).reshape(16, 16)
        changed |= {tuple(i) for i in np.argwhere(np.abs(np.asarray(lit - base)) > 0).tolist()}
    assert changed == {(5, 6)}
    # BlockDense: the g-th slice of the input reaches only the g-th slice of the output.
    layer = BlockDense(features=6, blocks=3)
    x = jnp.zeros((1, 9))
    bp = layer.init(jax.random.key(1), x)
    jac = jax.jacobian(lambda v: layer.apply(bp, v))(x)[0, :, 0, :]  # [6 out, 9 in]
    mask = np.kron(np.eye(3), np.ones((2, 3)))
    np.testing.assert_array_equal(np.asarray(jac) != 0, mask != 0)


@pytest.mark.parametrize(
    "dist, shape, target",
    [
        ("mse", (4,), np.ones((2, 3, 4))),
        ("normal", (4,), np.ones((2, 3, 4))),
        ("symlog_mse", (4,), np.ones((2, 3, 4))),
        ("binary", (), np.ones((2, 3))),
        ("symlog_twohot", (), np.ones((2, 3))),
        ("symexp_twohot", (), np.ones((2, 3))),
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


@pytest.mark.parametrize("make", [rssm.TwoHotDist, rssm.TwoHotSymlogDist])
def test_twohot_log_prob_by_gather_equals_the_two_hot_vector(make):
    bins = rssm.symexp_bins(255) if make is rssm.TwoHotDist else symlog_bins(255)
    logits = 2 * jax.random.normal(jax.random.key(0), (6, 255))
    x = jnp.array([-1e6, -3.7, 0.0, 0.25, 42.0, 1e12])  # inside, on, and beyond the bins
    lp = lambda lg: make(lg, bins).log_prob(x)
    grad = lambda lg: jax.grad(lambda z: lp(z).sum())(lg)
    fast, g_fast = jax.jit(lp)(logits), jax.jit(grad)(logits)
    with reference_impl():
        ref, g_ref = jax.jit(lambda z: lp(z))(logits), jax.jit(lambda z: grad(z))(logits)
    np.testing.assert_allclose(fast, ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(g_fast, g_ref, rtol=1e-6, atol=1e-7)
