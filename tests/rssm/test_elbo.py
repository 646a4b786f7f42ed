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


def elbo_of(lp, post, prior):
    """The per-step ELBO by distrax's KL of diagonal Gaussians, independent of rssm's."""
    kl = distrax.MultivariateNormalDiag(post["mean"], post["std"]).kl_divergence(
        distrax.MultivariateNormalDiag(prior["mean"], prior["std"])
    )
    return (sum(lp.values()) - kl).mean()


def test_plain_elbo_value_matches_independent_formula():
    latent, post, prior = gaussian_states(0)
    lp = {
        "obs": -jax.random.uniform(jax.random.key(1), (B, T)) * 5,
        "reward": -jax.random.uniform(jax.random.key(2), (B, T)),
    }
    # Betas summing to one make the surrogate's value the negative ELBO per step too.
    loss, m = rssm.sequential_elbo(
        latent, post, prior, lp, free_nats=0.0, beta_dyn=0.5, beta_rep=0.5
    )
    np.testing.assert_allclose(m["surrogate"], -elbo_of(lp, post, prior), rtol=1e-5)
    kl = distrax.MultivariateNormalDiag(post["mean"], post["std"]).kl_divergence(
        distrax.MultivariateNormalDiag(prior["mean"], prior["std"])
    )
    elbo = lp["obs"] + lp["reward"] - kl
    np.testing.assert_allclose(loss, -elbo.mean(), rtol=1e-5)
    assert float(loss) == -float(m["elbo"])
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
    loss, m = rssm.sequential_elbo(latent, post, prior, lp, {"a": 2.0}, free, 0.5, 0.1)
    expected = 2.0 * 2.0 + 3.0 + 0.6 * jnp.maximum(free, kl).mean()
    np.testing.assert_allclose(m["surrogate"], expected, rtol=1e-5)
    # The loss's value is -ELBO whatever the scales and clipping: 2 + 3 + KL.
    np.testing.assert_allclose(loss, 5.0 + kl.mean(), rtol=1e-5)


def test_defaults_train_the_exact_elbo_and_published_losses_are_named():
    latent = CategoricalLatent(2, 3, 0.01)
    post = latent.stats(jax.random.normal(jax.random.key(7), (B, T, 6)))
    prior = latent.stats(jax.random.normal(jax.random.key(8), (B, T, 6)))
    lp = {"obs": -jax.random.uniform(jax.random.key(9), (B, T)) * 3}

    # Defaults: no free nats, unit betas, so the loss is -ELBO = -(log p - KL) in value (the
    # surrogate's balanced KL counts it twice) and in gradient.
    loss, m = rssm.sequential_elbo(latent, post, prior, lp)
    assert float(loss) == -float(m["elbo"])
    kl = latent.kl(post, prior)
    np.testing.assert_allclose(loss, (kl - lp["obs"]).mean(), rtol=1e-5)
    np.testing.assert_allclose(m["surrogate"], (2 * kl - lp["obs"]).mean(), rtol=1e-5)

    def default_loss(post, prior):
        return rssm.sequential_elbo(latent, post, prior, lp)[0]

    def minus_elbo(post, prior):
        return -(lp["obs"] - latent.kl(post, prior)).mean()

    g1 = jax.grad(default_loss, argnums=(0, 1))(post, prior)
    g2 = jax.grad(minus_elbo, argnums=(0, 1))(post, prior)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # DreamerV3 (2024): free nats 1, beta_dyn 1, beta_rep 0.1; the 2023 code: 0.5 / 0.1.
    for named, (dyn, rep) in (
        (rssm.DREAMERV3_KL, (1.0, 0.1)),
        (rssm.DREAMERV3_2023_KL, (0.5, 0.1)),
    ):
        loss, m = rssm.sequential_elbo(latent, post, prior, lp, **named)
        expected = (-lp["obs"] + (dyn + rep) * jnp.maximum(1.0, kl)).mean()
        np.testing.assert_allclose(m["surrogate"], expected, rtol=1e-5)
        assert float(loss) == -float(m["elbo"])
    loss, m = rssm.sequential_elbo(latent, post, prior, lp, **rssm.PLANET_KL)
    np.testing.assert_allclose(
        m["surrogate"], (-lp["obs"] + 2 * jnp.maximum(3.0, kl)).mean(), rtol=1e-5
    )


def test_bad_terms_raise():
    latent, post, prior = gaussian_states(6)
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        rssm.sequential_elbo(latent, post, prior, {"obs": jnp.zeros((B, T, 2))})
    with pytest.raises(ValueError, match="not in log_probs"):
        rssm.sequential_elbo(latent, post, prior, {"obs": jnp.zeros((B, T))}, {"rew": 1.0})
    with pytest.raises(ValueError, match="KL has shape"):
        rssm.sequential_elbo(latent, post, prior, {"obs": jnp.zeros((B, T + 1))})


def test_loss_carries_the_published_surrogates_gradient():
    """DreamerV3's loss (2024): -log p + 1.0 max(1, KL(sg q || p)) + 0.1 max(1, KL(q || sg p)),
    written out here with distrax's KL; the loss's gradient is this one, its value -ELBO."""
    latent, post, prior = gaussian_states(11)
    lp = {"obs": -jax.random.uniform(jax.random.key(12), (B, T)) * 4}
    sg = jax.lax.stop_gradient

    def kl(q, p):
        return distrax.MultivariateNormalDiag(q["mean"], q["std"]).kl_divergence(
            distrax.MultivariateNormalDiag(p["mean"], p["std"])
        )

    def published(post, prior):
        dyn = kl(jax.tree.map(sg, post), prior)
        rep = kl(post, jax.tree.map(sg, prior))
        return (-lp["obs"] + jnp.maximum(1.0, dyn) + 0.1 * jnp.maximum(1.0, rep)).mean()

    def loss(post, prior):
        return rssm.sequential_elbo(latent, post, prior, lp, **rssm.DREAMERV3_KL)[0]

    g1 = jax.grad(loss, argnums=(0, 1))(post, prior)
    g2 = jax.grad(published, argnums=(0, 1))(post, prior)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(loss(post, prior), -elbo_of(lp, post, prior), rtol=1e-5)
