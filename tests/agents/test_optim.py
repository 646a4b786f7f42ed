"""The optimizers against a plain numpy transcription of their update rules."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from agents import optim


def laprop_reference(params, grads_seq, lr, warmup, agc=0.3, b1=0.9, b2=0.999, eps=1e-20):
    """DreamerV3 (2024): per-tensor AGC, bias-corrected RMS scaling, then bias-corrected
    momentum, learning rate ramped linearly from 0 over ``warmup`` updates. numpy, float64."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    m = {k: np.zeros_like(x) for k, x in p.items()}
    for n, grads in enumerate(grads_seq, start=1):
        rate = lr * min(1.0, (n - 1) / warmup) if warmup else lr
        for k in p:
            g = np.asarray(grads[k], np.float64)
            upper = agc * max(1e-3, np.linalg.norm(p[k]))
            g = g / max(1.0, np.linalg.norm(g) / upper)
            v[k] = b2 * v[k] + (1 - b2) * g**2
            u = g / (np.sqrt(v[k] / (1 - b2**n)) + eps)
            m[k] = b1 * m[k] + (1 - b1) * u
            p[k] = p[k] - rate * m[k] / (1 - b1**n)
    return p


def run(opt, params, grads_seq):
    state = opt.init(params)
    for grads in grads_seq:
        updates, state = opt.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params


PARAMS = {"w": jnp.array([3.0, 4.0]), "b": jnp.array([[0.5, -0.5], [0.0, 2.0]])}
GRADS = [
    {"w": jnp.array([30.0, 40.0]), "b": jnp.array([[0.1, 0.0], [-0.2, 0.3]])},  # w clipped
    {"w": jnp.array([0.0, 0.6]), "b": jnp.array([[0.0, 0.1], [0.1, -0.1]])},
    {"w": jnp.array([-0.3, 0.2]), "b": jnp.array([[5.0, 5.0], [5.0, 5.0]])},  # b clipped
]


@pytest.mark.parametrize("warmup", [0, 2])
def test_dreamerv3_optimizer_matches_the_update_rule(warmup):
    cfg = optim.OptimConfig(lr=1e-2, warmup=warmup)
    got = run(optim.make(cfg, "wm"), PARAMS, GRADS)
    ref = laprop_reference(PARAMS, GRADS, 1e-2, warmup)
    for k in PARAMS:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-5, atol=1e-7)


def test_first_update_is_clipped_normalized_and_warmup_starts_at_zero():
    # ||g_w|| = 50 against 0.3 x ||w|| = 1.5: g_w -> [0.9, 1.2]; RMS scaling and momentum then
    # give exactly sign(g) after one step (bias-corrected), so w moves by -lr per component.
    cfg = optim.OptimConfig(lr=1e-2, warmup=0)
    got = run(optim.make(cfg, "wm"), PARAMS, GRADS[:1])
    np.testing.assert_allclose(got["w"], [3.0 - 1e-2, 4.0 - 1e-2], rtol=1e-6)
    # With warmup the first update's learning rate is 0.
    got = run(optim.make(optim.OptimConfig(lr=1e-2, warmup=1000), "wm"), PARAMS, GRADS[:1])
    np.testing.assert_array_equal(got["w"], PARAMS["w"])


def test_adam_is_clip_then_adam_per_module():
    cfg = optim.OptimConfig(
        kind="adam", lr=1e-3, actor_lr=3e-5, eps=1e-8, ac_eps=1e-5, clip=10.0, ac_clip=1.0, warmup=0
    )
    for module, lr, eps, clip in (("wm", 1e-3, 1e-8, 10.0), ("actor", 3e-5, 1e-5, 1.0)):
        got = run(optim.make(cfg, module), PARAMS, GRADS)
        ref = run(
            optax.chain(optax.clip_by_global_norm(clip), optax.adam(lr, eps=eps)), PARAMS, GRADS
        )
        for k in PARAMS:
            np.testing.assert_allclose(got[k], ref[k], rtol=1e-6)


def test_bad_optimizer_settings_are_refused():
    with pytest.raises(ValueError, match=r"opt\.kind"):
        optim.OptimConfig(kind="sgd").validate()
    with pytest.raises(ValueError, match=r"opt\.beta2"):
        optim.OptimConfig(beta2=1.0).validate()
    with pytest.raises(ValueError, match=r"opt\.lr"):
        optim.OptimConfig(lr=0.0).validate()
    with pytest.raises(ValueError, match="module"):
        optim.make(optim.OptimConfig(), "decoder")
