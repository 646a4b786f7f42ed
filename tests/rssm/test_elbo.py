"""The sequential ELBO: values against independent formulas, balancing, free nats, errors."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rssm
from rssm import CategoricalLatent, GaussianLatent

B, T = 4, 5


def gaussian_states(seed):
    latent = GaussianLatent(3, 0.1)
    k1, k2 = jax.random.split(jax.random.key(seed))
    post = latent.stats(jax.random.normal(k1, (B, T, 6)))
    prior = latent.stats(jax.random.normal(k2, (B, T, 6)))
    return latent, post, prior


def test_plain_elbo_value_matches_independent_formula():
    latent, post, prior = gaussian_states(0)
    lp = {
        "obs": -jax.random.uniform(jax.random.key(1), (B, T)) * 5,
        "reward": -jax.random.uniform(jax.random.key(2), (B, T)),
    }
    # Betas summing to one make the loss value the negative ELBO per step.
    loss, m = rssm.sequential_elbo(
        latent, post, prior, lp, free_nats=0.0, beta_dyn=0.5, beta_rep=0.5
    )
    kl = distrax.MultivariateNormalDiag(post["mean"], post["std"]).kl_divergence(
        distrax.MultivariateNormalDiag(prior["mean"], prior["std"])
    )
    elbo = lp["obs"] + lp["reward"] - kl
    np.testing.assert_allclose(loss, -elbo.mean(), rtol=1e-5)
    np.testing.assert_allclose(m["elbo"], elbo.mean(), rtol=1e-5)
    np.testing.assert_allclose(m["kl"], kl.mean(), rtol=1e-5)
    np.testing.assert_allclose(m["loglik/obs"], lp["obs"].mean(), rtol=1e-6)
    ent = distrax.MultivariateNormalDiag(post["mean"], post["std"]).entropy()
    np.testing.assert_allclose(m["post_ent"], ent.mean(), rtol=1e-5)


def test_balanced_kl_with_unit_betas_has_the_plain_kl_gradient():
    latent, post, prior = gaussian_states(3)

    def balanced(post, prior):
        return rssm.kl_loss(latent, post, prior, 0.0, 1.0, 1.0)[0].sum()

    def plain(post, prior):
        return latent.kl(post, prior).sum()

    g1 = jax.grad(balanced, argnums=(0, 1))(post, prior)
    g2 = jax.grad(plain, argnums=(0, 1))(post, prior)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_scales_and_free_nats_values():
    latent = CategoricalLatent(2, 3, 0.01)
    post = latent.stats(jax.random.normal(jax.random.key(4), (B, T, 6)))
    prior = latent.stats(jax.random.normal(jax.random.key(5), (B, T, 6)))
    kl = latent.kl(post, prior)
    lp = {"a": jnp.full((B, T), -2.0), "b": jnp.full((B, T), -3.0)}
    free = float(jnp.median(kl))
    loss, _ = rssm.sequential_elbo(latent, post, prior, lp, {"a": 2.0}, free, 0.5, 0.1)
    expected = 2.0 * 2.0 + 3.0 + 0.6 * jnp.maximum(free, kl).mean()
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_defaults_train_the_exact_elbo_and_published_losses_are_named():
    latent = CategoricalLatent(2, 3, 0.01)
    post = latent.stats(jax.random.normal(jax.random.key(7), (B, T, 6)))
    prior = latent.stats(jax.random.normal(jax.random.key(8), (B, T, 6)))
    lp = {"obs": -jax.random.uniform(jax.random.key(9), (B, T)) * 3}

    # Defaults: no free nats, unit betas, so the gradient is that of -ELBO = -(log p - KL).
    def default_loss(post, prior):
        return rssm.sequential_elbo(latent, post, prior, lp)[0]

    def minus_elbo(post, prior):
        return -(lp["obs"] - latent.kl(post, prior)).mean()

    g1 = jax.grad(default_loss, argnums=(0, 1))(post, prior)
    g2 = jax.grad(minus_elbo, argnums=(0, 1))(post, prior)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # DreamerV3 (2024): free nats 1, beta_dyn 1, beta_rep 0.1; the 2023 code: 0.5 / 0.1.
    kl = latent.kl(post, prior)
    for named, (dyn, rep) in (
        (rssm.DREAMERV3_KL, (1.0, 0.1)),
        (rssm.DREAMERV3_2023_KL, (0.5, 0.1)),
    ):
        loss, _ = rssm.sequential_elbo(latent, post, prior, lp, **named)
        expected = (-lp["obs"] + (dyn + rep) * jnp.maximum(1.0, kl)).mean()
        np.testing.assert_allclose(loss, expected, rtol=1e-5)
    loss, _ = rssm.sequential_elbo(latent, post, prior, lp, **rssm.PLANET_KL)
    np.testing.assert_allclose(loss, (-lp["obs"] + 2 * jnp.maximum(3.0, kl)).mean(), rtol=1e-5)


def test_bad_terms_raise():
    latent, post, prior = gaussian_states(6)
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        rssm.sequential_elbo(latent, post, prior, {"obs": jnp.zeros((B, T, 2))})
    with pytest.raises(ValueError, match="not in log_probs"):
        rssm.sequential_elbo(latent, post, prior, {"obs": jnp.zeros((B, T))}, {"rew": 1.0})
    with pytest.raises(ValueError, match="KL has shape"):
        rssm.sequential_elbo(latent, post, prior, {"obs": jnp.zeros((B, T + 1))})
