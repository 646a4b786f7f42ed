"""Scaling out (experiments/scale.py): the update over several devices equals the one-device
update; a run checkpointed on 4 devices resumes on 1 and 2; two processes on this machine
train one run in lockstep and resume after SIGKILL. Devices are virtual CPU devices
(``--xla_force_host_platform_device_count``) and hosts are local processes over gloo."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from experiments.run.logging import read_jsonl

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parent / "scale_scripts"


def _env(devices: int = 1) -> dict[str, str]:
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
    if devices > 1:
        flags.append(f"--xla_force_host_platform_device_count={devices}")
    cache = os.environ.get("RSSM_JAX_CACHE", str(ROOT / ".jax_cache"))
    env.update(
        XLA_FLAGS=" ".join(flags),
        MUJOCO_GL="egl",
        WANDB_MODE="offline",
        PYTHONUNBUFFERED="1",
        RSSM_JAX_CACHE=cache,
        JAX_COMPILATION_CACHE_DIR=cache,
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    return env


def _runner(logdir: Path, devices: int, *args: str, pause: str = "") -> subprocess.Popen:
    """The runner's CLI with the world-model agent ('random'): the smallest update that
    exercises everything the runner shards (replay context, checkpoints);
    Dreamer's own update is held equal across devices by scale_scripts/sharded_update.py.
    ``pause`` holds it at a named point (experiments/pause.py)."""
    cmd = [sys.executable, "-m", "experiments.train", "--preset", "debug", "--logdir", str(logdir)]
    cmd += ["--agent", "random", "--run.eval_every", "0", "--run.prefill", "200", *args]
    env = _env(devices)
    if pause:
        env.update(RSSM_JAX_PAUSE=pause, RSSM_JAX_PAUSE_FILE=f"{logdir}-pause")
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _python(devices: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=_env(devices),
        capture_output=True,
        text=True,
        timeout=300,
    )


def _summary(out: str) -> dict:
    """The JSON line the runner prints last."""
    for line in reversed(out.splitlines()):
        if line.startswith('{"counters"'):
            return json.loads(line)
    raise AssertionError(out[-3000:])


def _finish(proc: subprocess.Popen, timeout: float = 300) -> dict:
    out = proc.communicate(timeout=timeout)[0]
    assert proc.returncode == 0, out[-3000:]
    return _summary(out) | {"output": out}


@pytest.mark.slow
def test_two_seeds_on_four_devices_equal_each_seed_alone_on_one():
    out = _python(4, str(SCRIPTS / "sharded_update.py"))
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    # FSDP really split parameters over the 4 devices.
    assert r["split_params"] > 5
    # Each seed's losses and parameters equal its update alone on one device.
    assert len(r["losses"]) > 20
    for name, (alone, together) in r["losses"].items():
        assert together == pytest.approx(alone, rel=1e-5, abs=1e-7), name
    assert r["worst_param_rel"] < 1e-5
    # The refreshed posterior of every step (for replay) comes back whole ([K, B, T, ...]) and
    # equal.
    assert r["context_shapes"] and all(shape[:3] == [2, 8, 16] for shape in r["context_shapes"])
    assert r["worst_context_abs"] < 1e-4
    assert "run.batch_size=6" in r["refused"] and "multiple of 4" in r["refused"]


@pytest.mark.slow
def test_run_on_four_devices_resumes_on_one_and_on_two(tmp_path):
    first = tmp_path / "four"
    # Updates start once replay holds B x T = 64 windows of 16 + 1 steps: after agent step 79
    # of 8 env steps each (one update by env step 640).
    s4 = _finish(_runner(first, 4, "--steps", "640", "--run.save_every", "640"))
    assert s4["devices"] == 4
    assert s4["counters"]["updates"] == 1
    # experiments.evaluate reads the 4-device checkpoint in a 1-device process.
    ev = _python(1, "-m", "experiments.evaluate", "--logdir", str(first), "--episodes", "1")
    assert ev.returncode == 0, ev.stderr[-3000:]
    assert json.loads(ev.stdout.strip().splitlines()[-1])["agent_steps"] == 80
    resumed = {}
    for devices in (1, 2):
        logdir = tmp_path / f"on{devices}"
        shutil.copytree(first, logdir)
        resumed[devices] = _finish(_runner(logdir, devices, "--steps", "800"))
    for devices, s in resumed.items():
        assert s["devices"] == devices
        assert "resumed from checkpoint at env step 640" in s["output"]
        # Counters continue exactly: 20 more agent steps of 8 env steps, one update each
        # (debug: train ratio 64 = batch 4 x length 16 per agent step).
        assert s["counters"]["agent_steps"] == 100
        assert s["counters"]["updates"] == s4["counters"]["updates"] + 20
        assert s["replay_steps"] == 100
    assert resumed[1]["counters"] == resumed[2]["counters"]
    # Both resumed from the same state and replay: their losses agree up to the order of sums.
    losses = [
        [r["wm/loss"] for r in read_jsonl(tmp_path / f"on{d}" / "metrics.jsonl") if "wm/loss" in r]
        for d in (1, 2)
    ]
    assert len(losses[0]) == len(losses[1]) > 1
    assert losses[0][-1] == pytest.approx(losses[1][-1], rel=1e-3)
    # A batch that does not split over the devices is refused before anything starts.
    bad = _runner(tmp_path / "bad", 4, "--run.batch_size", "6", "--steps", "1000")
    out = bad.communicate(timeout=120)[0]
    assert bad.returncode == 2 and "run.batch_size=6" in out and "multiple of 4" in out
    assert not (tmp_path / "bad" / "checkpoints").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(logdir: Path, *args: str, pause: str = "") -> list[subprocess.Popen]:
    port = _free_port()
    return [
        _runner(
            logdir,
            1,
            "--coordinator",
            f"127.0.0.1:{port}",
            "--num-processes",
            "2",
            "--process-id",
            str(i),
            *args,
            pause=pause,
        )
        for i in range(2)
    ]


@pytest.mark.slow
def test_two_processes_train_one_run_and_resume_after_sigkill(tmp_path):
    logdir = tmp_path / "run"
    # Updates start at agent step 94 (iteration 47, when each process's replay holds its
    # 2 x 16 windows of 16 + 1 steps), one per 4 agent steps at train ratio 16 (collectives
    # over gloo are slow); checkpoints come at agent steps 38 and 76, the end at 120.
    args = ("--steps", "960", "--run.save_every", "300", "--run.train_ratio", "16")
    # Process 0 evaluates alone at 800 while process 1 goes on.
    args += ("--run.eval_every", "800")
    # Both processes hold between steps at env step 704, once checkpoint 608 is complete.
    procs = _two_processes(logdir, *args, pause="env_step@704")
    markers = [Path(f"{logdir}-pause.env_step.{i}") for i in range(2)]
    deadline = time.time() + 300
    while not all(m.exists() for m in markers):
        if time.time() > deadline or any(p.poll() is not None for p in procs):
            for p in procs:
                p.kill()
            raise AssertionError([p.communicate()[0][-2000:] for p in procs])
        time.sleep(0.05)
    for p in procs:
        p.send_signal(signal.SIGKILL)
        p.communicate(timeout=60)
    ckpts = logdir / "checkpoints"
    saved = sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit())
    assert saved == [304, 608]  # in env steps, and no later one
    # The latest is damaged: every process finds it so, process 0 moves it aside, and both
    # resume from the one before.
    (ckpts / "608" / "meta" / "metadata").write_text("{not json")
    summaries = [_finish(p) for p in _two_processes(logdir, *args)]
    assert (logdir / "checkpoints-damaged" / "608" / "meta").is_dir()
    for i, s in enumerate(summaries):
        assert s["process"] == i and s["devices"] == 2
        assert "resuming from env step 304" in s["output"]
        assert "resumed from checkpoint at env step 304" in s["output"]
        # Agent steps count both processes' environments: 1 env each, 2 per iteration.
        assert s["counters"]["agent_steps"] == 120 and s["env_steps"] == 960
        assert s["counters"]["updates"] == (120 - 94) // 4  # from the iteration at step 94
        assert s["replay_steps"] == 60  # each process keeps its own half
    # One run: the same parameters in both processes, bit for bit.
    assert summaries[0]["params_sha256"] == summaries[1]["params_sha256"]
    assert summaries[0]["counters"] == summaries[1]["counters"]
    # Each process has its own replay; only process 0 writes the logs and the config.
    assert (logdir / "replay").is_dir() and (logdir / "replay-process1").is_dir()
    rows = read_jsonl(logdir / "metrics.jsonl")
    steps = [r["step"] for r in rows if "run/updates" in r]
    assert steps and steps == sorted(set(steps))  # one writer: no step logged twice
    assert [r["step"] for r in rows if "eval/return" in r] == [800]


@pytest.mark.slow
def test_many_seeds_in_one_process(tmp_path):
    from wandb_reader import read_offline_run

    from experiments import config as config_lib
    from experiments.run.loop import train

    def cfg(*args: str):
        base = ["--preset", "debug", "--agent", "random", "--run.eval_every", "0"]
        base += ["--run.prefill", "1000"]
        return config_lib.parse_args([*base, "--logdir", "-", *args])[0]

    # The first episode (1000 env steps) is all prefill: uniform actions from the policy key
    # (one update follows, after agent step 125).
    single = {}
    for seed in (3, 4):
        train(cfg("--seed", str(seed), "--steps", "1008"), tmp_path / f"single{seed}")
        rows = read_jsonl(tmp_path / f"single{seed}" / "metrics.jsonl")
        single[seed] = [r["episode/return"] for r in rows if "episode/return" in r]
    assert single[3] != single[4]
    logdir = tmp_path / "seeds"
    many = ["--seed", "3", "--run.seeds", "2", "--wandb", "offline", "--run.save_every", "1000"]
    many += ["--run.eval_every", "1200"]
    s = train(cfg(*many, "--steps", "1200"), logdir)
    assert s["counters"]["updates"] == 25 and s["counters"]["seed_episodes"] == [1, 1]
    assert len(set(s["params_sha256"])) == 2  # two agents, not one copied
    ids = {}
    for k in (0, 1):
        rows = read_jsonl(logdir / f"seed{k}" / "metrics.jsonl")
        # Agent k acted in the environments of the run with seed 3 + k, with its keys.
        assert [r["episode/return"] for r in rows if "episode/return" in r] == single[3 + k]
        assert [r["step"] for r in rows if "eval/return" in r] == [1200]
        assert any("wm/loss" in r for r in rows)
        (run_dir,) = (logdir / f"seed{k}" / "wandb").glob("offline-run-*")
        record = read_offline_run(run_dir)
        assert record["config"]["run"]["seed"] == 3 + k
        ids[k] = record["run_id"]
    losses = [
        [r["wm/loss"] for r in read_jsonl(logdir / f"seed{k}" / "metrics.jsonl") if "wm/loss" in r]
        for k in (0, 1)
    ]
    assert losses[0] != losses[1]
    assert (logdir / "replay" / "seed0").is_dir() and (logdir / "replay" / "seed1").is_dir()
    # Resumed: the same two agents and wandb runs continue.
    s = train(cfg(*many, "--steps", "1400"), logdir)
    assert s["counters"]["updates"] == 50 and s["env_steps"] == 1400
    for k in (0, 1):
        runs = sorted((logdir / f"seed{k}" / "wandb").glob("offline-run-*"))
        assert {read_offline_run(r)["run_id"] for r in runs} == {ids[k]}
    # experiments.evaluate picks one agent of the run, and refuses one it did not train.
    from experiments.evaluate import LoadedPolicy

    policies = [LoadedPolicy(logdir, member=k) for k in (0, 1)]
    assert policies[0].step == 175
    w = [jax.tree.leaves(p.state.params)[0] for p in policies]
    assert w[0].shape == w[1].shape and not np.array_equal(w[0], w[1])
    with pytest.raises(ValueError, match=r"--member 2: the run trained 2 agent"):
        LoadedPolicy(logdir, member=2)
