"""The RSSM learns a known linear-Gaussian state-space model with actions.

Data: z_{t+1} = A z_t + B a_t + w_t, o_t = C z_t + v_t, with Gaussian noise. An encoder, the RSSM
and a unit-variance Gaussian decoder are fitted by maximizing the plain sequential ELBO
(beta_dyn = beta_rep = 1, whose gradient is the ELBO's; no free nats), and the ELBO on
held-out sequences must rise.
"""

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

import rssm
from rssm import RSSM, CategoricalLatent, GaussianLatent

Z, OBS, A = 3, 8, 2
B, T = 16, 24
STEPS = 250
# Per-step held-out ELBO must rise by at least this many nats. Measured: -24.7 -> -10.5
# (Gaussian) and -22.6 -> -10.4 (categorical); the unreachable ceiling is -7.35.
MARGIN = 6.0


def ssm_params(seed: int = 0):
    rng = np.random.default_rng(seed)
    theta = 0.3
    rot = np.array(
        [[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1.0]]
    )
    a_mat = 0.95 * rot
    b_mat = rng.normal(size=(Z, A)) * 0.5
    c_mat = rng.normal(size=(OBS, Z)) * 1.5
    return a_mat, b_mat, c_mat


def sample_sequences(seed: int, n: int):
    a_mat, b_mat, c_mat = ssm_params()
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, Z))
    obs, acts = [], []
    prev_a = np.zeros((n, A))
    for _ in range(T):
        obs.append(z @ c_mat.T + 0.1 * rng.normal(size=(n, OBS)))
        acts.append(prev_a)  # a_{t-1}, the action that led to o_t
        a = rng.uniform(-1, 1, size=(n, A))
        z = z @ a_mat.T + a @ b_mat.T + 0.1 * rng.normal(size=(n, Z))
        prev_a = a
    obs = np.stack(obs, 1).astype(np.float32)
    acts = np.stack(acts, 1).astype(np.float32)
    is_first = np.zeros((n, T), bool)
    is_first[:, 0] = True
    return obs, acts, is_first


class SeqModel(nn.Module):
    latent: rssm.Latent

    def setup(self):
        self.enc = rssm.MLP(layers=1, units=32)
        self.rssm = RSSM(latent=self.latent, action_dim=A, deter=32, hidden=32, blocks=1)
        self.dec = rssm.Head(shape=(OBS,), dist="normal", std=1.0, layers=1, units=32)

    def __call__(self, obs, act, first, key):
        post, prior = self.rssm.observe(self.enc(obs), act, first, key)
        loglik = self.dec(rssm.features(post)).log_prob(obs)
        return rssm.sequential_elbo(
            self.latent, post, prior, {"obs": loglik}, free_nats=0.0, beta_dyn=1.0, beta_rep=1.0
        )


@pytest.mark.parametrize(
    "latent",
    [GaussianLatent(4, 0.1), CategoricalLatent(4, 4, 0.01)],
    ids=["gaussian", "categorical"],
)
def test_rssm_learns_linear_gaussian_ssm(latent):
    model = SeqModel(latent)
    train = sample_sequences(1, 512)
    test = sample_sequences(2, 64)
    key = jax.random.key(0)
    params = model.init(key, *[x[:B] for x in train], key)
    opt = optax.adam(3e-3)
    opt_state = opt.init(params)

    @jax.jit
    def update(params, opt_state, batch, key):
        (_loss, metrics), grads = jax.value_and_grad(model.apply, has_aux=True)(params, *batch, key)
        updates, opt_state = opt.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, metrics

    @jax.jit
    def held_out_elbo(params, key):
        return model.apply(params, *test, key)[1]["elbo"]

    before = float(held_out_elbo(params, jax.random.key(1)))
    rng = np.random.default_rng(0)
    for i in range(STEPS):
        idx = rng.integers(0, train[0].shape[0], B)
        params, opt_state, metrics = update(
            params, opt_state, tuple(x[idx] for x in train), jax.random.fold_in(key, i)
        )
        assert np.isfinite(float(metrics["elbo"]))
    after = float(held_out_elbo(params, jax.random.key(1)))
    print(f"{type(latent).__name__}: held-out ELBO per step {before:.2f} -> {after:.2f}")
    assert after > before + MARGIN, (before, after)
    # The ELBO is a lower bound on log p(o): the decoder's Gaussian has unit variance, so the
    # per-step ELBO cannot exceed the best achievable -0.5 * OBS * log(2 pi) (zero error, no KL).
    assert after < -0.5 * OBS * np.log(2 * np.pi)
