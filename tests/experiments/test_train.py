"""The runner end to end: CLI, resume after SIGKILL, wandb offline, bad input, pixels."""

import json
import re
import signal
from pathlib import Path

import numpy as np
import pytest
from launch import ckpt_steps, start, wait_paused
from wandb_reader import read_offline_run

from experiments import config as config_lib
from experiments.config.validate import first_update_iteration
from experiments.replay import Replay
from experiments.run.checkpoint import Checkpointer
from experiments.run.compat import ConfigMismatch
from experiments.run.identity import with_wandb_defaults
from experiments.run.logging import read_jsonl
from experiments.run.loop import train


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
    with pytest.raises(ValueError, match="did you mean 'walker-walk'"):
        config_lib.parse_args(["--logdir", "x", "--task", "walker-walkk"])
    with pytest.raises(ValueError, match="batch_length"):
        config_lib.parse_args(["--logdir", "x", "--run.batch_length", "1"])
    for preset in config_lib.PRESETS.values():
        as_dict = config_lib.to_dict(preset())
        assert config_lib.to_dict(config_lib.from_dict(as_dict)) == as_dict
    # A config saved before a section existed reads back with that section's defaults, so
    # checkpoints of older runs stay resumable.
    old = config_lib.to_dict(cfg)
    del old["planet"]
    assert config_lib.from_dict(old) == cfg
    with pytest.raises(ValueError, match="no fields"):
        config_lib.from_dict({**old, "colour": "red"})


def _run(logdir: Path, *extra: str, kill_at: str = "") -> str:
    """A 2400-step run of the world-model agent saving every 400 env steps; with ``kill_at``
    SIGKILLed when it holds at that pause point. Returns its output."""
    args = ("--agent", "random", "--steps", "2400", "--run.save_every", "400", *extra)
    proc = start(logdir, *args, pause=kill_at)
    if kill_at:
        wait_paused(proc, logdir, kill_at.split("@")[0])
        proc.send_signal(signal.SIGKILL)
    out = proc.communicate(timeout=240)[0]
    assert proc.returncode == (-signal.SIGKILL if kill_at else 0), out[-3000:]
    return out


@pytest.mark.slow
def test_resume_after_sigkill_loses_and_duplicates_nothing(tmp_path):
    logdir = tmp_path / "run"
    # 1) Killed while checkpoint 1200 is being written (orbax's temporary directory exists).
    _run(logdir, kill_at="checkpoint_write@1200")
    assert ckpt_steps(logdir)[-1] == 800
    assert (logdir / "checkpoints" / "1200.orbax-checkpoint-tmp").is_dir()
    # 2) Resumed from 800, killed again between steps once checkpoint 1600 is complete.
    out = _run(logdir, kill_at="env_step@1800")
    assert "resumed from checkpoint at env step 800" in out
    assert ckpt_steps(logdir)[-1] == 1600

    # 3) Resume to the end.
    out = _run(logdir)
    assert "resumed from checkpoint at env step 1600" in out
    summary = json.loads(out.strip().splitlines()[-1])
    counters = summary["counters"]
    assert summary["env_steps"] == 2400 and counters["agent_steps"] == 300
    # Updates continue from the checkpointed count, at the configured ratio (1 per agent step
    # after 100 prefill agent steps), whatever the interruptions.
    assert counters["updates"] == 200
    # The replay on disk holds exactly the steps the counters say were stored, no more, no
    # less: one step per agent step (each observation is stored once the policy has seen it,
    # with its posterior as the replay context).
    with Checkpointer(logdir / "checkpoints") as ck:
        meta = ck.restore_meta()
    replay = Replay(100_000, logdir / "replay", 128, 0)
    replay.load(meta["replay"])
    assert len(replay) == counters["stored_steps"]
    assert counters["stored_steps"] == 300
    steps = replay.stream_steps(0)
    assert steps["is_first"][0]
    assert np.all(steps["action"][steps["is_first"]] == 0)
    # No episode in replay is longer than the time limit (125 agent steps + its reset step):
    # a duplicated stretch of steps would make one too long.
    starts = np.flatnonzero(np.append(steps["is_first"], True))
    assert np.diff(starts).max() <= 126


@pytest.mark.slow
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
            "--logging.artifacts",
            "true",
        ]
    )
    cfg = with_wandb_defaults(cfg, "debug")
    summary = train(cfg, tmp_path)
    assert summary["env_steps"] == 1600
    events = b"".join(p.read_bytes() for p in (tmp_path / "tb").glob("events.out.*"))
    assert b"wm/loss" in events
    # The media, also in TensorBoard: the report's PNG and the evaluation's GIF, as encoded.
    png = (tmp_path / "images" / "openloop_curves_000001000.png").read_bytes()
    gif = (tmp_path / "videos" / "eval_video_000000800.gif").read_bytes()
    assert png in events and gif in events
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    record = read_offline_run(runs[0])
    # The debug preset's default run shows every kind of media of a proprio run: the open-loop
    # picture (at its report_every, 1000) and an evaluation video at each evaluation.
    media = {
        (k, row["env_steps"]): row[k]["_type"]
        for row in record["history"]
        for k in row
        if isinstance(row[k], dict)
    }
    assert media == {
        ("openloop/curves", 1000): "image-file",
        ("eval/video", 800): "video-file",
        ("eval/video", 1600): "video-file",
    }
    assert "openloop/vector_mse_h5" in {k for row in record["history"] for k in row}
    assert record["metrics"]["eval/return"] == ["max", "last"]
    assert record["group"] == "debug-cartpole-balance"
    assert record["tags"] == ["dreamer", "debug", "cartpole-balance"]
    # --logging.artifacts: each checkpoint (1000, then the final 1600) as an artifact.
    assert [sorted(a["aliases"]) for a in record["artifacts"]] == [
        ["latest", "step-1000"],
        ["latest", "step-1600"],
    ]
    assert {a["type"] for a in record["artifacts"]} == {"model"}
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
    before = ckpt_steps(tmp_path)
    with pytest.raises(ConfigMismatch, match=r"model\.deter: saved 32, current 48"):
        train(config_lib.replace(cfg2, {"model.deter": 48}), tmp_path)
    assert ckpt_steps(tmp_path) == before
    # A checkpoint from before every agent shared AgentState (no 'state_layout' in its meta)
    # is refused by the runner and the evaluator, with the version that reads it named.
    meta_file = tmp_path / "checkpoints" / str(before[-1]) / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    assert meta.pop("state_layout") == 3
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(ConfigMismatch, match=r"layout 1, .*commit 0bdb01e or earlier"):
        train(cfg2, tmp_path)
    from experiments.evaluate import LoadedPolicy

    with pytest.raises(ConfigMismatch, match=r"layout 1"):
        LoadedPolicy(tmp_path)
    assert ckpt_steps(tmp_path) == before


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
    steps = ckpt_steps(tmp_path)
    # Only the checkpoint from before the blow-up exists (prefill ends at 800 env steps);
    # checkpoints are numbered in env steps.
    assert steps == [800]


@pytest.mark.slow
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
            "560",
            "--run.prefill",
            "400",
            "--run.report_every",
            "480",
            "--run.eval_every",
            "560",
            "--run.batch_length",
            "8",
            "--wandb",
            "offline",
        ]
    )
    summary = train(cfg, tmp_path)
    assert summary["counters"]["updates"] > 20
    from PIL import Image

    # Reports at the first update from env step 480: a video of the images, the curves' picture
    # (reward and continue), errors by horizon; and the evaluation's video at 560.
    with Image.open(tmp_path / "videos" / "openloop_video_000000480.gif") as im:
        assert im.size == (3 * 64, 4 * 64)  # truth | prediction | error, 4 sequences
        assert im.n_frames > 1
    with Image.open(tmp_path / "videos" / "eval_video_000000560.gif") as im:
        assert im.size == (64, 64)  # what the agent observed
    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    history = read_offline_run(run)["history"]
    media = {(k, row["env_steps"]) for row in history for k in row if isinstance(row[k], dict)}
    assert media == {
        ("openloop/video", 480),
        ("openloop/curves", 480),
        ("eval/video", 560),
    }
    errors = {k for row in history for k in row if k.startswith("openloop/image_mse")}
    # batch_length 8 = 5 observed + 3 imagined steps: horizons 1 and 5 do not both fit.
    assert errors == {"openloop/image_mse_context", "openloop/image_mse_h1"}


@pytest.mark.slow
def test_signals_save_a_final_checkpoint_and_a_second_one_waits_for_it(tmp_path):
    logdir, cache = tmp_path / "run", tmp_path / "cache"
    args = ("--agent", "random", "--steps", "100000", "--run.save_every", "100000")
    proc = start(logdir, *args, "--compile-cache", str(cache), pause="env_step@1000,final_save")
    wait_paused(proc, logdir, "env_step")  # training is under way
    proc.send_signal(signal.SIGTERM)  # stop: the final save begins, and holds
    wait_paused(proc, logdir, "final_save")
    proc.send_signal(signal.SIGINT)  # a second signal inside the save
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, out[-2000:]
    assert "checkpoint saved" in out and "KeyboardInterrupt" not in out
    # The runner reports its startup and fills the persistent compilation cache it was given.
    assert re.search(r"first update done [\d.]+ s after process start", out)
    assert any(cache.iterdir())
    # No periodic save was due: the one checkpoint is the final one, complete, with the
    # counters of the step the signal arrived at.
    assert ckpt_steps(logdir) == [1000]
    with Checkpointer(logdir / "checkpoints") as ck:
        assert ck.restore_meta()["counters"]["agent_steps"] * 8 == 1000
    assert not list((logdir / "checkpoints").glob("*orbax-checkpoint-tmp*"))
    # Outside a save, a second signal stops at once: no final checkpoint, the one the run
    # resumed from stays its latest.
    proc = start(logdir, *args, pause="env_step@1800")
    wait_paused(proc, logdir, "env_step")
    # Both signals pending before either is handled (stopped, then continued): the second
    # lands before the final save begins, never inside it. Different numbers: pending
    # signals of one number merge.
    proc.send_signal(signal.SIGSTOP)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGCONT)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode != 0 and "KeyboardInterrupt" in out, out[-2000:]
    assert ckpt_steps(logdir) == [1000]


@pytest.mark.slow
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


@pytest.mark.slow
def test_same_seed_same_run_and_overlap_changes_nothing(tmp_path):
    def run(name, seed, *extra):
        cfg, _ = config_lib.parse_args(
            [
                "--logdir",
                str(tmp_path / name),
                "--steps",
                "1200",
                "--seed",
                str(seed),
                "--run.eval_every",
                "1200",
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

    # Dispatching the updates before the environments step computes exactly the same run (an
    # open-loop report then comes before, not after, the episode row of its step).
    def rows_by_step(rows):
        return sorted(rows, key=lambda r: (r["step"], json.dumps(r, sort_keys=True)))

    assert rows_by_step(run("d", 3, "--run.overlap", "false")) == rows_by_step(a)


def test_a_resumed_state_lowers_like_a_fresh_one(tmp_path):
    # The persistent compilation cache keys on the lowered program: a resumed run must lower
    # its update exactly as the first launch did, or a second launch compiles everything again.
    import jax

    from experiments.config import make_agent
    from experiments.run.scale import Topology

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
    # A bound in nats per step: unit-variance Normals over cartpole's 5 observation dimensions
    # and the reward give at most 6 x -log(2 pi) / 2 = -5.51, the Bernoulli and -KL at most 0.
    assert -1e3 < row["heldout/elbo"] <= -3 * np.log(2 * np.pi)
    assert row["heldout/seconds"] > 0
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
    # a batch, B x T = 64 windows of 17 steps, after 80 agent steps at 632 env steps).
    def run(name: str, log_every: int) -> dict[int, dict]:
        args = ["--logdir", str(tmp_path / name), "--steps", "760", "--run.prefill", "400"]
        args += ["--run.eval_every", "0", "--run.log_every", str(log_every)]
        cfg, _ = config_lib.parse_args(args)
        train(cfg, tmp_path / name)
        rows = read_jsonl(tmp_path / name / "metrics.jsonl")
        return {r["step"]: r for r in rows if "wm/loss" in r}

    each, pairs = run("each", 8), run("pairs", 16)
    assert len(each) >= 12 and len(pairs) >= 6
    compared = 0
    for step, row in pairs.items():
        if step - 8 in each and step in each and step - 16 in pairs:
            for name in ("wm/loss", "actor/actor_loss", "critic/critic_loss"):
                mean = (each[step - 8][name] + each[step][name]) / 2
                assert row[name] == pytest.approx(mean, rel=1e-5, abs=1e-6), (step, name)
            compared += 1
    assert compared >= 4  # the two runs' logs line up: the means were checked


def test_first_update_comes_when_replay_holds_a_batch_of_windows():
    # DreamerV3 2024 (16 envs, windows of 64 + 1 steps): 16 (i + 1 - 64) >= 16 x 64 at
    # iteration i = 127, env step 127 x 16 = 2,032 (twice the 64 steps a stream needed when
    # stored steps were counted). The 2023 code (4 envs, windows of 64, 100-transition prefill
    # chunks of 25 iterations): 4 (i - 63) >= 1024 at i = 319, rounded up to the chunk, 325:
    # 325 x 4 x repeat 2 = 2,600 env steps of random actions.
    v3 = config_lib.dreamerv3()
    assert first_update_iteration(v3.run, 1, 1, 16) == 127
    v3a = config_lib.dreamerv3_2023()
    assert first_update_iteration(v3a.run, 0, 2, 4) == 325
    # debug's prefill in env steps over 2 processes of 3 envs at repeat 8: 1600 / 48 = 33.3,
    # so iteration 34; this process's 2 x 16 windows of 16 steps come at 15 + 11 = 26 steps.
    run = config_lib.replace(config_lib.debug(), {"run.prefill": 1600}).run
    assert first_update_iteration(run, 0, 8, 3, processes=2, local_batch=2) == 34
    run = config_lib.replace(config_lib.debug(), {"run.prefill": 0}).run
    assert first_update_iteration(run, 0, 8, 3, processes=2, local_batch=2) == 25


@pytest.mark.parametrize(("to_batch", "first"), [(False, 37), (True, 68)])
def test_training_and_random_prefill_end_when_the_windows_are_there(tmp_path, to_batch, first):
    # debug with 3 envs: B x T = 4 x 16 windows of 16 + 1 steps need 16 + ceil(64 / 3) = 38
    # steps per stream: the first update follows iteration 37. With run.prefill_to_batch (the
    # 2023 code's prefill loop) the random policy is checked every ceil(100 / 3) = 34
    # iterations, and it ends, and training starts, at iteration 68. One update per agent
    # step: 3 per iteration, up to iteration 69 (70 x 3 x repeat 8 = 1680 env steps).
    args = ["--logdir", str(tmp_path), "--steps", "1680", "--run.prefill", "0", "--envs", "3"]
    args += ["--run.prefill_to_batch", str(to_batch), "--run.eval_every", "0"]
    cfg, _ = config_lib.parse_args(args)
    assert first_update_iteration(cfg.run, 1, 8, 3) == first
    summary = train(cfg, tmp_path)
    assert summary["counters"]["updates"] == (70 - first) * 3
    assert summary["counters"]["prefilled"] == int(to_batch)


def test_resume_drops_the_log_lines_written_after_its_checkpoint(tmp_path):
    from experiments.run.logging import drop_rows_after

    path = tmp_path / "metrics.jsonl"
    rows = [{"step": s, "x": s} for s in (0, 8, 16, 24)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert drop_rows_after(path, 16) == 1
    assert read_jsonl(path) == rows[:3]
    assert drop_rows_after(path, 16) == 0 and drop_rows_after(tmp_path / "none.jsonl", 0) == 0


@pytest.mark.slow
def test_a_damaged_checkpoint_falls_back_to_the_one_before(tmp_path, capsys):
    def cfg(steps: int):
        args = ["--preset", "debug", "--agent", "random", "--logdir", str(tmp_path)]
        args += ["--steps", str(steps), "--run.save_every", "400", "--run.eval_every", "0"]
        return config_lib.parse_args(args)[0]

    train(cfg(1600), tmp_path)
    assert ckpt_steps(tmp_path) == [800, 1200, 1600]
    # Garbage over the state's files of the latest checkpoint (committed, then damaged).
    for f in (tmp_path / "checkpoints" / "1600" / "state").rglob("*"):
        if f.is_file() and f.name != "commit_success.txt":
            f.write_bytes(b"\0garbage")
    # Evaluation falls back the same way (it moves nothing), or names the complete steps.
    from experiments.evaluate import LoadedPolicy

    assert LoadedPolicy(tmp_path).step == 150  # 1200 env steps / repeat 8
    assert "evaluating checkpoint 1200 instead" in capsys.readouterr().err
    with pytest.raises(
        ValueError, match=r"checkpoint 1600 .* pass --step with one of \[800, 1200\]"
    ):
        LoadedPolicy(tmp_path, step=1600)
    summary = train(cfg(2000), tmp_path)
    err = capsys.readouterr().err
    assert "warning: checkpoint 1600" in err and "resuming from env step 1200" in err
    assert "resumed from checkpoint at env step 1200" in err
    assert summary["env_steps"] == 2000 and summary["counters"]["agent_steps"] == 250
    kept = tmp_path / "checkpoints-damaged" / "1600"
    assert (kept / "state").is_dir()  # moved aside, not deleted
    assert ckpt_steps(tmp_path) == [1200, 1600, 2000]  # 1600 written again, whole
    # A damaged meta file falls back the same way.
    (tmp_path / "checkpoints" / "2000" / "meta" / "metadata").write_text("{not json")
    train(cfg(2400), tmp_path)
    assert "resuming from env step 1600" in capsys.readouterr().err
    assert (tmp_path / "checkpoints-damaged" / "2000").is_dir()
    # The only checkpoint damaged: refused by name, nothing moved.
    only = tmp_path / "only"
    keep_one = {"run.keep_checkpoints": 1}
    train(config_lib.replace(cfg(1200), keep_one), only)
    (only / "checkpoints" / "1200" / "meta" / "metadata").write_text("")
    with pytest.raises(ConfigMismatch, match=r"checkpoint 1200, the only one, does not restore"):
        train(config_lib.replace(cfg(1600), keep_one), only)
    assert ckpt_steps(only) == [1200] and not (only / "checkpoints-damaged").exists()


@pytest.mark.slow
def test_a_full_disk_stops_the_run_with_the_checkpoints_before_it_intact(tmp_path):
    import resource

    logdir = tmp_path / "run"
    args = ("--agent", "random", "--steps", "4000", "--run.save_every", "400")
    proc = start(logdir, *args, pause="env_step@1200")
    wait_paused(proc, logdir, "env_step")
    before = ckpt_steps(logdir)
    assert before[-1] == 1200
    state_bytes = max(
        f.stat().st_size for f in (logdir / "checkpoints" / "1200").rglob("*") if f.is_file()
    )
    # From now on no file of the process may grow past a size below the checkpoint's largest
    # file: its writes fail as on a full disk (EFBIG), whichever write comes first.
    limit = state_bytes // 2
    resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (limit, limit))
    Path(f"{logdir}-pause.env_step.go").touch()  # release the run
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 1, out[-3000:]
    # One line names the checkpoint, the cause and the fix, and nothing else (orbax's threads
    # log their own tracebacks, which are left out).
    assert "Traceback" not in out, out[-3000:]
    [line] = [x for x in out.splitlines() if x.startswith("error: ")]
    assert "writing checkpoint 1600" in line and "File too large (errno 27)" in line, line
    assert f"{ckpt_steps(logdir)} are unchanged" in line
    assert "re-run the same command to resume from the latest" in line
    assert ckpt_steps(logdir) == before  # nothing complete was lost
    # With space again, the same command resumes from the latest complete checkpoint.
    proc = start(logdir, *args, "--steps", "1600")
    out = proc.communicate(timeout=240)[0]
    assert proc.returncode == 0, out[-3000:]
    assert "resumed from checkpoint at env step 1200" in out


@pytest.mark.slow
def test_a_damaged_replay_file_is_named_and_nothing_is_changed(tmp_path, capsys):
    from experiments.train import main

    args = ["--preset", "debug", "--agent", "random", "--logdir", str(tmp_path)]
    args += ["--run.save_every", "400", "--run.eval_every", "0", "--run.replay_chunk", "32"]
    assert main([*args, "--steps", "1200"]) == 0
    chunks = sorted((tmp_path / "replay").glob("w*.npz"))
    assert len(chunks) > 2
    chunks[1].write_bytes(chunks[1].read_bytes()[:100])  # truncated
    before = {p: p.read_bytes() for p in (tmp_path / "replay").iterdir()}
    assert main([*args, "--steps", "1600"]) == 2
    err = capsys.readouterr().err
    assert f"error: replay file {chunks[1]} is damaged (BadZipFile" in err
    assert {p: p.read_bytes() for p in (tmp_path / "replay").iterdir()} == before
    assert ckpt_steps(tmp_path)[-1] == 1200
    # The fix the message names: the replay moved aside, the agent resumes, replay refills.
    (tmp_path / "replay").rename(tmp_path / "replay-damaged")
    assert main([*args, "--steps", "1600"]) == 0
    err = capsys.readouterr().err
    assert "resumed from checkpoint at env step 1200" in err and "empty replay" in err
    assert ckpt_steps(tmp_path)[-1] == 1600


@pytest.mark.slow
def test_exact_resume_after_sigkill_is_bit_for_bit_the_uninterrupted_run(tmp_path):
    """run.exact_resume: killed after a checkpoint and resumed, a run ends with the parameters
    and logs of the same run never interrupted, bit for bit on the CPU."""
    # Logs every 500 env steps: the checkpoint at 1200 holds the partial sums of the updates
    # since the log at 1000 (updates start after the 800 prefill steps).
    args = ("--steps", "1800", "--run.save_every", "600", "--run.log_every", "500")
    args += ("--run.exact_resume", "true", "--seed", "3")
    # (The evaluation at 1800 comes after the checkpoint the killed run resumes from.)
    args += ("--run.eval_every", "1800", "--run.eval_episodes", "1")

    def finish(proc):
        out = proc.communicate(timeout=300)[0]
        assert proc.returncode == 0, out[-3000:]
        return json.loads(out.strip().splitlines()[-1])

    whole = finish(start(tmp_path / "whole", *args))
    proc = start(tmp_path / "cut", *args, pause="env_step@1304")
    wait_paused(proc, tmp_path / "cut", "env_step")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert ckpt_steps(tmp_path / "cut")[-1] == 1200
    resumed = finish(start(tmp_path / "cut", *args))
    assert resumed["params_sha256"] == whole["params_sha256"]
    assert resumed["counters"] == whole["counters"]
    # The logs: every row the same but the wall-clock throughput.
    clock = ("run/env_steps_per_s", "run/updates_per_s")

    def rows(name):
        out = [{k: v for k, v in r.items() if k not in clock} for r in _jsonl(tmp_path / name)]
        return [r for r in out if len(r) > 1]

    assert rows("cut") == rows("whole")
    assert any("eval/return" in r for r in rows("whole")) and any(
        "wm/loss" in r and 1200 < r["step"] < 1800 for r in rows("whole")
    )


def _jsonl(logdir: Path) -> list[dict]:
    return read_jsonl(logdir / "metrics.jsonl")
