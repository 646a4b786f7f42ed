"""PlaNet: the CEM planner on problems with known optima, world-model scoring, and the agent."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.planet import PlanetAgent, PlanetConfig, cem_plan, plan, rssm_returns
from agents.wm_config import WorldModelConfig
from agents.world_model import WorldModel

H, A = 12, 1  # PlaNet's horizon; one action dimension for the toy problems

TINY = dict(deter=16, hidden=16, blocks=2, units=16, layers=1, reward_bins=31)
LATENTS = {
    "categorical": WorldModelConfig(groups=4, classes=4, **TINY),
    "gaussian": WorldModelConfig(latent="gaussian", stoch=4, norm="layer", act="elu", **TINY),
}
TINY_PLAN = PlanetConfig(horizon=4, candidates=64, top_k=8, iterations=3)
OBS_SHAPES = (("vector", (3,)),)
ACTION_DIM = 2


def linear_latent_score(c: float):
    """z_0 = 0, z_{t+1} = z_t + sum_a a_t; score = -|z_H - c|: best iff sum of actions = c."""

    def score(seqs):
        def step(z, a):
            return z + a.sum(-1), None

        z, _ = jax.lax.scan(step, jnp.zeros(seqs.shape[0]), jnp.swapaxes(seqs, 0, 1))
        return -jnp.abs(z - c)

    return score


def run_cem(score, key, shape=(H, A), **kw):
    fn = jax.jit(lambda k: cem_plan(score, jnp.zeros(shape), jnp.ones(shape), k, **kw))
    return fn(key)


@jax.jit
def solve_sum(c, key):
    """CEM at PlaNet's settings on the linear-latent problem; one compile serves every c."""
    return cem_plan(linear_latent_score(c), jnp.zeros((H, A)), jnp.ones((H, A)), key)


# --- CEM on toy problems -------------------------------------------------------------------------


@pytest.mark.parametrize("c", [-3.0, 0.5, 5.0])
def test_cem_finds_a_sequence_with_the_target_sum(c):
    mean, info = solve_sum(c, jax.random.key(0))
    assert mean.shape == (H, A) and mean.dtype == jnp.float32
    # Measured: |sum - c| <= 0.013 over 5 seeds for each c; tolerance 0.05.
    assert abs(float(mean.sum()) - c) < 0.05
    assert np.all(np.abs(np.asarray(mean)) <= 1.0)
    # The belief contracts onto good sequences: the elite's mean score rises.
    assert info["best_score"].shape == info["elite_score"].shape == (10,)
    assert info["elite_score"][-1] > info["elite_score"][0]


def test_cem_recovers_the_unique_optimum_of_a_quadratic():
    target = jax.random.uniform(jax.random.key(9), (H, 2), minval=-0.8, maxval=0.8)
    score = lambda s: -((s - target) ** 2).sum((1, 2))
    mean, info = run_cem(score, jax.random.key(1), shape=(H, 2))
    # Measured: max error 0.013-0.016 over 5 seeds; tolerance 0.05.
    np.testing.assert_allclose(mean, target, atol=0.05)
    assert float(info["std"].max()) < 0.2  # the belief has contracted around the optimum


def test_cem_saturates_at_the_bound_when_the_target_is_unreachable():
    mean, _ = solve_sum(20.0, jax.random.key(2))  # H * A = 12 < 20
    assert np.all(np.asarray(mean) <= 1.0)
    # Measured: min action 0.978; the mean of clipped samples approaches +1 from below.
    assert np.all(np.asarray(mean) > 0.95)


def test_cem_respects_custom_bounds():
    mean, _ = run_cem(linear_latent_score(-20.0), jax.random.key(3), action_low=-0.5)
    assert np.all(np.asarray(mean) >= -0.5)
    assert np.all(np.asarray(mean) < -0.45)


def test_cem_is_deterministic_in_its_key():
    a, info_a = solve_sum(0.5, jax.random.key(4))
    b, info_b = solve_sum(0.5, jax.random.key(4))
    c, _ = solve_sum(0.5, jax.random.key(5))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(info_a["std"], info_b["std"])
    # Many sequences sum to 0.5, so another key settles on another one.
    assert np.abs(np.asarray(a) - np.asarray(c)).max() > 0.05


def test_cem_keyed_score_gets_a_fresh_key_each_iteration():
    keys = []

    def score(seqs, key):
        keys.append(np.asarray(jax.random.key_data(key)))
        return -jnp.abs(seqs.sum((1, 2)))

    # Without jit the scan runs its body once per iteration on concrete keys.
    with jax.disable_jit():
        z = jnp.zeros((2, 1))
        cem_plan(
            score, z, z + 1, jax.random.key(0), iterations=3, candidates=16, top_k=4, keyed=True
        )
    assert len(keys) == 3
    assert len({k.tobytes() for k in keys}) == 3


def test_cem_rejects_bad_arguments():
    z = jnp.zeros((H, A))
    with pytest.raises(ValueError, match="top_k"):
        cem_plan(linear_latent_score(0.0), z, z + 1, jax.random.key(0), candidates=10, top_k=11)
    with pytest.raises(ValueError, match=r"\[H, A\]"):
        cem_plan(linear_latent_score(0.0), z[0], z[0] + 1, jax.random.key(0))
    with pytest.raises(ValueError, match="score_fn returned shape"):
        cem_plan(lambda s: s.sum(), z, z + 1, jax.random.key(0), candidates=10, top_k=2)


def test_planet_config_validation():
    PlanetConfig().validate()
    with pytest.raises(ValueError, match="top_k"):
        PlanetConfig(candidates=10, top_k=20).validate()
    with pytest.raises(ValueError, match="horizon"):
        PlanetConfig(horizon=0).validate()
    with pytest.raises(ValueError, match="explore_noise"):
        PlanetConfig(explore_noise=-0.1).validate()


# --- scoring by the world model and the agent ---------------------------------------------------


@functools.cache
def make_trained(latent: str):
    """(agent, state after one update, its metrics) for a latent family, built once."""
    agent = PlanetAgent(LATENTS[latent], TINY_PLAN, OBS_SHAPES, ACTION_DIM)
    state = agent.init(jax.random.key(0))  # one compile beats op-by-op on CPU
    batch = agent.dummy_batch(2, 4)
    batch["vector"] = jax.random.normal(jax.random.key(1), (2, 4, 3))
    batch["reward"] = jax.random.normal(jax.random.key(2), (2, 4))
    state, metrics, context = agent.train(state, batch)
    # The world model starts each sequence from the stored context and returns the refreshed
    # per-step states for replay.
    assert set(batch["context"]) == set(context) == {"deter", "stoch"}
    assert context["deter"].shape == (2, 4, 16)
    return agent, state, metrics


@pytest.fixture(scope="module", params=sorted(LATENTS))
def trained(request):
    return make_trained(request.param)


@pytest.fixture(scope="module")
def trained_categorical():
    # Plumbing that does not depend on the latent family is checked on one family only; the
    # planner meets the family only through img_step, which the policy tests run for both.
    return make_trained("categorical")


def test_train_step_is_finite_and_counts(trained):
    _, state, metrics = trained
    assert int(state.updates) == 1
    assert np.isfinite(float(metrics["wm/loss"]))
    assert all(np.all(np.isfinite(np.asarray(v))) for v in metrics.values())


def test_rssm_returns_sums_rewards_of_the_prior_rollout(trained_categorical):
    agent, state, _ = trained_categorical
    wm, params = agent.wm, state.params["wm"]
    # The reward head's output layer starts at zero; randomize it so returns are O(1).
    out = params["params"]["reward"]["Dense_0"]
    kernel = 0.1 * jax.random.normal(jax.random.key(10), out["kernel"].shape)
    params = {"params": {**params["params"], "reward": {**params["params"]["reward"]}}}
    params["params"]["reward"]["Dense_0"] = dict(out, kernel=kernel)
    start = wm.apply(params, 1, method=WorldModel.initial_state)
    seqs = jax.random.uniform(jax.random.key(3), (5, 3, ACTION_DIM), minval=-1, maxval=1)
    key = jax.random.key(4)
    score = jax.jit(lambda s, a, k: rssm_returns(wm, params, s, a, k))
    got = score(start, seqs, key)
    assert got.shape == (5,) and got.dtype == jnp.float32

    @jax.jit
    def reference(start, seqs, key):
        # A Python loop of img_step from the repeated start state, reward of each arrival.
        s = jax.tree.map(lambda x: jnp.repeat(x, 5, 0), start)
        total = jnp.zeros(5)
        for t, k in enumerate(jax.random.split(key, 3)):
            s = wm.apply(params, s, seqs[:, t], k, method=WorldModel.img_step)
            feat = jnp.concatenate([s["deter"], s["stoch"]], -1)
            total = total + wm.apply(params, feat, method=WorldModel.heads)[0].mean()
        return total

    want = reference(start, seqs, key)
    assert np.abs(np.asarray(want)).max() > 0.1
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # An unbatched start state is the same state.
    single = jax.tree.map(lambda x: x[0], start)
    np.testing.assert_allclose(score(single, seqs, key), got, rtol=1e-5)
    with pytest.raises(ValueError, match="batch of 2"):
        rssm_returns(wm, params, jax.tree.map(lambda x: jnp.repeat(x, 2, 0), start), seqs, key)


def test_plan_runs_one_cem_per_environment(trained_categorical):
    agent, state, _ = trained_categorical
    wm, params = agent.wm, state.params["wm"]
    base = wm.apply(params, 2, method=WorldModel.initial_state)
    # Two different start states: perturb the second environment's deterministic state.
    states = dict(base, deter=base["deter"].at[1].set(jnp.tanh(base["deter"][1] + 0.5)))
    key = jax.random.key(5)
    actions = jax.jit(lambda s, k: plan(wm, params, s, k, TINY_PLAN))(states, key)
    assert actions.shape == (2, ACTION_DIM)
    assert np.all(np.abs(np.asarray(actions)) <= 1.0)
    shape = (TINY_PLAN.horizon, ACTION_DIM)

    @jax.jit
    def single_env(one, k):
        mean, _ = cem_plan(
            lambda a, ks: rssm_returns(wm, params, one, a, ks),
            jnp.zeros(shape),
            jnp.ones(shape),
            k,
            TINY_PLAN.iterations,
            TINY_PLAN.candidates,
            TINY_PLAN.top_k,
            keyed=True,
        )
        return mean[0]

    for i, k in enumerate(jax.random.split(key, 2)):
        one = jax.tree.map(lambda x, i=i: x[i], states)
        np.testing.assert_allclose(actions[i], single_env(one, k), rtol=1e-5, atol=1e-6)
    assert not np.allclose(actions[0], actions[1])


def test_policy_acts_in_bounds_and_carries_the_posterior(trained):
    agent, state, _ = trained
    wm_cfg = agent.wm_cfg
    n = 2
    carry = agent.init_carry(n)
    assert carry["state"]["deter"].shape == (n, wm_cfg.deter)
    assert carry["action"].shape == (n, ACTION_DIM)
    obs = {
        "vector": jax.random.normal(jax.random.key(6), (n, 3)),
        "is_first": jnp.ones(n, bool),
    }
    key = jax.random.key(7)
    act, new = agent.policy(state, carry, obs, key, "eval")
    act_again, _ = agent.policy(state, carry, obs, key, "eval")
    noisy, new_noisy = agent.policy(state, carry, obs, key, "explore")
    for a in (act, noisy):
        assert a.shape == (n, ACTION_DIM) and a.dtype == jnp.float32
        assert np.all(np.abs(np.asarray(a)) <= 1.0)
    np.testing.assert_array_equal(act, act_again)
    # The carry holds the posterior after o_t and the action actually taken, in every mode.
    k_obs, _, k_noise = jax.random.split(key, 3)
    post = jax.jit(functools.partial(agent.wm.apply, method=WorldModel.obs_step))(
        state.params["wm"], carry["state"], carry["action"], obs, k_obs
    )
    for c, a in ((new, act), (new_noisy, noisy)):
        assert c["state"]["deter"].shape == (n, wm_cfg.deter)
        for name in post:
            np.testing.assert_allclose(c["state"][name], post[name], rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(c["action"], a)
    # Exploration: the same plan plus N(0, 0.3^2) noise, clipped.
    want = jnp.clip(act + 0.3 * jax.random.normal(k_noise, act.shape), -1.0, 1.0)
    np.testing.assert_allclose(noisy, want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(noisy, act)
    # A second step continues from the carried state.
    obs2 = dict(obs, is_first=jnp.zeros(n, bool))
    act2, new2 = agent.policy(state, new, obs2, jax.random.key(8), "eval")
    assert act2.shape == (n, ACTION_DIM)
    assert not np.allclose(new2["state"]["deter"], new["state"]["deter"])


def _ks_uniform(values: np.ndarray) -> float:
    """Kolmogorov-Smirnov distance sup_x |F_n(x) - (x + 1) / 2| of a sample to U[-1, 1]."""
    u = (np.sort(values.astype(np.float64)) + 1.0) / 2.0  # the U[0, 1] CDF at each value
    n = u.size
    return float(max((np.arange(1, n + 1) / n - u).max(), (u - np.arange(n) / n).max()))


def test_random_mode_acts_uniformly_and_still_filters(trained_categorical):
    """Prefill actions are i.i.d. U[-1, 1]: moments, a KS distance per dimension, a joint
    histogram and independence across keys, from 4096 environments x 2 dimensions per call."""
    agent, state, _ = trained_categorical
    n = 4096
    carry = agent.init_carry(n)
    obs = {"vector": jax.random.normal(jax.random.key(6), (n, 3)), "is_first": jnp.ones(n, bool)}
    key = jax.random.key(7)
    rand, new = agent.policy(state, carry, obs, key, "random")
    other, _ = agent.policy(state, carry, obs, jax.random.key(8), "random")  # same program
    rand, other = np.asarray(rand), np.asarray(other)
    assert rand.shape == (n, ACTION_DIM) and rand.dtype == np.float32
    assert np.all(np.abs(rand) <= 1.0)
    # U[-1, 1] has mean 0 and variance 1/3; over n draws the sample mean has standard error
    # sqrt(1/3 / n) = 0.009, and the sample variance sqrt((E[a^4] - 1/9) / n) = sqrt(4/45 / n)
    # = 0.0047 (E[a^4] = 1/5). Tolerances are 4 of them.
    np.testing.assert_allclose(rand.mean(0), 0.0, atol=4 * math.sqrt(1 / 3 / n))
    np.testing.assert_allclose(rand.var(0), 1 / 3, atol=4 * math.sqrt(4 / 45 / n))
    # KS distance per dimension: P(D_n > eps) <= 2 exp(-2 n eps^2) (Dvoretzky-Kiefer-Wolfowitz),
    # so eps = sqrt(log(2 / 0.001) / 2n) = 0.030 is exceeded with probability below 0.001.
    ks_bound = math.sqrt(math.log(2 / 0.001) / (2 * n))
    for d in range(ACTION_DIM):
        assert _ks_uniform(rand[:, d]) < ks_bound, (d, _ks_uniform(rand[:, d]), ks_bound)
    # Joint uniformity (hence no dependence between the dimensions): an 8 x 8 histogram of the
    # pairs, 64 expected per cell; chi-square with 63 degrees of freedom, whose 0.999 quantile is
    # 103.4 (scipy.stats.chi2.ppf(0.999, 63)).
    counts, _, _ = np.histogram2d(rand[:, 0], rand[:, 1], bins=8, range=[[-1, 1], [-1, 1]])
    expected = n / 64
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert counts.sum() == n and chi2 < 103.4, chi2
    # Another key, other actions, uncorrelated with the first (|r| < 4 / sqrt(n) = 0.06).
    assert np.mean(rand == other) < 0.01
    for d in range(ACTION_DIM):
        assert abs(np.corrcoef(rand[:, d], other[:, d])[0, 1]) < 4 / math.sqrt(n)
    # The action is carried, and the posterior still advances on o_t.
    np.testing.assert_array_equal(new["action"], rand)
    k_obs = jax.random.split(key, 3)[0]
    post = jax.jit(functools.partial(agent.wm.apply, method=WorldModel.obs_step))(
        state.params["wm"], carry["state"], carry["action"], obs, k_obs
    )
    np.testing.assert_allclose(new["state"]["deter"], post["deter"], rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="mode"):
        agent.policy(state, carry, obs, key, "greedy")


def test_openloop_predicts_every_step(trained_categorical):
    agent, state, _ = trained_categorical
    batch = agent.dummy_batch(1, 7)
    out = agent.openloop(state, batch, jax.random.key(9))
    assert out["vector"].shape == (1, 7, 3)
    assert np.all(np.isfinite(np.asarray(out["vector"])))
