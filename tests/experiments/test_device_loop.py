"""The device loop (experiments/run/device_loop.py) through the runner's entry point: a JAX
task runs there by default, logs the host runner's metric names, learns CartPole, and a run
stopped at a checkpoint and resumed ends exactly where the uninterrupted one does."""

from __future__ import annotations

import pytest

pytest.importorskip("gymnax")

from experiments import config as config_lib
from experiments.evaluate import LoadedPolicy
from experiments.run.device_loop import uses_device_loop
from experiments.run.logging import read_jsonl
from experiments.run.loop import train
from experiments.run.metrics import params_digest


def _cfg(logdir, steps: int, *extra: str):
    args = ["--preset", "debug", "--task", "gymnax:CartPole-v1", "--logdir", str(logdir)]
    args += ["--steps", str(steps), "--run.save_every", "500", "--run.eval_every", "1000"]
    return config_lib.parse_args([*args, "--run.eval_episodes", "2", *extra])[0]


@pytest.mark.slow
def test_the_device_loop_learns_logs_as_the_host_and_resumes_exactly(tmp_path):
    whole_dir, split_dir = tmp_path / "whole", tmp_path / "split"
    cfg = _cfg(whole_dir, 2000)
    assert uses_device_loop(cfg)
    assert not uses_device_loop(_cfg(tmp_path, 2000, "--run.loop", "host"))
    whole = train(cfg, whole_dir)
    assert whole["loop"] == "device" and whole["env_steps"] == 2000
    rows = read_jsonl(whole_dir / "metrics.jsonl")
    episodes = [r for r in rows if "episode/return" in r]
    logs = [r for r in rows if "wm/loss" in r]
    assert [r["step"] for r in logs] == [1000, 1500, 2000]  # updates start after prefill 800
    assert {"replay/steps", "run/updates", "run/env_steps_per_s"} <= set(logs[-1])
    assert [r["episode/count"] for r in episodes] == list(range(1, len(episodes) + 1))
    assert all(r["episode/return"] == r["episode/length"] for r in episodes)  # CartPole: 1/step
    # Open-loop reports (the debug preset's report_every 1000) once replay holds a window.
    reports = [r["step"] for r in rows if "openloop/vector_mse_h1" in r]
    assert reports == [1000, 2000]
    evals = [r["eval/return"] for r in rows if "eval/return" in r]
    # The debug agent balances the pole by 2000 steps (random play lasts ~20 steps).
    assert len(evals) == 2 and evals[-1] >= 150

    # The evaluation API restores the agent from the device loop's checkpoint (its carry).
    policy = LoadedPolicy(whole_dir)
    assert params_digest(policy.state) == whole["params_sha256"]

    # The same run stopped at its checkpoint at 1500 and resumed (its replay, allocated for
    # 1500 steps, grows), after logging past the checkpoint as a killed run might have.
    first = train(_cfg(split_dir, 1500), split_dir)
    assert first["env_steps"] == 1500
    with open(split_dir / "metrics.jsonl", "a") as f:
        f.write('{"step": 1750, "episode/return": -1.0}\n')
    rest = train(_cfg(split_dir, 2000), split_dir)
    assert rest["counters"] == whole["counters"]
    assert rest["params_sha256"] == whole["params_sha256"]

    def strip(rows: list[dict]) -> list[dict]:  # wall-clock rates differ
        return [{k: v for k, v in r.items() if not k.startswith("run/")} for r in rows]

    assert strip(read_jsonl(split_dir / "metrics.jsonl")) == strip(rows)


@pytest.mark.slow
def test_seeds_on_the_device_loop_log_apart_and_restore_each_agent(tmp_path):
    """--run.seeds 2: one vmapped program, each seed's rows in seed<k>/metrics.jsonl, and
    each agent k restored from the checkpoint (LoadedPolicy member k) as the run ended it."""
    args = ["--run.seeds", "2", "--run.eval_every", "300", "--run.prefill", "200"]
    cfg = _cfg(tmp_path, 600, *args, "--run.report_every", "0", "--run.log_every", "300")
    summary = train(cfg, tmp_path)
    assert summary["loop"] == "device" and len(summary["params_sha256"]) == 2
    assert summary["counters"]["updates"] > 0
    assert summary["params_sha256"][0] != summary["params_sha256"][1]
    for k in range(2):
        rows = read_jsonl(tmp_path / f"seed{k}" / "metrics.jsonl")
        assert [r["step"] for r in rows if "eval/return" in r] == [300, 600]
        episodes = [r["episode/count"] for r in rows if "episode/count" in r]
        assert episodes == list(range(1, len(episodes) + 1))  # each seed counts its own
        policy = LoadedPolicy(tmp_path, member=k)
        assert params_digest(policy.state) == summary["params_sha256"][k]


def test_unshared_copies_an_array_that_appears_twice():
    """The chunk donates its carry; an agent state whose target network is its network's
    very arrays would donate one buffer twice (XLA refuses)."""
    import jax.numpy as jnp

    from experiments.run.device_carry import unshared

    a, b = jnp.ones(3), jnp.zeros(2)
    tree = unshared({"critic": a, "slow_critic": a, "other": b})
    assert tree["critic"] is a and tree["other"] is b
    assert tree["slow_critic"] is not a and tree["slow_critic"].tolist() == [1.0, 1.0, 1.0]


def test_empty_arrays_leave_the_checkpoint_and_come_back():
    """MJX data holds zero-size arrays, which orbax refuses to save: they are dropped before a
    save and rebuilt from the carry's shapes on restore, in place."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from experiments.run.device_carry import with_empty, without_empty

    tree = {"a": jnp.arange(3.0), "data": {"act": jnp.zeros((0,)), "q": jnp.ones((2, 2))}}
    saved = without_empty(tree)
    assert saved["data"]["act"] is None and len(jax.tree.leaves(saved)) == 2
    abstract = jax.eval_shape(lambda: tree)
    back = with_empty(abstract, saved)
    assert back["data"]["act"].shape == (0,)
    np.testing.assert_array_equal(back["a"], tree["a"])
    np.testing.assert_array_equal(back["data"]["q"], tree["data"]["q"])


@pytest.mark.parametrize(
    "extra, names",
    [
        (
            [
                *("--run.gap_particles", "4", "--model.vector_dist", "normal"),
                *("--model.reward_dist", "normal", "--dreamer.contdisc", "false"),
            ],
            "run.gap_particles",
        ),
        (["--run.prefill_to_batch", "true"], "run.prefill_to_batch"),
    ],
)
def test_what_the_device_loop_cannot_run_is_refused_before_the_logdir_exists(
    tmp_path, extra, names
):
    from experiments.errors import ConfigError

    logdir = tmp_path / "run"
    with pytest.raises(ConfigError, match=f"{names}.*--run.loop host"):
        train(_cfg(logdir, 1000, *extra), logdir)
    assert not logdir.exists()
