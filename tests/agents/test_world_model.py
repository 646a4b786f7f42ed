"""The world model's metrics name what they are: a bound only from normalized densities."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rssm
from agents.contract import dummy_batch
from agents.wm_config import WorldModelConfig
from agents.world_model import WorldModel, check_image_shape

SMALL = WorldModelConfig(
    deter=16, hidden=8, blocks=2, groups=2, classes=3, units=8, layers=1, reward_bins=15
)
OBS = (("vector", (3,)),)


def _batch(seed: int = 0):
    rng = np.random.default_rng(seed)
    batch = dict(dummy_batch(OBS, 2, batch=3, length=4))
    batch["vector"] = jnp.asarray(rng.normal(size=(3, 4, 3)), jnp.float32)
    batch["action"] = jnp.asarray(rng.uniform(-1, 1, (3, 4, 2)), jnp.float32)
    batch["reward"] = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
    batch["is_first"] = jnp.zeros((3, 4), bool).at[:, 0].set(True)
    batch["is_terminal"] = jnp.zeros((3, 4), bool).at[1, 2].set(True)
    return batch


def _loss(wm: WorldModel, batch):
    params = wm.init(jax.random.key(0), batch, jax.random.key(1), method=WorldModel.loss)
    return params, wm.apply(params, batch, jax.random.key(2), method=WorldModel.loss)


def test_bound_from_normal_heads_equals_the_elbo_computed_by_hand():
    cfg = dataclasses.replace(
        SMALL, vector_dist="normal", vector_std=0.5, reward_dist="normal", reward_std=2.0
    )
    wm = WorldModel(cfg, OBS, 2, cont_target=1.0)
    batch = _batch()
    params, (_, (metrics, _)) = _loss(wm, batch)
    assert wm.densities() == {"vector": True, "reward": True, "cont": True}
    assert {"bound", "objective", "loglik/vector", "loglik/reward", "loglik/cont"} <= set(metrics)
    assert not any(k.startswith("score/") or k == "elbo" for k in metrics)

    def parts(m: WorldModel, batch, key):
        post, prior = m.observe(batch, key)
        feat = rssm.features(post)
        vec = m.decoders["vector"](feat).mean()
        return post, prior, vec, m.reward(feat).mean(), m.cont(feat).distribution.logits

    post, prior, vec, rew, logit = wm.apply(params, batch, jax.random.key(2), method=parts)
    norm = jax.scipy.stats.norm.logpdf
    c = 1.0 - batch["is_terminal"].astype(jnp.float32)
    by_hand = (
        norm(batch["vector"], vec, 0.5).sum(-1)
        + norm(batch["reward"], rew, 2.0)
        + c * jax.nn.log_sigmoid(logit)
        + (1 - c) * jax.nn.log_sigmoid(-logit)
        - cfg.make_latent().kl({"logits": post["logits"]}, {"logits": prior["logits"]})
    )
    np.testing.assert_allclose(metrics["bound"], by_hand.mean(), rtol=1e-5)
    # A bound in nats per step on a density: below the best Normal log-densities can reach.
    best = 3 * norm(0.0, 0.0, 0.5) + norm(0.0, 0.0, 2.0)
    assert float(metrics["bound"]) < best


def test_dreamerv3_heads_log_scores_and_no_bound():
    wm = WorldModel(SMALL, OBS, 2, cont_target=1.0 - 1.0 / 333)  # contdisc: soft targets
    _, (_, (metrics, _)) = _loss(wm, _batch())
    assert wm.densities() == {"vector": False, "reward": False, "cont": False}
    assert {"objective", "score/vector", "score/reward", "score/cont", "kl"} <= set(metrics)
    assert not any(k in ("bound", "elbo") or k.startswith("loglik/") for k in metrics)
    # Hard continue targets make that one term a log-likelihood; the rest still bound nothing.
    wm = WorldModel(SMALL, OBS, 2, cont_target=1.0)
    _, (_, (metrics, _)) = _loss(wm, _batch())
    assert "loglik/cont" in metrics and "score/vector" in metrics and "bound" not in metrics


def test_discretized_images_give_a_bound_and_bits_per_dim():
    cfg = dataclasses.replace(
        SMALL,
        depth=2,
        image_dist="discretized_normal",
        image_std=0.2,
        reward_dist="normal",
    )
    obs = (("image", (64, 64, 3)),)
    wm = WorldModel(cfg, obs, 2, cont_target=1.0)
    batch = dict(dummy_batch(obs, 2, batch=2, length=3))
    rng = np.random.default_rng(3)
    batch["image"] = jnp.asarray(rng.integers(0, 256, (2, 3, 64, 64, 3)), jnp.uint8)
    batch["is_first"] = jnp.zeros((2, 3), bool).at[:, 0].set(True)
    _, (_, (metrics, _)) = _loss(wm, batch)
    assert wm.densities() == {"image": True, "reward": True, "cont": True}
    assert {"bound", "loglik/image", "bits_per_dim/image"} <= set(metrics)
    bits = -float(metrics["loglik/image"]) / (64 * 64 * 3 * np.log(2))
    np.testing.assert_allclose(float(metrics["bits_per_dim/image"]), bits, rtol=1e-6)
    # Uniform random pixels cost at least their entropy, 8 bits, under any model.
    assert bits >= 8.0 - 1e-3


def test_heldout_bounds_elbo_and_iwae():
    cfg = dataclasses.replace(SMALL, vector_dist="normal", reward_dist="normal")
    wm = WorldModel(cfg, OBS, 2, cont_target=1.0)
    batch = _batch(seed=4)
    params, _ = _loss(wm, batch)
    key = jax.random.key(5)
    bounds = jax.jit(
        lambda p, b, k: wm.apply(p, b, k, 64, method=WorldModel.heldout_bounds),
    )
    elbo, iwae = bounds(params, batch, key)
    assert elbo.shape == iwae.shape == (3,)
    # The ELBO is the loss's per-step bound summed over the sequence (same posterior sample).
    _, (same, _) = wm.apply(params, batch, jax.random.split(key, 3)[0], method=WorldModel.loss)
    np.testing.assert_allclose(float(elbo.mean()) / 4, float(same["bound"]), rtol=1e-5)
    # 64 importance-weighted trajectories tighten the bound of every sequence here.
    assert bool((iwae > elbo).all()), (iwae, elbo)


def test_planet_preset_trains_a_bound_over_images_and_rewards():
    from experiments.config import planet

    cfg = dataclasses.replace(
        planet().model, depth=2, deter=16, hidden=16, units=16, stoch=4, head_units=8
    )
    obs = (("image", (64, 64, 3)),)
    wm = WorldModel(cfg, obs, 2)
    batch = dict(dummy_batch(obs, 2, batch=2, length=3))
    rng = np.random.default_rng(5)
    batch["image"] = jnp.asarray(rng.integers(0, 256, (2, 3, 64, 64, 3)), jnp.uint8)
    batch["is_first"] = jnp.zeros((2, 3), bool).at[:, 0].set(True)
    _, (_, (metrics, _)) = _loss(wm, batch)
    # No continue term (con_scale 0); 5-bit pixels under a dequantized Normal(mu, 1): a density.
    assert wm.densities() == {"image": True, "reward": True}
    assert {"bound", "loglik/image", "loglik/reward", "bits_per_dim/image"} <= set(metrics)
    assert not any(k.endswith("/cont") for k in metrics)
    # log N(y; mu, 1) <= -0.5 log(2 pi) per dimension; the 5-bit bins add -D log(1/32).
    d = 64 * 64 * 3
    assert float(metrics["loglik/image"]) <= d * (-0.5 * np.log(2 * np.pi) + np.log(32))
    bits = -float(metrics["loglik/image"]) / (d * np.log(2))
    np.testing.assert_allclose(float(metrics["bits_per_dim/image"]), bits, rtol=1e-6)


def test_gray_images_of_another_size_give_bits_per_dim_over_their_pixels():
    cfg = dataclasses.replace(
        SMALL, depth=2, image_dist="discretized_normal", image_std=0.2, reward_dist="normal"
    )
    obs = (("image", (48, 64, 1)),)
    wm = WorldModel(cfg, obs, 2, cont_target=1.0)
    batch = dict(dummy_batch(obs, 2, batch=2, length=3))
    rng = np.random.default_rng(4)
    batch["image"] = jnp.asarray(rng.integers(0, 256, (2, 3, 48, 64, 1)), jnp.uint8)
    batch["is_first"] = jnp.zeros((2, 3), bool).at[:, 0].set(True)
    params, (_, (metrics, _)) = _loss(wm, batch)
    # The decoder predicts [48, 64, 1]; a grid of 3 x 4 cells (4 stages) feeds it.
    mean = wm.apply(params, jnp.zeros((1, 16 + 6)), method=lambda m, f: m.decoders["image"](f))
    assert mean.shape == (1, 48, 64, 1)
    bits = -float(metrics["loglik/image"]) / (48 * 64 * 1 * np.log(2))
    np.testing.assert_allclose(float(metrics["bits_per_dim/image"]), bits, rtol=1e-6)
    assert bits >= 8.0 - 1e-3  # uniform random pixels cost at least 8 bits under any model


def test_image_shapes_the_networks_take_and_the_fix_for_others():
    assert check_image_shape((64, 64, 3)) == (64, 64, 3)
    assert check_image_shape((96, 96, 1)) == (96, 96, 1)
    assert check_image_shape([64, 96, 3]) == (64, 96, 3)
    assert check_image_shape((24, 24, 3), stages=3) == (24, 24, 3)
    for shape in ((100, 100, 3), (40, 40, 1)):
        with pytest.raises(ValueError, match=r"one of 48, 64, .*--env\.size 64,64"):
            check_image_shape(shape)
    for shape in ((64, 64, 4), (64, 64), (64, 64, 3, 1)):
        with pytest.raises(ValueError, match=r"C = 3 \(colour\) or 1 \(gray\).*--env\.gray"):
            check_image_shape(shape)
    with pytest.raises(ValueError, match="image size 100x100"):
        WorldModel(SMALL, (("image", (100, 100, 3)),), 2).init(
            jax.random.key(0), 1, method=WorldModel.initial_state
        )
