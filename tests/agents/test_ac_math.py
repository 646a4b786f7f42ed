"""Actor-critic mathematics: lambda-returns, weights, return normalization, losses, policies."""

import itertools
import math

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import ac_math as ac
from rssm.dists import TwoHotSymlogDist, symlog_bins

GAMMA = 0.997

# One imagined trajectory with H = 4 and a terminal at s_2 (c_2 = 0).
#   t        0     1     2     3     4
#   r_t            1.0   2.0   0.5  -1.0
#   c_t      1     1     0     1     1
#   v_t      0.5   1.5   3.0  -2.0   4.0
REWARDS = jnp.array([[1.0, 2.0, 0.5, -1.0]])  # r_1 .. r_4
CONTS = jnp.array([[1.0, 0.0, 1.0, 1.0]])  # c_1 .. c_4
VALUES = jnp.array([[0.5, 1.5, 3.0, -2.0, 4.0]])  # v_0 .. v_4


@pytest.mark.parametrize(
    ("lam", "expected"),
    [
        # R_4 = v_4 = 4
        # R_3 = -1 + .997 * (.05 * 4 + .95 * 4)          = -1 + 3.988             = 2.988
        # R_2 = .5 + .997 * (.05 * -2 + .95 * 2.988)     = .5 + .997 * 2.7386      = 3.2303842
        # R_1 = 2 + .997 * 0 * (...)                                              = 2.0
        # R_0 = 1 + .997 * (.05 * 1.5 + .95 * 2.0)       = 1 + .997 * 1.975        = 2.969075
        (0.95, [2.969075, 2.0, 3.2303842, 2.988]),
        # lambda = 0: R_t = r_{t+1} + gamma c_{t+1} v_{t+1}
        # R_0 = 1 + .997 * 1.5 = 2.4955; R_1 = 2; R_2 = .5 - .997 * 2 = -1.494; R_3 = 2.988
        (0.0, [2.4955, 2.0, -1.494, 2.988]),
        # lambda = 1: R_t = r_{t+1} + gamma c_{t+1} R_{t+1}, R_4 = v_4
        # R_3 = 2.988; R_2 = .5 + .997 * 2.988 = 3.479036; R_1 = 2; R_0 = 1 + .997 * 2 = 2.994
        (1.0, [2.994, 2.0, 3.479036, 2.988]),
    ],
)
def test_lambda_returns_hand_computed(lam, expected):
    rets = ac.lambda_returns(REWARDS, CONTS, VALUES, GAMMA, lam)
    assert rets.shape == (1, 4) and rets.dtype == jnp.float32
    np.testing.assert_allclose(rets[0], expected, rtol=1e-6, atol=1e-6)
    # Rows are independent: a second trajectory in the batch leaves the first unchanged.
    other = jax.random.normal(jax.random.key(1), (3, 1, 5))
    batch = ac.lambda_returns(
        jnp.concatenate([REWARDS, other[0, :, :4]]),
        jnp.concatenate([CONTS, jnp.ones((1, 4))]),
        jnp.concatenate([VALUES, other[1]]),
        GAMMA,
        lam,
    )
    np.testing.assert_allclose(batch[0], expected, rtol=1e-6, atol=1e-6)


def test_lambda_returns_gradient_stops_at_terminal():
    # dR_0/dr_1 = 1, dR_0/dr_2 = gamma lam c_1 (through R_1), nothing past the terminal c_2 = 0.
    grad = jax.grad(lambda r: ac.lambda_returns(r, CONTS, VALUES, GAMMA, 0.95)[0, 0])(REWARDS)
    np.testing.assert_allclose(grad[0], [1.0, GAMMA * 0.95, 0.0, 0.0], rtol=1e-6, atol=1e-7)
    grad = jax.grad(lambda r: ac.lambda_returns(r, jnp.ones((1, 4)), VALUES, GAMMA, 0.95)[0, 0])(
        REWARDS
    )
    gl = GAMMA * 0.95
    np.testing.assert_allclose(grad[0], [1.0, gl, gl**2, gl**3], rtol=1e-6)


def test_lambda_returns_rejects_misaligned_values():
    with pytest.raises(ValueError, match="H\\+1"):
        ac.lambda_returns(REWARDS, CONTS, VALUES[:, :4], GAMMA, 0.95)
    with pytest.raises(ValueError, match="lam"):
        ac.lambda_returns(REWARDS, CONTS, VALUES, GAMMA, 1.5)


def test_discount_weights_zero_after_terminal():
    conts = jnp.array(
        [
            [1.0, 1.0, 0.0, 1.0, 1.0],  # terminal at s_2
            [1.0, 1.0, 1.0, 1.0, 1.0],
            [0.0, 1.0, 1.0, 1.0, 1.0],  # terminal replay start
        ]
    )
    w = ac.discount_weights(conts)
    np.testing.assert_array_equal(w, [[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]])
    w = ac.discount_weights(conts, gamma=0.9)
    np.testing.assert_allclose(
        w, [[1, 0.9, 0, 0, 0], [1, 0.9, 0.81, 0.729, 0.6561], [0, 0, 0, 0, 0]], rtol=1e-6
    )
    # Equal to DreamerV3's cumprod(gamma c) / gamma.
    np.testing.assert_allclose(w, np.cumprod(0.9 * np.asarray(conts), 1) / 0.9, rtol=1e-6)
    grad = jax.grad(lambda c: ac.discount_weights(c, 0.9).sum())(conts)
    np.testing.assert_array_equal(grad, np.zeros_like(conts))


def test_returnnorm_percentiles_ema_and_clamp():
    x1 = np.asarray(jax.random.normal(jax.random.key(0), (8, 15))) * 3.0 + 1.0
    x2 = np.asarray(jax.random.normal(jax.random.key(1), (8, 15))) * 10.0
    state = ac.returnnorm_update(ac.returnnorm_init(), x1, decay=0.0)
    np.testing.assert_allclose(state.lo, np.percentile(x1, 5), rtol=1e-5)
    np.testing.assert_allclose(state.hi, np.percentile(x1, 95), rtol=1e-5)

    state = ac.returnnorm_init()
    for x in (x1, x2):
        state = jax.jit(ac.returnnorm_update)(state, x)
    lo = 0.99 * (0.01 * np.percentile(x1, 5)) + 0.01 * np.percentile(x2, 5)
    hi = 0.99 * (0.01 * np.percentile(x1, 95)) + 0.01 * np.percentile(x2, 95)
    np.testing.assert_allclose([state.lo, state.hi], [lo, hi], rtol=1e-5)
    # hi - lo is still far below 1 after two slow updates from zero: the scale is the limit.
    np.testing.assert_allclose(ac.returnnorm_scale(state), 1.0)

    state = ac.ReturnNorm(lo=jnp.float32(0.2), hi=jnp.float32(0.5))
    np.testing.assert_allclose(ac.returnnorm_scale(state), 1.0)
    np.testing.assert_allclose(ac.returnnorm_scale(state, limit=0.1), 0.3, rtol=1e-6)
    state = ac.ReturnNorm(lo=jnp.float32(-1.0), hi=jnp.float32(2.0))
    np.testing.assert_allclose(ac.returnnorm_scale(state), 3.0)
    with pytest.raises(ValueError, match="perc_lo"):
        ac.returnnorm_update(state, x1, perc_lo=95, perc_hi=5)


def _cat_probs(key, shape):
    return jax.nn.softmax(2.0 * jax.random.normal(key, shape), -1)


def test_uniform_prior_kl_is_constant_minus_entropy():
    beta = 0.3
    # Discrete: KL(pi || U_K) = log K - H(pi).
    probs = _cat_probs(jax.random.key(2), (3, 4, 5))
    pi = distrax.OneHotCategorical(probs=probs, dtype=jnp.float32)
    ent = -(probs * jnp.log(probs)).sum(-1)
    np.testing.assert_allclose(pi.entropy(), ent, rtol=1e-5)
    term = beta * ac.policy_prior_kl(pi, ac.UNIFORM)
    np.testing.assert_allclose(term, beta * (math.log(5) - ent), rtol=1e-5, atol=1e-6)
    assert float(term.min()) >= 0.0  # a proper KL

    # Continuous (bounded normal, A = 3): KL to the flat density 2^-A is A log 2 - H(pi).
    key_m, key_s = jax.random.split(jax.random.key(3))
    pi = ac.bounded_normal(
        jax.random.normal(key_m, (3, 4, 3)), 2.0 * jax.random.normal(key_s, (3, 4, 3))
    )
    std = pi.distribution.scale
    ent = (0.5 * jnp.log(2 * jnp.pi * jnp.e * std**2)).sum(-1)
    np.testing.assert_allclose(pi.entropy(), ent, rtol=1e-5)
    term = beta * ac.policy_prior_kl(pi, ac.UNIFORM)
    np.testing.assert_allclose(term, beta * (3 * math.log(2) - ent), rtol=1e-5, atol=1e-6)
    wide = ac.policy_prior_kl(pi, ac.UniformPrior(-2.0, 2.0))
    np.testing.assert_allclose(wide, 3 * math.log(4) - ent, rtol=1e-5, atol=1e-6)

    # The same term inside the actor loss: with zero advantages it is all that remains.
    weights = jnp.array([[1.0, 1.0, 0.0, 0.0]] * 3)
    zeros = jnp.zeros((3, 4))
    lo, hi = ac.ActorHead(3).entropy_range()  # 3 x H(N(0, 0.1)) .. 3 x H(N(0, 1))
    loss, metrics = ac.actor_loss(
        pi, pi.mode(), zeros, zeros, weights, 1.0, beta=beta, entropy_range=(lo, hi)
    )
    expected = (weights * beta * (3 * math.log(2) - ent)).mean()
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    np.testing.assert_allclose(metrics["policy_entropy"], ent.mean(), rtol=1e-5)
    # The KL to the improper flat density can be negative, so it is not logged as a KL; the
    # entropy and DreamerV3's normalized entropy are.
    assert "prior_kl" not in metrics and float((3 * math.log(2) - ent).min()) < 0
    np.testing.assert_allclose(lo, 3 * 0.5 * math.log(2 * math.pi * math.e * 0.01), rtol=1e-6)
    np.testing.assert_allclose(hi, 3 * 0.5 * math.log(2 * math.pi * math.e), rtol=1e-6)
    np.testing.assert_allclose(
        metrics["policy_randomness"], ((ent - lo) / (hi - lo)).mean(), rtol=1e-5
    )
    # A proper prior's KL is logged, and is never negative.
    prior = distrax.Independent(distrax.Normal(jnp.zeros((3, 4, 3)), 0.3 * jnp.ones((3, 4, 3))), 1)
    _, metrics = ac.actor_loss(pi, pi.mode(), zeros, zeros, weights, 1.0, prior=prior)
    assert float(metrics["prior_kl"]) >= 0.0


def test_nonuniform_prior_kl_closed_form():
    # Discrete: sum_k p_k log(p_k / q_k).
    probs = _cat_probs(jax.random.key(4), (6, 5))
    q = jnp.array([0.5, 0.2, 0.1, 0.1, 0.1])
    pi = distrax.OneHotCategorical(probs=probs, dtype=jnp.float32)
    kl = ac.policy_prior_kl(pi, distrax.OneHotCategorical(probs=q, dtype=jnp.float32))
    expected = (probs * (jnp.log(probs) - jnp.log(q))).sum(-1)
    np.testing.assert_allclose(kl, expected, rtol=1e-5, atol=1e-6)
    uniform = ac.policy_prior_kl(pi, ac.UNIFORM)
    assert float(jnp.abs(kl - uniform).max()) > 0.1

    # Continuous: Gaussian KL to a Normal(0.3, 0.5) behaviour prior, summed over A = 2.
    pi = ac.bounded_normal(jnp.array([[0.2, -1.0], [2.0, 0.5]]), jnp.array([[0.0, -3], [1, -1]]))
    prior = distrax.Independent(distrax.Normal(jnp.full(2, 0.3), jnp.full(2, 0.5)), 1)
    m, s = pi.distribution.loc, pi.distribution.scale
    expected = (jnp.log(0.5 / s) + (s**2 + (m - 0.3) ** 2) / (2 * 0.25) - 0.5).sum(-1)
    kl = ac.policy_prior_kl(pi, prior)
    assert kl.shape == (2,)
    np.testing.assert_allclose(kl, expected, rtol=1e-5)
    assert float(jnp.abs(kl - ac.policy_prior_kl(pi, ac.UNIFORM)).max()) > 0.1


def test_monte_carlo_prior_kl_without_closed_form():
    # Normal vs Laplace has no registered KL: the reparameterized estimate is used.
    m = jnp.array([[0.3, -0.7], [0.0, 0.9], [-0.2, 0.1]])
    s = jnp.array([[0.4, 0.8], [1.0, 0.2], [0.6, 0.3]])
    pi = distrax.Independent(distrax.Normal(m, s), 1)
    b = 0.7
    prior = distrax.Independent(distrax.Laplace(jnp.zeros(2), jnp.full(2, b)), 1)
    with pytest.raises(TypeError, match="key"):
        ac.policy_prior_kl(pi, prior)
    # Exact: -H(N) + log(2b) + E|a| / b with E|a| of a Normal(m, s).
    phi = 0.5 * (1 + jax.scipy.special.erf(m / s / math.sqrt(2)))
    abs_mean = s * math.sqrt(2 / math.pi) * jnp.exp(-(m**2) / (2 * s**2)) + m * (2 * phi - 1)
    exact = (-0.5 * jnp.log(2 * jnp.pi * jnp.e * s**2) + math.log(2 * b) + abs_mean / b).sum(-1)
    key = jax.random.key(5)
    est = ac.policy_prior_kl(pi, prior, key=key, num_samples=40000)
    np.testing.assert_allclose(est, exact, atol=0.03)
    np.testing.assert_array_equal(est, ac.policy_prior_kl(pi, prior, key=key, num_samples=40000))
    # Discrete policies have no reparameterized samples.
    cat = distrax.OneHotCategorical(probs=jnp.full((3,), 1 / 3), dtype=jnp.float32)
    with pytest.raises(TypeError, match="reparameterized"):
        ac.policy_prior_kl(cat, distrax.Independent(distrax.Laplace(jnp.zeros(3), 1.0), 1), key)


def test_reinforce_gradient_matches_analytic():
    batch, horizon, classes = 2, 3, 4
    beta, scale = 0.1, 2.0
    logits = jax.random.normal(jax.random.key(6), (batch, horizon, classes))
    actions = jax.nn.one_hot(jnp.array([[0, 3, 1], [2, 2, 0]]), classes)
    returns = jnp.array([[1.0, -2.0, 0.5], [3.0, 0.0, -1.0]])
    values = jnp.array([[0.5, 1.0, 0.5], [-1.0, 0.5, 2.0]])
    weights = jnp.array([[1.0, 0.9, 0.0], [1.0, 1.0, 1.0]])

    def loss_fn(z, rets, vals):
        pi = distrax.OneHotCategorical(logits=z, dtype=jnp.float32)
        return ac.actor_loss(pi, actions, rets, vals, weights, scale, beta=beta)[0]

    grads = jax.grad(loss_fn, argnums=(0, 1, 2))(logits, returns, values)
    p = jax.nn.softmax(logits, -1)
    logp = jnp.log(p)
    ent = -(p * logp).sum(-1, keepdims=True)
    adv = ((returns - values) / scale)[..., None]
    # d(-H)/dz = p (log p + H): the entropy part of the KL to the uniform prior.
    expected = (
        weights[..., None] / (batch * horizon) * (-adv * (actions - p) + beta * p * (logp + ent))
    )
    np.testing.assert_allclose(grads[0], expected, rtol=1e-5, atol=1e-7)
    assert float(jnp.abs(grads[0][0, 2]).max()) == 0.0  # zero weight, zero gradient
    # The advantage is a stopped target: no gradient into returns or values.
    np.testing.assert_array_equal(grads[1], 0.0)
    np.testing.assert_array_equal(grads[2], 0.0)


def test_dynamics_estimator_backprops_through_returns_and_values():
    batch, horizon = 2, 3
    pi = ac.bounded_normal(jnp.zeros((batch, horizon, 2)), jnp.zeros((batch, horizon, 2)))
    weights = jnp.array([[1.0, 0.5, 0.0], [1.0, 1.0, 1.0]])

    def loss_fn(rets, values):
        loss, _ = ac.actor_loss(
            pi, None, rets, values, weights, 4.0, estimator="dynamics", beta=0.0
        )
        return loss

    rets = jnp.arange(6.0).reshape(batch, horizon)
    values = jnp.ones((batch, horizon))
    # l = -mean(w (R - v) / S): the 2023 code differentiates the baseline v as well.
    expected = -(weights * (rets - values) / 4.0).mean()
    np.testing.assert_allclose(loss_fn(rets, values), expected, rtol=1e-6)
    g_ret, g_val = jax.grad(loss_fn, argnums=(0, 1))(rets, values)
    np.testing.assert_allclose(g_ret, -weights / (4.0 * batch * horizon))
    np.testing.assert_allclose(g_val, weights / (4.0 * batch * horizon))
    with pytest.raises(ValueError, match="estimator"):
        ac.actor_loss(pi, None, rets, values, weights, 1.0, estimator="a2c")
    values = jnp.ones((batch, horizon))
    with pytest.raises(ValueError, match="actions"):
        ac.actor_loss(pi, None, rets, values, weights, 1.0)
    with pytest.raises(ValueError, match="weights"):
        ac.actor_loss(pi, None, rets, values, jnp.ones((batch, horizon + 1)), 1.0)


def test_critic_loss_value_and_sgd_moves_value_to_return():
    bins = symlog_bins(255)
    returns = jnp.array([[3.0, -7.0], [0.5, 12.0]])
    weights = jnp.array([[1.0, 1.0], [1.0, 0.5]])
    logits = jnp.zeros((2, 2, 255))
    # Uniform logits: log p(x) = -log K for any target, so the loss is mean(w) (1 + slowreg) log K.
    loss, metrics = ac.critic_loss(TwoHotSymlogDist(logits, bins), returns, returns * 0, weights)
    np.testing.assert_allclose(loss, weights.mean() * 2 * math.log(255), rtol=1e-6)
    np.testing.assert_allclose(metrics["value_error"], jnp.abs(returns).mean(), atol=1e-5)

    def loss_fn(z, slow):
        return ac.critic_loss(TwoHotSymlogDist(z, bins), returns, slow, weights, slowreg=0.0)[0]

    step = jax.jit(lambda z: z - 20.0 * jax.grad(loss_fn)(z, jnp.zeros_like(returns)))
    errors = []
    for _ in range(40):
        errors.append(float(jnp.abs(TwoHotSymlogDist(logits, bins).mean() - returns).mean()))
        logits = step(logits)
    assert all(b < a for a, b in itertools.pairwise(errors)), errors
    assert errors[-1] < 0.1 * errors[0], errors
    # The slow-critic term pulls towards the slow mean, and only it (returns are stopped).
    z = jnp.zeros((2, 2, 255))
    g_ret, g_slow = jax.grad(
        lambda r, s: ac.critic_loss(TwoHotSymlogDist(z, bins), r, s, weights)[0], argnums=(0, 1)
    )(returns, returns)
    np.testing.assert_array_equal(g_ret, 0.0)
    np.testing.assert_array_equal(g_slow, 0.0)


def test_ema_update():
    slow = {"a": jnp.array([1.0, 2.0]), "b": jnp.float32(3.0)}
    fast = {"a": jnp.array([3.0, 6.0]), "b": jnp.float32(-1.0)}
    out = ac.ema_update(slow, fast, rate=0.25)
    np.testing.assert_allclose(out["a"], [1.5, 3.0])
    np.testing.assert_allclose(out["b"], 2.0)
    np.testing.assert_array_equal(ac.ema_update(slow, fast, 1.0)["a"], fast["a"])
    np.testing.assert_array_equal(ac.ema_update(slow, fast, 0.0)["a"], slow["a"])
    # Default rate 0.02 applied twice: s <- 0.98^2 s + (1 - 0.98^2) p for a fixed p.
    twice = ac.ema_update(ac.ema_update(slow, fast), fast)
    np.testing.assert_allclose(twice["b"], 0.98**2 * 3.0 + (1 - 0.98**2) * -1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="rate"):
        ac.ema_update(slow, fast, 1.5)
    with pytest.raises(ValueError, match="structure"):
        ac.ema_update(slow, {"a": fast["a"]})


def test_bounded_normal_and_unimix_categorical():
    pi = ac.bounded_normal(jnp.array([math.atanh(0.3), 50.0]), jnp.array([-2.0, -50.0]))
    np.testing.assert_allclose(pi.distribution.loc, [0.3, 1.0], rtol=1e-6)
    np.testing.assert_allclose(pi.distribution.scale, [0.9 * 0.5 + 0.1, 0.1], rtol=1e-5)
    np.testing.assert_allclose(ac.mode_action(pi), [0.3, 1.0], rtol=1e-6)

    logits = jnp.array([[10.0, 0.0, -10.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    cat = ac.unimix_categorical(logits, 0.01)
    expected = 0.99 * jax.nn.softmax(logits, -1) + 0.0025
    np.testing.assert_allclose(cat.probs, expected, rtol=1e-5)
    assert float(cat.probs.min()) >= 0.0025 * (1 - 1e-5)
    a = ac.sample_action(cat, jax.random.key(0))
    assert a.dtype == jnp.float32 and a.shape == (2, 4)
    np.testing.assert_array_equal(a.sum(-1), 1.0)
    np.testing.assert_array_equal(ac.mode_action(cat)[0], [1.0, 0.0, 0.0, 0.0])


@pytest.mark.parametrize("discrete", [False, True])
def test_actor_head(discrete):
    head = ac.ActorHead(action_dim=3, discrete=discrete, layers=1, units=16)
    feat = jax.random.normal(jax.random.key(0), (2, 5, 8))
    params = head.init(jax.random.key(1), feat)
    pi = head.apply(params, feat)
    assert tuple(pi.batch_shape) == (2, 5) and tuple(pi.event_shape) == (3,)
    key = jax.random.key(2)
    a = ac.sample_action(pi, key)
    assert a.shape == (2, 5, 3) and a.dtype == jnp.float32
    np.testing.assert_array_equal(a, ac.sample_action(pi, key))
    assert not np.array_equal(a, ac.sample_action(pi, jax.random.key(3)))
    mode = ac.mode_action(pi)
    if discrete:
        np.testing.assert_array_equal(a.sum(-1), 1.0)
        assert float(pi.probs.min()) >= 0.01 / 3 * (1 - 1e-5)
        np.testing.assert_array_equal(mode, jax.nn.one_hot(jnp.argmax(pi.probs, -1), 3))
    else:
        std = pi.distribution.scale
        assert float(std.min()) >= 0.1 and float(std.max()) <= 1.0
        assert float(jnp.abs(mode).max()) < 1.0
        np.testing.assert_array_equal(mode, pi.distribution.loc)


def test_replay_returns_hand_computed_with_last_and_terminal():
    # Steps 0-2 end a time-limited episode (is_last at 2); steps 3-4 end in a terminal (4);
    # step 5 begins the next episode. gamma 0.9, lambda 0.5, boot b_t = 10 (t + 1).
    rew = jnp.array([[0.5, 1.0, 2.0, 3.0, 4.0, 5.0]])
    last = jnp.array([[0, 0, 1, 0, 1, 0]], bool)
    term = jnp.array([[0, 0, 0, 0, 1, 0]], bool)
    boot = jnp.array([[10.0, 20.0, 30.0, 40.0, 50.0, 60.0]])
    rets = ac.replay_returns(rew, last, term, boot, 0.9, 0.5)
    # R_4 = r_5 + 0.9 (0.5 b_5 + 0.5 R_5), R_5 = b_5 = 60           -> 59 (crosses; weight 0)
    # R_3 = r_4 + 0.9 (1 - term_4) (...) = 4                        (the terminal cuts)
    # R_2 = r_3 + 0.9 (0.5 b_3 + 0.5 R_3) = 3 + 0.9 (20 + 2)        -> 22.8 (weight 0)
    # R_1 = r_2 + 0.9 (1 b_2 + 0 R_2) = 2 + 27                       (is_last: bootstrap only)
    # R_0 = r_1 + 0.9 (0.5 b_1 + 0.5 R_1) = 1 + 0.9 (10 + 14.5)      -> 23.05
    np.testing.assert_allclose(rets, [[23.05, 29.0, 22.8, 4.0, 59.0]], rtol=1e-6)
    # lambda = 0: one-step targets r_{t+1} + gamma (1 - term_{t+1}) b_{t+1}.
    one = ac.replay_returns(rew, last, term, boot, 0.9, 0.0)
    np.testing.assert_allclose(one, [[19.0, 29.0, 39.0, 4.0, 59.0]], rtol=1e-6)
    with pytest.raises(ValueError, match="boot"):
        ac.replay_returns(rew, last, term, boot[:, :-1], 0.9, 0.5)
    with pytest.raises(ValueError, match="gamma"):
        ac.replay_returns(rew, last, term, boot, 1.5, 0.5)
