"""The device loop (experiments/run/device_loop.py) through the runner's entry point: a JAX
task runs there by default, logs the host runner's metric names, learns CartPole, and a run
stopped at a checkpoint and resumed ends exactly where the uninterrupted one does."""

from __future__ import annotations

import pytest

pytest.importorskip("gymnax")

from experiments import config as config_lib
from experiments.run.logging import read_jsonl
from experiments.run.loop import train, uses_device_loop


def _cfg(logdir, steps: int, *extra: str):
    args = ["--preset", "debug", "--task", "gymnax:CartPole-v1", "--logdir", str(logdir)]
    args += ["--steps", str(steps), "--run.save_every", "500", *extra]
    return config_lib.parse_args(args)[0]


@pytest.mark.slow
def test_a_jax_task_runs_on_the_device_loop_and_learns(tmp_path):
    cfg = _cfg(tmp_path, 2000, "--run.eval_every", "1000", "--run.eval_episodes", "2")
    assert uses_device_loop(cfg)
    assert not uses_device_loop(_cfg(tmp_path, 2000, "--run.loop", "host"))
    summary = train(cfg, tmp_path)
    assert summary["loop"] == "device" and summary["env_steps"] == 2000
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    episodes = [r for r in rows if "episode/return" in r]
    logs = [r for r in rows if "wm/loss" in r]
    assert [r["step"] for r in logs] == [1000, 1500, 2000]  # updates start after prefill 800
    assert {"replay/steps", "run/updates", "run/env_steps_per_s"} <= set(logs[-1])
    assert [r["episode/count"] for r in episodes] == list(range(1, len(episodes) + 1))
    assert all(r["episode/return"] == r["episode/length"] for r in episodes)  # CartPole: 1/step
    evals = [r["eval/return"] for r in rows if "eval/return" in r]
    # The debug agent balances the pole by 2000 steps (random play lasts ~20 steps).
    assert len(evals) == 2 and evals[-1] >= 150


@pytest.mark.slow
def test_a_resumed_device_run_ends_where_the_uninterrupted_one_does(tmp_path):
    whole = train(_cfg(tmp_path / "whole", 1500), tmp_path / "whole")
    first = train(_cfg(tmp_path / "split", 1000), tmp_path / "split")
    assert first["env_steps"] == 1000
    # As if the run had been killed after logging past its last checkpoint: those rows go.
    with open(tmp_path / "split" / "metrics.jsonl", "a") as f:
        f.write('{"step": 1250, "episode/return": -1.0}\n')
    rest = train(_cfg(tmp_path / "split", 1500), tmp_path / "split")
    assert rest["counters"] == whole["counters"]
    assert rest["params_sha256"] == whole["params_sha256"]
    split_rows = read_jsonl(tmp_path / "split" / "metrics.jsonl")
    whole_rows = read_jsonl(tmp_path / "whole" / "metrics.jsonl")
    strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith("run/")} for r in rows]
    assert strip(split_rows) == strip(whole_rows)
