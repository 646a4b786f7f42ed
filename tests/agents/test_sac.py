"""SAC: the entropy bonus is a KL to the uniform action prior, and the update learns."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.sac import SAC, SacConfig, squashed_normal

N = 200_000


@pytest.mark.parametrize("mean,std", [(0.0, 0.8), (0.7, 0.3), (-1.5, 1.2), (0.2, 0.05)])
def test_kl_to_the_uniform_prior_is_a_log_2_minus_entropy(mean, std):
    # One action dimension. Monte Carlo: KL(pi || U[-1, 1]) = E_pi[log pi(a)] + log 2.
    agent = SAC(SacConfig(), (("vector", (3,)),), 1)
    pi = squashed_normal(jnp.full((N, 1), mean), jnp.full((N, 1), std))
    _, log_pi, ratio = agent.prior_log_ratio(pi, jax.random.key(0))
    np.testing.assert_allclose(ratio, log_pi + math.log(2.0), rtol=1e-6)
    # Quadrature, independent of distrax: H(tanh(u)) = H(N(m, s)) + E[log(1 - tanh(u)^2)].
    u = np.linspace(mean - 12 * std, mean + 12 * std, 400_001)
    density = np.exp(-0.5 * ((u - mean) / std) ** 2) / (std * np.sqrt(2 * np.pi))
    log_jac = np.log(4.0) - 2 * np.logaddexp(u, -u)  # log(1 - tanh(u)^2), stably
    entropy = 0.5 * np.log(2 * np.pi * np.e * std**2) + np.trapezoid(density * log_jac, u)
    estimate, err = float(ratio.mean()), 3 * float(ratio.std()) / math.sqrt(N)
    assert abs(estimate - (math.log(2.0) - entropy)) < err + 1e-4
    assert math.log(2.0) - entropy >= 0.0 and estimate > -err  # a KL: never negative


def test_prior_is_pluggable():
    # The tanh-Normal prior: a policy equal to it has a zero log-ratio in every sample.
    cfg = SacConfig(prior="tanh_normal", prior_std=0.4)
    agent = SAC(cfg, (("vector", (3,)),), 2)
    pi = squashed_normal(jnp.zeros((1000, 2)), jnp.full((1000, 2), 0.4))
    _, _, ratio = agent.prior_log_ratio(pi, jax.random.key(1))
    np.testing.assert_allclose(ratio, 0.0, atol=1e-4)
    with pytest.raises(ValueError, match=r"sac\.prior='beta'"):
        SAC(dataclasses.replace(cfg, prior="beta"), (("vector", (3,)),), 2)
    with pytest.raises(ValueError, match="--obs proprio"):
        SAC(cfg, (("image", (64, 64, 3)),), 2)


def test_update_finds_the_best_action_of_a_bandit():
    # One state, terminal transitions, reward -4 (a - 0.5)^2: the greedy action goes to 0.5.
    agent = SAC(SacConfig(units=32, lr=3e-3), (("vector", (2,)),), 1)
    state = agent.init(jax.random.key(2))
    rng = np.random.default_rng(0)
    b = 256
    act = rng.uniform(-1, 1, (b, 2, 1)).astype(np.float32)
    batch = {
        "vector": jnp.ones((b, 2, 2)),
        "action": jnp.asarray(act),
        "reward": jnp.asarray(-4 * (act[..., 0] - 0.5) ** 2),
        "is_first": jnp.zeros((b, 2), bool),
        "is_terminal": jnp.ones((b, 2), bool),
    }
    for _ in range(400):
        state, metrics, _ = agent.train(state, batch)
    obs = {"vector": jnp.ones((1, 2)), "is_first": jnp.zeros((1,), bool)}
    greedy, _ = agent.policy(state, agent.init_carry(1), obs, jax.random.key(3), "eval")
    assert abs(float(greedy[0, 0]) - 0.5) < 0.1, greedy
    assert np.isfinite(float(metrics["sac/critic_loss"])) and float(metrics["sac/alpha"]) > 0
