"""RSSM behaviour beyond shapes: scan = loop, exact resets, straight-through, gradient routing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rssm
from rssm import RSSM, CategoricalLatent, GaussianLatent

B, T, E, A = 3, 6, 5, 2

LATENTS = {
    "gaussian": GaussianLatent(4, 0.1),
    "categorical": CategoricalLatent(3, 4, 0.01),
}


def make(kind: str) -> RSSM:
    return RSSM(latent=LATENTS[kind], action_dim=A, deter=16, hidden=8, blocks=2)


def data(seed: int = 0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    embed = jax.random.normal(k1, (B, T, E))
    action = jax.random.uniform(k2, (B, T, A), minval=-1, maxval=1)
    is_first = jnp.zeros((B, T), bool).at[:, 0].set(True)
    return embed, action, is_first


@pytest.fixture(scope="module", params=list(LATENTS))
def setup(request):
    model = make(request.param)
    embed, action, is_first = data()
    params = model.init(
        jax.random.key(1), embed, action, is_first, jax.random.key(2), method=RSSM.observe
    )
    observe = jax.jit(lambda p, e, a, f, k: model.apply(p, e, a, f, k, method=RSSM.observe))
    step = jax.jit(lambda p, s, a, e, f, k: model.apply(p, s, a, e, f, k, method=RSSM.obs_step))
    return model, params, observe, step


def loop(model, params, step, embed, action, is_first, keys, state=None):
    """Python loop of single posterior steps: the reference for the scan."""
    if state is None:
        state = model.apply(params, embed.shape[0], method=RSSM.initial_state)
    posts = []
    for t in range(embed.shape[1]):
        state, _ = step(params, state, action[:, t], embed[:, t], is_first[:, t], keys[t])
        posts.append(state)
    return jax.tree.map(lambda *xs: jnp.stack(xs, 1), *posts)


def test_shapes_and_dtypes(setup):
    model, params, observe, _ = setup
    post, prior = observe(params, *data(), jax.random.key(3))
    s = model.latent.flat_size
    assert post["deter"].shape == (B, T, 16) and post["stoch"].shape == (B, T, s)
    assert prior["stoch"].shape == (B, T, s)
    for leaf in jax.tree.leaves((post, prior)):
        assert leaf.dtype == jnp.float32


def test_observe_scan_equals_python_loop(setup):
    model, params, observe, step = setup
    embed, action, is_first = data(1)
    key = jax.random.key(4)
    post, _ = observe(params, embed, action, is_first, key)
    ref = loop(model, params, step, embed, action, is_first, jax.random.split(key, T))
    for name in post:
        np.testing.assert_allclose(post[name], ref[name], rtol=1e-5, atol=1e-5, err_msg=name)


def test_is_first_resets_exactly(setup):
    model, params, _, step = setup
    embed, action, is_first = data(2)
    k = 3  # an episode starts at t = 3 in the middle of the sequence
    is_first = is_first.at[:, k].set(True)
    keys = jax.random.split(jax.random.key(5), T)
    full = loop(model, params, step, embed, action, is_first, keys)
    fresh = loop(model, params, step, embed[:, k:], action[:, k:], is_first[:, k:], keys[k:])
    for name in full:
        np.testing.assert_allclose(full[name][:, k:], fresh[name], rtol=1e-5, atol=1e-6)
    # The state carried in before a reset is irrelevant: garbage in, same result out.
    garbage = jax.tree.map(lambda x: x + 7.0, full)
    garbage = jax.tree.map(lambda x: x[:, k - 1], garbage)
    after = loop(
        model, params, step, embed[:, k:], action[:, k:], is_first[:, k:], keys[k:], state=garbage
    )
    for name in full:
        np.testing.assert_allclose(after[name], fresh[name], rtol=1e-5, atol=1e-6)
    # ... and without the reset flag the past does matter (the test above could not pass by luck).
    no_reset = loop(
        model,
        params,
        step,
        embed[:, k:],
        action[:, k:],
        jnp.zeros_like(is_first[:, k:]),
        keys[k:],
        state=garbage,
    )
    assert not np.allclose(no_reset["deter"], fresh["deter"], atol=1e-3)


def test_straight_through_sample_is_one_hot_with_gradient():
    latent = CategoricalLatent(5, 7, 0.01)
    raw = jax.random.normal(jax.random.key(0), (11, 35))
    weights = jax.random.normal(jax.random.key(1), (11, 35))

    def f(raw):
        return (latent.sample(latent.stats(raw), jax.random.key(2)) * weights).sum()

    sample = latent.sample(latent.stats(raw), jax.random.key(2)).reshape(11, 5, 7)
    np.testing.assert_allclose(sample.sum(-1), 1.0, atol=1e-6)
    assert set(np.unique(np.round(np.asarray(sample), 6))) <= {0.0, 1.0}
    grad = jax.grad(f)(raw)
    assert np.abs(grad).max() > 1e-3

    # Straight-through gradient = d(probs . w)/d raw, the softmax Jacobian applied to w.
    def g(raw):
        probs = jax.nn.softmax(latent.stats(raw)["logits"], -1).reshape(11, 35)
        return (probs * weights).sum()

    np.testing.assert_allclose(grad, jax.grad(g)(raw), rtol=1e-5, atol=1e-6)


def test_unimix_bounds_probabilities():
    latent = CategoricalLatent(2, 4, 0.01)
    stats = latent.stats(jnp.array([[100.0, 0, 0, 0, 0, 100.0, 0, 0]]))
    probs = jnp.exp(stats["logits"])
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-6)
    assert probs.min() >= 0.01 / 4 - 1e-7
    # KL to another member is finite and closed-form (matches distrax).
    other = latent.stats(jnp.zeros((1, 8)))
    ref = latent.dist(stats).kl_divergence(latent.dist(other))
    np.testing.assert_allclose(latent.kl(stats, other), ref, rtol=1e-5)


def test_gaussian_latent_kl_entropy_match_distrax():
    latent = GaussianLatent(6, 0.1)
    q = latent.stats(jax.random.normal(jax.random.key(0), (4, 12)))
    p = latent.stats(jax.random.normal(jax.random.key(1), (4, 12)))
    assert float(q["std"].min()) >= 0.1
    np.testing.assert_allclose(
        latent.kl(q, p), latent.dist(q).kl_divergence(latent.dist(p)), rtol=1e-5
    )
    np.testing.assert_allclose(latent.entropy(q), latent.dist(q).entropy(), rtol=1e-5)


def _grad_norms(model, params, loss_fn):
    grads = jax.grad(loss_fn)(params)["params"]
    return {k: float(sum(jnp.abs(x).sum() for x in jax.tree.leaves(v))) for k, v in grads.items()}


PRIOR_SIDE = ("img_net_0", "img_net_1", "img_out")
POST_SIDE = ("obs_net_0", "obs_out")


@pytest.mark.parametrize("kind", list(LATENTS))
def test_kl_balancing_routes_gradients(kind):
    """dyn = KL(sg(q) || p) trains only the prior side; rep = KL(q || sg(p)) only the posterior."""
    model = make(kind)
    embed, action, is_first = data(3)
    embed, action, is_first = embed[:, :1], action[:, :1], is_first[:, :1]  # see below
    key = jax.random.key(6)
    params = model.init(jax.random.key(7), embed, action, is_first, key, method=RSSM.observe)
    # At initialization h_0 = tanh(0) = 0 and the first step sees all-zero inputs, where every
    # kernel has zero gradient; a learned h_0 moves away from there, so start from one.
    params["params"]["init_deter"] = jax.random.normal(jax.random.key(8), (16,))

    def term(which):
        def loss(p, emb=embed):
            post, prior = model.apply(p, emb, action, is_first, key, method=RSSM.observe)
            _, parts = rssm.kl_loss(model.latent, post, prior, free_nats=0.0)
            return parts[which].sum()

        return loss

    dyn = _grad_norms(model, params, term("dyn"))
    rep = _grad_norms(model, params, term("rep"))
    # One step from the initial state: the prior at t=0 depends on no observation, so the dyn
    # term cannot reach the posterior head or the embedding. (Over longer sequences it does,
    # legitimately, through h_t's dependence on earlier posterior samples.)
    for name in POST_SIDE:
        assert dyn[name] == 0.0, (name, dyn)
    for name in PRIOR_SIDE:
        assert dyn[name] > 0.0, (name, dyn)
        assert rep[name] == 0.0, (name, rep)
    for name in POST_SIDE:
        assert rep[name] > 0.0, (name, rep)
    g_embed_dyn = jax.grad(lambda e: term("dyn")(params, e))(embed)
    g_embed_rep = jax.grad(lambda e: term("rep")(params, e))(embed)
    assert float(jnp.abs(g_embed_dyn).max()) == 0.0
    assert float(jnp.abs(g_embed_rep).max()) > 0.0


def test_rep_term_never_reaches_prior_head_over_sequences(setup):
    model, params, _, _ = setup
    embed, action, is_first = data(4)
    key = jax.random.key(8)

    def loss(p):
        post, prior = model.apply(p, embed, action, is_first, key, method=RSSM.observe)
        return rssm.kl_loss(model.latent, post, prior, free_nats=0.0)[1]["rep"].sum()

    norms = _grad_norms(model, params, loss)
    for name in PRIOR_SIDE:
        assert norms[name] == 0.0, (name, norms)


def test_free_nats_zero_gradient_below_threshold(setup):
    model, params, _, _ = setup
    embed, action, is_first = data(5)
    key = jax.random.key(9)

    def loss(p, free):
        post, prior = model.apply(p, embed, action, is_first, key, method=RSSM.observe)
        return rssm.kl_loss(model.latent, post, prior, free, beta_dyn=0.5, beta_rep=0.1)[0].mean()

    post, prior = model.apply(params, embed, action, is_first, key, method=RSSM.observe)
    kl = model.latent.kl(post, prior)
    high = float(kl.max()) + 1.0
    grads = jax.grad(loss)(params, high)
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads)) == 0.0
    np.testing.assert_allclose(loss(params, high), (0.5 + 0.1) * high, rtol=1e-6)
    grads = jax.grad(loss)(params, 0.0)
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads)) > 0.0


def test_imagine_aligns_actions_with_states(setup):
    model, params, observe, _ = setup
    post, _ = observe(params, *data(6), jax.random.key(10))
    start = jax.tree.map(lambda x: x[:, -1], post)
    w = jax.random.normal(jax.random.key(11), (16, A))
    policy = lambda s, k: jnp.tanh(s["deter"] @ w)
    horizon = 4
    key = jax.random.key(12)
    states, actions = model.apply(params, policy, start, horizon, key, method=RSSM.imagine)
    assert states["deter"].shape == (B, horizon + 1, 16)
    assert actions.shape == (B, horizon + 1, A)
    for name in start:
        np.testing.assert_array_equal(states[name][:, 0], start[name])
    # actions[:, t] is the policy evaluated at states[:, t]: no off-by-one.
    np.testing.assert_allclose(actions, jnp.tanh(states["deter"] @ w), rtol=1e-5, atol=1e-6)
    # states[:, t + 1] = img_step(states[:, t], actions[:, t]): its deterministic part is
    # reproducible step by step.
    for t in range(horizon):
        prev = jax.tree.map(lambda x, t=t: x[:, t], states)
        nxt = model.apply(params, prev, actions[:, t], jax.random.key(0), method=RSSM.img_step)
        np.testing.assert_allclose(nxt["deter"], states["deter"][:, t + 1], rtol=1e-5, atol=1e-5)


def test_unrolled_scans_compute_the_same_states(setup):
    # unroll=3 (T = 5 and H = 4 are not multiples: the remainder runs too) changes the loop,
    # not the states: the same posterior, prior and imagined rollout from the same keys.
    model, params, _, _ = setup
    unrolled = model.clone(unroll=3)
    args = (*data(7), jax.random.key(13))
    policy = lambda s, k: jnp.tanh(s["deter"][:, :A])
    outs = []
    for m in (model, unrolled):
        post, prior = m.apply(params, *args, method=RSSM.observe)
        start = jax.tree.map(lambda x: x[:, -1], post)
        imagined = m.apply(params, policy, start, 4, jax.random.key(14), method=RSSM.imagine)
        outs.append((post, prior, imagined))
    for x, y in zip(jax.tree.leaves(outs[0]), jax.tree.leaves(outs[1]), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6)
    # ... and the loop is unrolled: the program's scan carries the option.
    jaxpr = jax.make_jaxpr(lambda p: unrolled.apply(p, *args, method=RSSM.observe))(params)
    assert "unroll=3" in str(jaxpr) and "unroll=3" not in str(
        jax.make_jaxpr(lambda p: model.apply(p, *args, method=RSSM.observe))(params)
    )
    with pytest.raises(ValueError, match="unroll=0"):
        model.clone(unroll=0).apply(params, *args, method=RSSM.observe)


# DreamerV3's model sizes, copied by hand from the reference: danijar/dreamerv3 at commit f8817c4,
# file dreamerv3/configs.yaml, presets size1m ... size400m (lines 120-153):
# ``.*\.rssm: {deter, hidden, classes}``, ``.*\.depth`` and ``.*\.units``.
DREAMERV3_SIZES = {  # name: (deter, hidden, classes, depth, units)
    "size1m": (512, 64, 4, 4, 64),
    "size12m": (2048, 256, 16, 16, 256),
    "size25m": (3072, 384, 24, 24, 384),
    "size50m": (4096, 512, 32, 32, 512),
    "size100m": (6144, 768, 48, 48, 768),
    "size200m": (8192, 1024, 64, 64, 1024),
    "size400m": (12288, 1536, 96, 96, 1536),
}
# What every size keeps from the default (same file and commit, line 91, agent.dyn.rssm):
# stoch: 32, unimix: 0.01, blocks: 8, act: silu, norm: rms, imglayers: 2, obslayers: 1,
# dynlayers: 1.
DREAMERV3_RSSM_DEFAULTS = {
    "groups": 32,
    "unimix": 0.01,
    "blocks": 8,
    "act": "silu",
    "norm": "rms",
    "img_layers": 2,
    "obs_layers": 1,
    "dyn_layers": 1,
}


def test_presets_construct_and_validate():
    m = rssm.planet(action_dim=3)
    assert isinstance(m.latent, GaussianLatent) and m.latent.size == 30 and m.deter == 200
    assert set(rssm.DREAMER_SIZES) == set(rssm.DREAMER_WIDTHS) == set(DREAMERV3_SIZES)
    fields = ("deter", "hidden", "blocks", "act", "norm", "img_layers", "obs_layers", "dyn_layers")
    for size, (deter, hidden, classes, depth, units) in DREAMERV3_SIZES.items():
        m = rssm.dreamer(size, action_dim=2)
        assert isinstance(m.latent, CategoricalLatent), size
        got = {k: getattr(m, k) for k in fields}
        got |= {k: getattr(m.latent, k) for k in ("groups", "classes", "unimix")}
        want = dict(deter=deter, hidden=hidden, classes=classes, **DREAMERV3_RSSM_DEFAULTS)
        assert got == want, size
        # The encoder/decoder depth and MLP width of the same preset (read by experiments.config).
        assert rssm.DREAMER_WIDTHS[size] == (depth, units), size
    with pytest.raises(ValueError, match="unknown size"):
        rssm.dreamer("size3m", 2)


@pytest.mark.parametrize(
    "shapes, match",
    [
        (((B, T, E), (B, T + 1, A), (B, T)), "disagree"),
        (((B, T, E), (B + 1, T, A), (B, T)), "disagree"),
        (((B, T, E), (B, T, A), (B, T - 1)), "disagree"),
        (((B, T, E), (B, T, A + 1), (B, T)), "action dimension 3"),
        (((B, T), (B, T, A), (B, T)), "expected embed"),
    ],
)
def test_bad_sequence_shapes_raise_clear_errors(setup, shapes, match):
    model, params, _, _ = setup
    e, a, f = shapes
    with pytest.raises(ValueError, match=match) as info:
        model.apply(
            params,
            jnp.zeros(e),
            jnp.zeros(a),
            jnp.zeros(f, bool),
            jax.random.key(0),
            method=RSSM.observe,
        )
    assert str(e) in str(info.value) or str(a) in str(info.value)


def test_integer_actions_and_images_refused(setup):
    model, params, _, _ = setup
    embed, action, is_first = data()
    with pytest.raises(ValueError, match="one-hot"):
        model.apply(
            params,
            embed,
            action.astype(jnp.int32),
            is_first,
            jax.random.key(0),
            method=RSSM.observe,
        )
    enc = rssm.ConvEncoder(depth=2)
    with pytest.raises(ValueError, match="uint8"):
        enc.init(jax.random.key(0), jnp.zeros((2, 64, 64, 3), jnp.uint8))


def test_prior_step_bounds_actions_to_the_box(setup):
    model, params, observe, _ = setup
    post, _ = observe(params, *data(7), jax.random.key(13))
    state = jax.tree.map(lambda x: x[:, -1], post)
    inside = jax.random.uniform(jax.random.key(14), (B, A), minval=-1, maxval=1)
    outside = 3.0 * jnp.sign(inside)  # every component pushed 3x past the box
    bounded = jnp.sign(inside)  # what the environment executes
    key = jax.random.key(15)
    step = lambda a: model.apply(params, state, a, key, method=RSSM.img_step)
    far, edge = step(outside), step(bounded)
    for name in far:
        np.testing.assert_allclose(far[name], edge[name], rtol=1e-6, atol=1e-6, err_msg=name)
    # In-box actions pass unchanged (the step differs from the edge's), and the bound's
    # gradient is 1 / max(1, |a|), not zero as clipping's.
    assert not np.allclose(step(inside)["deter"], edge["deter"])
    bound = lambda a: model.apply(params, a, method=RSSM.bound_action)
    np.testing.assert_allclose(bound(jnp.array([3.0, -2.0, 0.5])), [1.0, -1.0, 0.5])
    grad = jax.grad(lambda a: bound(a).sum())(jnp.array([3.0, -2.0, 0.5]))
    np.testing.assert_allclose(grad, [1 / 3, 1 / 2, 1.0], rtol=1e-6)
    unbounded = RSSM(latent=model.latent, action_dim=A, deter=16, hidden=8, blocks=2, action_clip=0)
    far = unbounded.apply(params, state, outside, key, method=RSSM.img_step)
    assert not np.allclose(far["deter"], edge["deter"])


@pytest.mark.parametrize("core, initial", [("gru", "learned"), ("block", "zeros")])
def test_cores_and_initial_states(core, initial):
    model = RSSM(
        latent=LATENTS["categorical"],
        action_dim=A,
        deter=16,
        hidden=8,
        blocks=2,
        core=core,
        initial=initial,
    )
    embed, action, is_first = data(8)
    params = model.init(
        jax.random.key(1), embed, action, is_first, jax.random.key(2), method=RSSM.observe
    )
    init = model.apply(params, 2, method=RSSM.initial_state)
    if initial == "zeros":  # DreamerV3 2024: h_0 = 0, s_0 = 0, nothing learned
        assert "init_deter" not in params["params"]
        np.testing.assert_array_equal(init["deter"], 0.0)
        np.testing.assert_array_equal(init["stoch"], 0.0)
    else:  # h_0 = tanh(w), s_0 the prior's mode: one-hot per group
        np.testing.assert_array_equal(init["stoch"].reshape(2, 3, 4).sum(-1), 1.0)
    names = set(params["params"])
    if core == "gru":
        assert {"in_joint", "gates", "gates_norm"} <= names and "in_deter" not in names
        assert params["params"]["gates"]["kernel"].shape == (16 + 8, 48)
    else:
        assert params["params"]["gates"]["kernel"].shape == (2, 16 // 2, 48 // 2)
    post, _ = model.apply(params, embed, action, is_first, jax.random.key(3), method=RSSM.observe)
    assert post["deter"].shape == (B, T, 16) and bool(jnp.all(jnp.isfinite(post["deter"])))


def test_observe_continues_from_a_stored_state_unless_the_episode_starts(setup):
    model, params, observe, _ = setup
    embed, action, is_first = data(9)
    key = jax.random.key(16)
    # The state stored for the step before the sequence: only h and s are kept.
    full, _ = observe(params, embed, action, is_first, key)
    stored = {k: full[k][:, 2] for k in ("deter", "stoch")}
    cont = is_first.at[:, 0].set(False)  # a sequence cut in the middle of an episode
    cont = cont.at[0, 0].set(True)  # ... except row 0, which begins one
    run = lambda state: model.apply(params, embed, action, cont, key, state, method=RSSM.observe)[0]
    from_stored, from_h0 = run(stored), run(None)
    # Rows cut mid-episode start from the stored state, not from h_0 ...
    for b in (1, 2):
        assert not np.allclose(from_stored["deter"][b, 0], from_h0["deter"][b, 0])
    ref = model.apply(
        params,
        stored,
        action[:, 0],
        embed[:, 0],
        cont[:, 0],
        jax.random.split(key, T)[0],
        method=RSSM.obs_step,
    )[0]
    np.testing.assert_allclose(from_stored["deter"][:, 0], ref["deter"], rtol=1e-6, atol=1e-6)
    # ... and the row that begins an episode starts from h_0 whatever was stored.
    for name in from_stored:
        np.testing.assert_allclose(from_stored[name][0], from_h0[name][0], rtol=1e-6, atol=1e-6)


def test_single_step_checks_shapes_as_observe_does(setup):
    """obs_step with is_first [B, 1], or a state of another batch, is refused by name (it would
    otherwise broadcast to [B, B, ...])."""
    model, params, _, step = setup
    embed, action, is_first = data()
    state = model.apply(params, B, method=RSSM.initial_state)
    args = (action[:, 0], embed[:, 0])
    with pytest.raises(ValueError, match=r"is_first has shape \(3, 1\); expected \(3,\)"):
        step(params, state, *args, is_first[:, :1], jax.random.key(0))
    small = jax.tree.map(lambda x: x[:1], state)
    with pytest.raises(ValueError, match=r"the previous state's deter has shape \(1, 16\)"):
        step(params, small, *args, is_first[:, 0], jax.random.key(0))
    post, _ = step(params, state, *args, is_first[:, 0], jax.random.key(0))
    assert post["deter"].shape == (B, 16)
