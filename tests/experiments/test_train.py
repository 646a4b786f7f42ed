"""The runner end to end: CLI, resume after SIGKILL, wandb offline, bad input, pixels."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from experiments import config as config_lib
from experiments.checkpoint import Checkpointer
from experiments.logging import read_jsonl, read_offline_run
from experiments.replay import Replay
from experiments.train import ConfigMismatch, train

ROOT = Path(__file__).resolve().parents[2]


def _env():
    env = dict(os.environ)
    env.update(
        MUJOCO_GL="egl",
        WANDB_MODE="offline",
        PYTHONUNBUFFERED="1",
        JAX_COMPILATION_CACHE_DIR=str(ROOT / ".jax_cache"),
        RSSM_JAX_CACHE=os.environ.get("RSSM_JAX_CACHE", str(ROOT / ".jax_cache")),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    return env


def test_cli_overrides_and_errors():
    cfg, args = config_lib.parse_args(
        [
            "--preset",
            "debug",
            "--logdir",
            "x",
            "--task",
            "walker-walk",
            "--steps",
            "1e4",
            "--model.deter",
            "64",
            "--env.fast_render",
            "true",
            "--logging.tags",
            "a,b",
        ]
    )
    assert cfg.env.task == "walker-walk" and cfg.run.steps == 10_000
    assert cfg.model.deter == 64 and cfg.env.fast_render is True
    assert cfg.logging.tags == ("a", "b") and args.logdir == "x"
    assert config_lib.to_dict(cfg) == json.loads(json.dumps(config_lib.to_dict(cfg)))
    with pytest.raises(ValueError, match=r"unknown config field 'model\.detr'"):
        config_lib.parse_args(["--logdir", "x", "--model.detr", "3"])
    with pytest.raises(ValueError, match=r"cannot parse .big. as int"):
        config_lib.parse_args(["--logdir", "x", "--model.deter", "big"])
    with pytest.raises(ValueError, match="cartpole-swingup"):
        config_lib.parse_args(["--logdir", "x", "--task", "walker-walkk"])
    with pytest.raises(ValueError, match="batch_length"):
        config_lib.parse_args(["--logdir", "x", "--run.batch_length", "1"])
    for name, preset in config_lib.PRESETS.items():
        assert config_lib.validate(preset()) is not None, name
        as_dict = config_lib.to_dict(preset())
        assert config_lib.to_dict(config_lib.from_dict(as_dict)) == as_dict
    # A config saved before a section existed reads back with that section's defaults, so
    # checkpoints of older runs stay resumable.
    old = config_lib.to_dict(cfg)
    del old["planet"]
    assert config_lib.from_dict(old) == cfg
    with pytest.raises(ValueError, match="no fields"):
        config_lib.from_dict({**old, "colour": "red"})


def _ckpt_steps(logdir: Path) -> list[int]:
    d = logdir / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.exists() else []


def _start(logdir: Path, *args: str) -> subprocess.Popen:
    """The runner's CLI on the debug preset in a subprocess, output captured."""
    cmd = [
        sys.executable,
        "-m",
        "experiments.train",
        "--preset",
        "debug",
        "--logdir",
        str(logdir),
        "--run.eval_every",
        "0",
        *args,
    ]
    return subprocess.Popen(
        cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _run(logdir: Path, *extra: str, kill_when=None, timeout: float = 240.0):
    proc = _start(logdir, "--steps", "4800", "--run.save_every", "400", *extra)
    deadline = time.time() + timeout
    killed = False
    while proc.poll() is None and time.time() < deadline:
        if kill_when is not None and kill_when(logdir):
            proc.send_signal(signal.SIGKILL)
            killed = True
            break
        time.sleep(0.005)
    out = proc.communicate(timeout=60)[0]
    if not killed:
        assert proc.returncode == 0, out[-3000:]
    return killed, out


def test_resume_after_sigkill_loses_and_duplicates_nothing(tmp_path):
    logdir = tmp_path / "run"
    # 1) Kill while a checkpoint is being written (orbax's temporary directory exists).
    killed, out = _run(
        logdir,
        kill_when=lambda d: (
            any(p.name.endswith("orbax-checkpoint-tmp") for p in (d / "checkpoints").glob("*"))
            if (d / "checkpoints").exists()
            else False
        ),
    )
    assert killed, out[-2000:]
    first = _ckpt_steps(logdir)
    # 2) Resume, and kill again once a newer checkpoint is complete.
    killed, out = _run(
        logdir,
        kill_when=lambda d: (
            len(_ckpt_steps(d)) and _ckpt_steps(d)[-1] >= (first[-1] if first else 0) + 100
        ),
    )
    assert killed, out[-2000:]
    assert "resumed from checkpoint" in out or not first
    # 3) Resume to the end.
    _, out = _run(logdir)
    assert "resumed from checkpoint" in out
    summary = json.loads(out.strip().splitlines()[-1])
    counters = summary["counters"]
    assert summary["env_steps"] == 4800 and counters["agent_steps"] == 600
    # Updates continue from the checkpointed count, at the configured ratio (1 per agent step
    # after 100 prefill agent steps), whatever the interruptions.
    assert counters["updates"] == 500
    # The replay on disk holds exactly the steps the counters say were stored, no more, no
    # less: one step per agent step (each observation is stored once the policy has seen it,
    # with its posterior as the replay context).
    with Checkpointer(logdir / "checkpoints") as ck:
        meta = ck.restore_meta()
    replay = Replay(100_000, logdir / "replay", 128, 0)
    replay.load(meta["replay"])
    assert len(replay) == counters["stored_steps"]
    assert counters["stored_steps"] == 600
    steps = replay.stream_steps(0)
    assert steps["is_first"][0]
    assert np.all(steps["action"][steps["is_first"]] == 0)
    # No episode in replay is longer than the time limit (125 agent steps + its reset step):
    # a duplicated stretch of steps would make one too long.
    starts = np.flatnonzero(np.append(steps["is_first"], True))
    assert np.diff(starts).max() <= 126


def test_train_in_process_wandb_offline_and_resume_same_run(tmp_path):
    cfg, _ = config_lib.parse_args(
        [
            "--logdir",
            str(tmp_path),
            "--steps",
            "1600",
            "--wandb",
            "offline",
            "--run.eval_every",
            "800",
            "--run.log_every",
            "400",
            "--logging.tensorboard",
            "true",
        ]
    )
    summary = train(cfg, tmp_path)
    assert summary["env_steps"] == 1600
    assert any(b"wm/loss" in p.read_bytes() for p in (tmp_path / "tb").glob("events.out.*"))
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    record = read_offline_run(runs[0])
    assert record["config"]["run"]["steps"] == 1600
    assert record["config"]["model"]["deter"] == 32
    logged = {k for row in record["history"] for k in row}
    assert {"wm/loss", "wm/objective", "eval/return", "episode/return"} <= logged
    # DreamerV3's heads are no normalized densities: no bound is logged, no term is a loglik.
    assert not any(k == "wm/bound" or k.startswith("wm/loglik/") for k in logged)
    jsonl = read_jsonl(tmp_path / "metrics.jsonl")
    evals = [r["eval/return"] for r in jsonl if "eval/return" in r]
    assert len(evals) == 2 and all(0 <= e <= 1000 for e in evals)
    # Extending the run resumes the same wandb run id.
    cfg2 = config_lib.replace(cfg, {"run.steps": 2400})
    summary = train(cfg2, tmp_path)
    assert summary["env_steps"] == 2400
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    ids = {read_offline_run(r)["run_id"] for r in runs}
    assert len(runs) == 2 and len(ids) == 1
    # A changed model is refused with the differing field named, and nothing is lost.
    before = _ckpt_steps(tmp_path)
    with pytest.raises(ConfigMismatch, match=r"model\.deter: saved 32, current 48"):
        train(config_lib.replace(cfg2, {"model.deter": 48}), tmp_path)
    assert _ckpt_steps(tmp_path) == before
    # A checkpoint from before every agent shared AgentState (no 'state_layout' in its meta)
    # is refused by the runner and the evaluator, with the version that reads it named.
    meta_file = tmp_path / "checkpoints" / str(before[-1]) / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    assert meta.pop("state_layout") == 2
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(ConfigMismatch, match=r"layout 1 .*commit 0bdb01e or earlier"):
        train(cfg2, tmp_path)
    from experiments.evaluate import LoadedPolicy

    with pytest.raises(ConfigMismatch, match=r"layout 1"):
        LoadedPolicy(tmp_path)
    assert _ckpt_steps(tmp_path) == before


def test_non_finite_loss_stops_training_and_keeps_checkpoint(tmp_path):
    cfg, _ = config_lib.parse_args(
        [
            "--logdir",
            str(tmp_path),
            "--steps",
            "1600",
            "--run.eval_every",
            "0",
            "--run.save_every",
            "800",
            "--opt.lr",
            "1e30",
        ]
    )
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        train(cfg, tmp_path)
    steps = _ckpt_steps(tmp_path)
    # Only the checkpoint from before the blow-up exists (prefill ends at 800 env steps);
    # checkpoints are numbered in env steps.
    assert steps == [800]


def test_pixels_run_writes_openloop_video(tmp_path):
    cfg, _ = config_lib.parse_args(
        [
            "--logdir",
            str(tmp_path),
            "--obs",
            "pixels",
            "--env.fast_render",
            "true",
            "--steps",
            "1200",
            "--run.prefill",
            "400",
            "--run.video_every",
            "20",
            "--run.eval_every",
            "0",
            "--run.batch_length",
            "8",
        ]
    )
    summary = train(cfg, tmp_path)
    assert summary["counters"]["updates"] > 20
    videos = sorted((tmp_path / "videos").glob("openloop_*.gif"))
    assert videos
    from PIL import Image

    with Image.open(videos[0]) as im:
        assert im.size == (3 * 64, 4 * 64)  # truth | prediction | error, 4 sequences


def test_sigterm_saves_a_final_checkpoint(tmp_path):
    cache = tmp_path.parent / f"{tmp_path.name}-cache"
    proc = _start(
        tmp_path, "--steps", "100000", "--run.save_every", "100000", "--compile-cache", str(cache)
    )
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        rows = (
            read_jsonl(tmp_path / "metrics.jsonl") if (tmp_path / "metrics.jsonl").exists() else []
        )
        if any("wm/loss" in r for r in rows):  # training is under way
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, out[-2000:]
    assert "checkpoint saved" in out
    # The runner reports its startup and fills the persistent compilation cache it was given.
    assert re.search(r"first update done [\d.]+ s after process start", out)
    assert any(cache.iterdir())
    # No periodic save was due: the checkpoint is the one written on the way out.
    steps = _ckpt_steps(tmp_path)
    assert len(steps) == 1 and steps[0] > 100


def test_planet_agent_plans_on_the_categorical_dreamer_world_model(tmp_path):
    cfg, _ = config_lib.parse_args(
        [
            "--preset",
            "dreamerv3",
            "--agent",
            "planet",
            "--logdir",
            str(tmp_path),
            "--task",
            "cartpole-balance",
            "--envs",
            "1",
            "--env.action_repeat",
            "2",
            "--steps",
            "116",
            "--run.prefill",
            "100",
            "--run.batch_size",
            "4",
            "--run.batch_length",
            "8",
            "--run.train_ratio",
            "64",
            "--run.eval_every",
            "0",
            # A narrower model of the same kind (categorical latents, block GRU) compiles and
            # plans faster; the preset's planner settings stay.
            "--model.deter",
            "64",
            "--model.groups",
            "8",
            "--model.units",
            "32",
        ]
    )
    assert cfg.model.latent == "categorical" and cfg.planet.candidates == 1000
    summary = train(cfg, tmp_path)
    # 50 prefill agent steps (repeat 2), then 8 planned ones, each followed by
    # 64 / (4 x 8) = 2 updates.
    assert summary["env_steps"] == 116 and summary["counters"]["updates"] == 16
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert any(np.isfinite(r.get("wm/loss", np.nan)) for r in rows)


def test_same_seed_same_run_and_overlap_changes_nothing(tmp_path):
    def run(name, seed, *extra):
        cfg, _ = config_lib.parse_args(
            [
                "--logdir",
                str(tmp_path / name),
                "--steps",
                "1600",
                "--seed",
                str(seed),
                "--run.eval_every",
                "800",
                "--run.log_every",
                "400",
                *extra,
            ]
        )
        train(cfg, tmp_path / name)
        rows = read_jsonl(tmp_path / name / "metrics.jsonl")
        # Throughput is wall-clock; everything else must repeat.
        return [{k: v for k, v in r.items() if not k.endswith("_per_s")} for r in rows]

    a, b, c = run("a", 3), run("b", 3), run("c", 4)
    assert a == b  # every logged value at every step: losses, returns, evaluation
    assert a != c
    # Dispatching the updates before the environments step computes exactly the same run.
    assert run("d", 3, "--run.overlap", "false") == a


def test_a_resumed_state_lowers_like_a_fresh_one(tmp_path):
    # The persistent compilation cache keys on the lowered program: a resumed run must lower
    # its update exactly as the first launch did, or a second launch compiles everything again.
    import jax

    from experiments.scale import Topology
    from experiments.train import make_agent

    cfg = config_lib.PRESETS["debug"]()
    agent = make_agent(cfg, (("vector", (3,)),), 1)
    topo = Topology.create()
    key = jax.random.key(0)
    abstract = topo.abstract_state(agent.init, key)
    fresh = topo.init_state(agent.init, key)
    with Checkpointer(tmp_path / "ckpt", async_save=False) as ck:
        ck.save(1, fresh, {"note": "x"})
        restored = ck.restore(abstract, 1)[0]
    batch = topo.global_batch(jax.device_get(agent.dummy_batch(cfg.run.batch_size, 4)))
    train = topo.jit_train(agent.update, abstract)
    lowered = lambda s: train.lower(s, batch).as_text(debug_info=False)
    assert lowered(restored) == lowered(fresh)


def test_heldout_gap_on_evaluation_episodes(tmp_path):
    # Density heads everywhere, so the world model's ELBO bounds log p(o, r, c | a): at each
    # evaluation the runner logs the held-out ELBO, IWAE_K and their difference per step.
    common = ["--logdir", str(tmp_path), "--model.vector_dist", "normal"]
    common += ["--model.reward_dist", "normal", "--dreamer.contdisc", "false"]
    gap = ["--run.gap_particles", "16", "--run.gap_sequences", "4"]
    cfg, _ = config_lib.parse_args([*common, *gap, "--steps", "1200", "--run.eval_every", "1200"])
    train(cfg, tmp_path)
    rows = [r for r in read_jsonl(tmp_path / "metrics.jsonl") if "heldout/gap" in r]
    assert len(rows) == 1
    row = rows[0]
    assert row["heldout/iwae"] == pytest.approx(row["heldout/elbo"] + row["heldout/gap"])
    assert np.isfinite(row["heldout/elbo"]) and row["heldout/seconds"] > 0
    # IWAE_16 averaged over 4 windows: not below the ELBO beyond Monte-Carlo noise.
    assert row["heldout/gap"] > -0.05
    # Heads that are not densities are refused before anything starts, naming the fix.
    with pytest.raises(ValueError, match=r"model\.reward_dist normal"):
        config_lib.parse_args(["--logdir", str(tmp_path / "x"), "--run.gap_particles", "8"])
    assert not (tmp_path / "x").exists()


def test_sac_runs_through_the_runner(tmp_path):
    # The runner's own loop with agent sac: prefill, one update per step on pairs of steps,
    # evaluation with the greedy policy; pixels and a replay context are refused up front.
    args = ["--preset", "sac", "--logdir", str(tmp_path), "--task", "cartpole-balance"]
    args += ["--steps", "700", "--run.prefill", "300", "--run.eval_every", "700"]
    args += ["--run.eval_episodes", "1", "--run.batch_size", "32", "--run.train_ratio", "16"]
    args += ["--sac.units", "32", "--run.log_every", "350", "--env.action_repeat", "2"]
    cfg, _ = config_lib.parse_args(args)
    summary = train(cfg, tmp_path)
    assert summary["env_steps"] == 700 and summary["counters"]["updates"] > 0
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert any("eval/return" in r for r in rows) and any("sac/critic_loss" in r for r in rows)
    with pytest.raises(ValueError, match="--obs proprio"):
        config_lib.parse_args(["--preset", "sac", "--logdir", "x", "--obs", "pixels"])
    with pytest.raises(ValueError, match="replay_context 0"):
        config_lib.parse_args(["--preset", "sac", "--logdir", "x", "--model.replay_context", "1"])


def test_logged_metrics_average_the_updates_since_the_last_log(tmp_path):
    # Same seed, same updates: logging every update, and every second update, which must log
    # the mean of the two (debug: one update per agent step of 8 env steps once replay holds
    # a batch, B x T = 64 steps, at 512 env steps).
    def run(name: str, log_every: int) -> dict[int, dict]:
        args = ["--logdir", str(tmp_path / name), "--steps", "640", "--run.prefill", "400"]
        args += ["--run.eval_every", "0", "--run.log_every", str(log_every)]
        cfg, _ = config_lib.parse_args(args)
        train(cfg, tmp_path / name)
        rows = read_jsonl(tmp_path / name / "metrics.jsonl")
        return {r["step"]: r for r in rows if "wm/loss" in r}

    each, pairs = run("each", 8), run("pairs", 16)
    assert len(each) >= 12 and len(pairs) >= 6
    for step, row in pairs.items():
        if step - 8 in each and step in each and step - 16 in pairs:
            for name in ("wm/loss", "actor/actor_loss", "critic/critic_loss"):
                mean = (each[step - 8][name] + each[step][name]) / 2
                assert row[name] == pytest.approx(mean, rel=1e-5, abs=1e-6), (step, name)


def test_resume_drops_the_log_lines_written_after_its_checkpoint(tmp_path):
    from experiments.train import drop_rows_after

    path = tmp_path / "metrics.jsonl"
    rows = [{"step": s, "x": s} for s in (0, 8, 16, 24)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert drop_rows_after(path, 16) == 1
    assert read_jsonl(path) == rows[:3]
    assert drop_rows_after(path, 16) == 0 and drop_rows_after(tmp_path / "none.jsonl", 0) == 0
