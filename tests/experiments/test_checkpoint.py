"""Checkpoint round trips, keep-last-k, interrupted saves and config checks."""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments.run.checkpoint import Checkpointer
from experiments.run.compat import MISSING, check_config, config_diff

REPO = Path(__file__).resolve().parents[2]


@flax.struct.dataclass
class TrainState:
    params: dict
    opt_state: Any
    key: jax.Array  # typed key, as modern JAX makes them
    raw_key: jax.Array  # legacy uint32[2] key
    step: jax.Array


def make_state(seed: int) -> TrainState:
    """A training state whose optimizer moments are non-zero (one adam update applied)."""
    rng = np.random.default_rng(seed)
    params = {
        "encoder": {
            "w": jnp.asarray(rng.standard_normal((5, 7), dtype=np.float32)),
            "b": jnp.asarray(rng.standard_normal(7, dtype=np.float32)).astype(jnp.bfloat16),
        },
        "head": jnp.asarray(rng.standard_normal((7,), dtype=np.float32)),
    }
    # clip + adam: a tuple of (EmptyState-like, ScaleByAdamState) nested in a chain.
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))
    opt_state = tx.init(params)
    grads = jax.tree.map(lambda p: jnp.ones_like(p) * 0.1, params)
    _, opt_state = tx.update(grads, opt_state, params)
    return TrainState(
        params=params,
        opt_state=opt_state,
        key=jax.random.split(jax.random.key(seed))[1],
        raw_key=jax.random.PRNGKey(seed + 100),
        step=jnp.asarray(1000 + seed, jnp.int32),
    )


def assert_bit_identical(a: Any, b: Any) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert x.dtype == y.dtype
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        x, y = np.asarray(x), np.asarray(y)
        assert x.shape == y.shape
        assert x.tobytes() == y.tobytes()


META = {
    "config": {"model": {"deter": 64, "act": "silu", "sizes": [1, 2]}, "run": {"seed": 0}},
    "env_steps": 12345,
    "wandb_run_id": "abc123xy",
    "replay": None,
}


def test_round_trip_is_bit_identical_with_types_and_dtypes(tmp_path: Path) -> None:
    state = make_state(0)
    with Checkpointer(tmp_path / "ckpt", keep=3) as ck:
        ck.save(7, state, META)
        ck.wait()
        assert ck.latest_step() == 7

    # A fresh Checkpointer (as after a restart) restores into concrete and abstract targets.
    with Checkpointer(tmp_path / "ckpt") as ck:
        other = make_state(1)  # same structure, different values
        for target in (other, jax.eval_shape(lambda: other)):
            restored, meta = ck.restore(target)
            assert meta == META
            assert isinstance(restored, TrainState)
            assert_bit_identical(restored, state)
            adam = restored.opt_state[1][0]
            assert isinstance(adam, optax.ScaleByAdamState)
            assert int(adam.count) == 1
            assert restored.params["encoder"]["b"].dtype == jnp.bfloat16
            assert restored.raw_key.dtype == jnp.uint32
            # The typed key is a key again, and draws what the saved key draws.
            assert jax.dtypes.issubdtype(restored.key.dtype, jax.dtypes.prng_key)
            np.testing.assert_array_equal(
                jax.random.uniform(restored.key, (4,)), jax.random.uniform(state.key, (4,))
            )
        assert ck.restore_meta() == META
        assert ck.restore_meta(7) == META


def test_keep_last_k(tmp_path: Path) -> None:
    with Checkpointer(tmp_path, keep=2) as ck:
        for step in range(1, 6):
            ck.save(step, {"x": jnp.full((3,), step, jnp.float32)}, {"step": step})
        ck.wait()
        assert ck.latest_step() == 5
        assert ck.all_steps() == [4, 5]
    step_dirs = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert step_dirs == ["4", "5"]
    with Checkpointer(tmp_path, keep=2) as ck:
        assert ck.all_steps() == [4, 5]
        state, meta = ck.restore({"x": jnp.zeros((3,), jnp.float32)}, step=4)
        np.testing.assert_array_equal(state["x"], np.full((3,), 4.0, np.float32))
        assert meta == {"step": 4}
        with pytest.raises(FileNotFoundError, match=r"step 3 not found.*\[4, 5\]"):
            ck.restore_meta(3)


def test_leftover_tmp_directory_is_never_restored(tmp_path: Path) -> None:
    target = {"x": jnp.zeros((4,), jnp.int32)}
    with Checkpointer(tmp_path) as ck:
        for step in (1, 2):
            ck.save(step, {"x": jnp.full((4,), step, jnp.int32)}, {"step": step})
        ck.wait()
    # An interrupted save of step 3, made as convincing as possible: complete contents, but
    # still under orbax's temporary name.
    shutil.copytree(tmp_path / "2", tmp_path / "3.orbax-checkpoint-tmp")
    with Checkpointer(tmp_path) as ck:
        assert ck.latest_step() == 2
        state, meta = ck.restore(target)
        np.testing.assert_array_equal(state["x"], np.full((4,), 2, np.int32))
        assert meta == {"step": 2}
        ck.save(3, {"x": jnp.full((4,), 3, jnp.int32)}, {"step": 3})
        ck.wait()
        assert ck.latest_step() == 3
        state, meta = ck.restore(target)
        np.testing.assert_array_equal(state["x"], np.full((4,), 3, np.int32))
        assert meta == {"step": 3}
    assert not (tmp_path / "3.orbax-checkpoint-tmp").exists()


_KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    import jax.numpy as jnp
    from experiments.run.checkpoint import Checkpointer

    ck = Checkpointer(sys.argv[1], keep=3, async_save=True)
    ck.save(1, {"x": jnp.arange(8, dtype=jnp.float32), "big": jnp.ones((4,), jnp.uint32)},
            {"step": 1})
    ck.wait()
    # The write of step 2 holds at the pause point checkpoint_write (experiments/pause.py).
    ck.save(2, {"x": jnp.zeros((8,), jnp.float32), "big": jnp.zeros((4,), jnp.uint32)},
            {"step": 2})
    time.sleep(120)
    """
)


def test_sigkill_during_async_save_keeps_previous_step(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    marker = tmp_path / "pause.checkpoint_write"
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    env.update(RSSM_JAX_PAUSE="checkpoint_write@2", RSSM_JAX_PAUSE_FILE=str(tmp_path / "pause"))
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(ckpt)], stdout=subprocess.PIPE, env=env
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None, "writer exited before the save of step 2 began"
            assert time.monotonic() < deadline, "the save of step 2 never reached its pause"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # The kill landed mid-write: the step was never renamed into place.
    assert (ckpt / "2.orbax-checkpoint-tmp").exists()
    assert not (ckpt / "2").exists()

    target = {"x": jnp.zeros((8,), jnp.float32), "big": jnp.zeros((4,), jnp.uint32)}
    with Checkpointer(ckpt) as ck:
        assert ck.latest_step() == 1
        state, meta = ck.restore(target)
        np.testing.assert_array_equal(state["x"], np.arange(8, dtype=np.float32))
        np.testing.assert_array_equal(state["big"], np.ones((4,), np.uint32))
        assert meta == {"step": 1}
        ck.save(2, {"x": jnp.full((8,), 2.0), "big": jnp.zeros((4,), jnp.uint32)}, {"step": 2})
        ck.wait()
        assert ck.latest_step() == 2
        assert ck.restore_meta() == {"step": 2}


def test_errors(tmp_path: Path) -> None:
    with Checkpointer(tmp_path, async_save=False) as ck:
        assert ck.latest_step() is None
        with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
            ck.restore({"x": jnp.zeros(2)})
        with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
            ck.restore_meta()
        with pytest.raises(TypeError, match="JSON-serializable"):
            ck.save(1, {"x": jnp.zeros(2)}, {"bad": np.zeros(2)})

        state = {"w": jnp.zeros((2, 3)), "b": jnp.zeros((3,), jnp.bfloat16)}
        ck.save(1, state, {})
        with pytest.raises(ValueError, match="steps must increase"):
            ck.save(1, state, {})
        with pytest.raises(ValueError, match=r"(?s)b: in the checkpoint, missing from the target"):
            ck.restore({"w": jnp.zeros((2, 3))})
        with pytest.raises(ValueError, match=r"extra: in the target, missing from the checkpoint"):
            ck.restore({**state, "extra": jnp.zeros(1)})
        with pytest.raises(ValueError, match=r"b: checkpoint has shape \(3,\) dtype bfloat16"):
            ck.restore({"w": jnp.zeros((2, 3)), "b": jnp.zeros((3,), jnp.float32)})
        with pytest.raises(ValueError, match=r"w: checkpoint has shape \(2, 3\)"):
            ck.restore({"w": jnp.zeros((3, 2)), "b": jnp.zeros((3,), jnp.bfloat16)})
    with pytest.raises(ValueError, match="keep must be >= 1, got 0; the number of checkpoints"):
        Checkpointer(tmp_path / "other", keep=0)


def test_config_diff_and_check_config() -> None:
    saved = {
        "model": {"deter": 512, "latent": {"classes": 32}, "acts": ("silu", "silu")},
        "run": {"steps": 1000, "seed": 0},
        "logging": {"every": 10},
        "removed": 1.5,
    }
    current = {
        "model": {"deter": 256, "latent": {"classes": 16}, "acts": ["silu", "silu"]},
        "run": {"steps": 5000, "seed": 0},
        "logging": {"every": 100, "video": True},
        "added": "x",
    }
    assert config_diff(saved, current) == [
        ("added", MISSING, "x"),
        ("logging.every", 10, 100),
        ("logging.video", MISSING, True),
        ("model.deter", 512, 256),
        ("model.latent.classes", 32, 16),
        ("removed", 1.5, MISSING),
        ("run.steps", 1000, 5000),
    ]
    assert config_diff(saved, saved) == []
    assert config_diff({"a": True}, {"a": 1}) == [("a", True, 1)]
    check_config(saved, saved)
    check_config(current, current, ignore=["anything"])

    with pytest.raises(ValueError) as info:
        check_config(saved, current, ignore=["run.steps", "logging.*"])
    message = str(info.value)
    assert "4 field(s) differ" in message
    assert "model.deter: saved 512, current 256" in message
    assert "model.latent.classes: saved 32, current 16" in message
    assert "added: saved <missing>, current 'x'" in message
    assert "removed: saved 1.5, current <missing>" in message
    assert "run.steps" not in message and "logging" not in message
    assert "new logdir" in message

    # A section name as prefix ignores everything under it.
    check_config(saved, current, ignore=["run.steps", "logging", "model", "added", "removed"])
    with pytest.raises(ValueError, match=r"run\.steps: saved 1000, current 5000"):
        check_config(saved, current, ignore=["logging", "model", "added", "removed"])


@flax.struct.dataclass
class AgentStateLayout2:
    """The agent state as layout 2 saved it: one more field, None unless model.carry_state."""

    params: dict
    opt_state: Any
    aux: dict
    key: jax.Array
    updates: jax.Array
    train_carry: Any = None


def test_a_layout_2_agent_state_restores_as_this_layout(tmp_path: Path) -> None:
    from agents.contract import STATE_LAYOUT, AgentState
    from experiments.run.compat import ConfigMismatch, check_layout, restore_state

    src = make_state(3)
    old = AgentStateLayout2(
        src.params, src.opt_state, {"slow": src.params["head"]}, src.key, src.step
    )
    with Checkpointer(tmp_path / "ckpt") as ck:
        ck.save(5, old, {"state_layout": 2})
        ck.wait()
        new = AgentState(old.params, old.opt_state, old.aux, old.key, old.updates)
        target = jax.eval_shape(lambda: new)
        with pytest.raises(ValueError, match="does not match the restore target"):
            ck.restore(target, 5)  # the field this layout dropped is still on disk
        layout = check_layout(ck.restore_meta(5), tmp_path)
        assert layout == 2 and STATE_LAYOUT == 3
        restored, meta = restore_state(ck, target, 5, layout)
        assert isinstance(restored, AgentState) and meta == {"state_layout": 2}
        assert_bit_identical(restored, new)
    with pytest.raises(ConfigMismatch, match=r"layout 9, written by a newer rssm-jax"):
        check_layout({"state_layout": 9}, tmp_path)
