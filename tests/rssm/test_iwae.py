"""The importance-weighted sequence bound: the linear-Gaussian model of ``rssm.vi`` at T = 1,
and a trained Gaussian RSSM on a linear-Gaussian state-space model whose exact likelihood a
Kalman filter computes."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rssm
from rssm import vi
from rssm.iwae import step_log_weights
from rssm.latent import CategoricalLatent, GaussianLatent


def test_one_step_reduces_to_the_linear_gaussian_iwae_bound():
    # p(z) = N(0, 1), p(x | z) = N(z, 1), q(z | x) = N(m, s^2): the RSSM's weights at T = 1 are
    # log p(x | z) + log p(z) - log q(z | x), those of rssm.vi.lg_iwae_bound.
    x = jnp.array([1.0, -0.5, 2.0])
    m, s = jnp.array([0.3, -0.25, 1.0]), jnp.array([1.0, 0.7, 0.5])
    key, k = jax.random.key(0), 64
    z = vi.reparam_sample(key, m, s, (1, k))[0]  # the draws lg_iwae_bound makes, [K, B]
    post = {"mean": jnp.broadcast_to(m, z.shape), "std": jnp.broadcast_to(s, z.shape), "stoch": z}
    prior = {"mean": jnp.zeros_like(z), "std": jnp.ones_like(z)}
    add_dims = lambda tree: jax.tree.map(lambda v: v[..., None, None], tree)  # T = 1, size 1
    loglik = jax.scipy.stats.norm.logpdf(x, z, 1.0)[..., None]
    terms = step_log_weights(GaussianLatent(1), add_dims(post), add_dims(prior), loglik)
    ours = vi.iwae_bound(terms.sum(-1), axis=0)
    np.testing.assert_allclose(ours, vi.lg_iwae_bound(key, x, m, s, k), rtol=1e-6)
    # ... and below the evidence, but much closer than the ELBO with K = 64 at the optimal q.
    mq, vq = vi.lg_posterior(x)
    zq = vi.reparam_sample(key, mq, jnp.sqrt(vq), (4096,))
    exact = step_log_weights(
        GaussianLatent(1),
        add_dims({"mean": mq + 0 * zq, "std": jnp.sqrt(vq) + 0 * zq, "stoch": zq}),
        add_dims(jax.tree.map(lambda v: v + 0 * zq, {"mean": 0.0, "std": 1.0})),
        jax.scipy.stats.norm.logpdf(x, zq, 1.0)[..., None],
    )
    # With the true posterior every weight is p(x): the bound is exact for any K.
    np.testing.assert_allclose(
        exact[..., 0], jnp.broadcast_to(vi.lg_log_evidence(x), zq.shape), rtol=1e-5
    )


def test_categorical_log_prob_of_one_hot_samples():
    latent = CategoricalLatent(3, 4, 0.01)
    stats = latent.stats(jax.random.normal(jax.random.key(1), (5, latent.param_size)))
    sample = latent.sample(stats, jax.random.key(2))
    expected = latent.dist(stats).log_prob(sample.reshape(5, 3, 4))
    np.testing.assert_allclose(latent.log_prob(stats, sample), expected, rtol=1e-6)
    assert (latent.log_prob(stats, sample) < 0).all()


# --- a linear-Gaussian state-space model with actions -------------------------------------------

A = np.array([[0.9, 0.3], [-0.3, 0.9]])
B = np.array([[0.6], [0.0]])
C = np.array([[1.0, 0.0], [0.5, 1.0]])
Q = 0.3**2 * np.eye(2)  # process noise
R = 0.4**2 * np.eye(2)  # observation noise
P0 = np.eye(2)  # z_1 ~ N(0, P0)
T = 12


def simulate(rng: np.random.Generator, n: int):
    """Sequences in the RSSM's convention: action[:, t] = a_{t-1} (zero at t = 0)."""
    act = rng.uniform(-1, 1, (n, T, 1))
    act[:, 0] = 0.0
    z = rng.multivariate_normal(np.zeros(2), P0, n)
    obs = np.zeros((n, T, 2))
    for t in range(T):
        if t:
            z = z @ A.T + act[:, t] @ B.T + rng.multivariate_normal(np.zeros(2), Q, n)
        obs[:, t] = z @ C.T + rng.multivariate_normal(np.zeros(2), R, n)
    return obs, act


def kalman_loglik(obs: np.ndarray, act: np.ndarray) -> np.ndarray:
    """Exact log p(o_{1:T} | a_{1:T}) per sequence (Kalman filter, float64)."""
    out = np.zeros(len(obs))
    for i in range(len(obs)):
        m, p = np.zeros(2), P0.copy()
        for t in range(T):
            if t:
                m, p = A @ m + B @ act[i, t], A @ p @ A.T + Q
            s = C @ p @ C.T + R
            innov = obs[i, t] - C @ m
            out[i] -= 0.5 * (
                innov @ np.linalg.solve(s, innov) + np.log(np.linalg.det(2 * np.pi * s))
            )
            gain = p @ C.T @ np.linalg.inv(s)
            m, p = m + gain @ innov, (np.eye(2) - gain @ C) @ p
    return out


def test_kalman_filter_matches_the_joint_gaussian():
    # The filter's likelihood equals the density of the stacked observations under their exact
    # joint Gaussian: z_t = A^t z_0 + sum_{1 <= j <= t} A^(t-j) (B a_{j-1} + w_j),
    # o_t = C z_t + v_t.
    obs, act = simulate(np.random.default_rng(0), 1)
    n = 2 * T
    trans, drift, w_cov = np.zeros((n, n)), np.zeros(n), np.zeros((n, n))
    for t in range(T):
        for j in range(t + 1):
            trans[2 * t : 2 * t + 2, 2 * j : 2 * j + 2] = np.linalg.matrix_power(A, t - j)
            if j:
                drift[2 * t : 2 * t + 2] += np.linalg.matrix_power(A, t - j) @ B @ act[0, j]
        w_cov[2 * t : 2 * t + 2, 2 * t : 2 * t + 2] = Q if t else P0
    big_c = np.kron(np.eye(T), C)
    cov = big_c @ trans @ w_cov @ trans.T @ big_c.T + np.kron(np.eye(T), R)
    diff = obs[0].reshape(-1) - big_c @ drift
    joint = -0.5 * (diff @ np.linalg.solve(cov, diff) + np.linalg.slogdet(2 * np.pi * cov)[1])
    np.testing.assert_allclose(kalman_loglik(obs, act)[0], joint, rtol=1e-9)


@pytest.fixture(scope="module")
def trained():
    """A Gaussian RSSM (PlaNet's structure, small) trained on the exact ELBO of SSM data."""
    model = rssm.planet(1, latent=GaussianLatent(4, 0.05), deter=32, hidden=32)
    head = rssm.Head(shape=(2,), dist="normal", std=0.4, layers=1, units=32)
    rng = np.random.default_rng(1)
    obs, act = simulate(rng, 4096)
    first = np.zeros((len(obs), T), bool)
    first[:, 0] = True
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    e, a, f = jnp.asarray(obs[:2], jnp.float32), jnp.asarray(act[:2], jnp.float32), first[:2]
    params = {
        "rssm": model.init(k1, e, a, f, k2, method=rssm.RSSM.observe),
        "dec": head.init(k3, jnp.zeros((1, model.deter + 4))),
    }

    def elbo(params, e, a, f, key):
        """The exact ELBO per sequence: free nats 0, beta_dyn = beta_rep = 1, [B]."""
        post, prior = model.apply(params["rssm"], e, a, f, key, method=rssm.RSSM.observe)
        loglik = head.apply(params["dec"], rssm.features(post)).log_prob(e)
        kl = model.latent.kl(
            {k: post[k] for k in ("mean", "std")}, {k: prior[k] for k in ("mean", "std")}
        )
        return (loglik - kl).sum(-1)

    opt = optax.adam(3e-3)

    @jax.jit
    def train(params, opt_state, key):
        def step(carry, i):
            params, opt_state = carry
            idx = jax.random.randint(jax.random.fold_in(key, i), (32,), 0, 3584)
            grads = jax.grad(
                lambda p: (
                    -elbo(
                        p, data[0][idx], data[1][idx], data[2][idx], jax.random.fold_in(key, -i)
                    ).mean()
                )
            )(params)
            updates, opt_state = opt.update(grads, opt_state)
            return (optax.apply_updates(params, updates), opt_state), None

        return jax.lax.scan(step, (params, opt_state), jnp.arange(1500))[0]

    data = (jnp.asarray(obs, jnp.float32), jnp.asarray(act, jnp.float32), jnp.asarray(first))
    held = tuple(x[3584:3712] for x in data)
    before = elbo(params, *held, jax.random.key(7)).mean()
    params, _ = train(params, opt.init(params), jax.random.key(3))
    return model, head, params, elbo, held, (obs[3584:3712], act[3584:3712]), before


def test_elbo_below_iwae_below_the_exact_likelihood(trained):
    model, head, params, elbo, held, (obs, act), before = trained
    exact = kalman_loglik(obs, act)  # [N]
    e, a, f = held
    loglik = lambda feat: head.apply(params["dec"], feat).log_prob(e)
    iwae = jax.jit(
        lambda key, k: rssm.sequence_iwae(model, params["rssm"], loglik, e, a, f, key, k),
        static_argnums=1,
    )
    lower = np.asarray(elbo(params, e, a, f, jax.random.key(11)))
    iw10, iw100 = (
        np.asarray(iwae(jax.random.key(12), 10)),
        np.asarray(iwae(jax.random.key(13), 100)),
    )

    def above(hi, lo):
        """mean(hi - lo) over the held-out sequences, and 3 standard errors of it."""
        d = hi - lo
        return d.mean(), 3 * d.std(ddof=1) / np.sqrt(len(d))

    assert lower.mean() > before + 5.0  # training raised the held-out ELBO
    for hi, lo in ((iw10, lower), (iw100, iw10), (exact, iw100)):
        diff, err = above(hi, lo)
        assert diff > -err, (diff, err)
    # The bounds are not trivially loose: IWAE_100 is within a few nats of log p(o | a), and
    # the gap IWAE_100 - ELBO (a lower estimate of KL(q || p(s | o))) is clearly positive.
    gap, err = above(iw100, lower)
    assert gap > err and gap > 0.05
    assert (exact - iw100).mean() < 3.0
