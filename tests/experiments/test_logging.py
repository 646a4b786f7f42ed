"""Logger outputs (jsonl, console, GIF, offline wandb run), open-loop grids, the run reader."""

import math
import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from wandb_reader import read_offline_run

import agents  # noqa: F401  (imported, as in every run: wandb must not read it as an LLM library)
from experiments.run.logging import Logger, console_line, read_jsonl
from experiments.run.openloop import openloop_grid

CONFIG = {
    "model": {"deter": 64, "latent": {"classes": 8}, "acts": ["silu", "elu"]},
    "run": {"seed": 3, "steps": 1000},
    "env": "cartpole_swingup",
    "lr": 3e-4,
}


def test_scalars_go_to_jsonl_and_console(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with Logger(tmp_path, CONFIG) as logger:
        assert re.fullmatch(r"[a-z0-9]{8}", logger.run_id)
        logger.scalars(0, {"loss": np.float32(0.5), "kl": jnp.asarray(1.25), "updates": 3})
        logger.scalars(np.int64(10), {"loss": float("nan"), "ret": -float("inf")})
        with pytest.raises(TypeError, match=r"'vec' has shape \(2,\)"):
            logger.scalars(11, {"vec": np.zeros(2)})
    out = capsys.readouterr().out
    assert "[step 0] loss 0.5\n" in out  # the console shows losses, returns and rates only
    assert "[step 10] loss nan\n" in out

    # A second logger on the same logdir (a resumed run) appends.
    with Logger(tmp_path, CONFIG) as logger:
        logger.scalars(20, {"loss": 0.125})
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 10, 20]
    assert rows[0] == {"step": 0, "loss": 0.5, "kl": 1.25, "updates": 3.0}
    assert set(rows[1]) == {"step", "loss", "ret"}
    assert math.isnan(rows[1]["loss"]) and rows[1]["ret"] == -math.inf
    assert rows[2] == {"step": 20, "loss": 0.125}
    assert not (tmp_path / "wandb").exists()  # disabled means wandb is never started

    logger.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        logger.scalars(30, {"loss": 1.0})
    with pytest.raises(ValueError, match="wandb_mode must be one of"):
        Logger(tmp_path, CONFIG, wandb_mode="offlne")


def test_console_line_shows_returns_losses_and_rates() -> None:
    row = {
        "wm/loss": 2.14159,
        "wm/kl": 0.9,
        "actor/actor_loss": 0.70784,
        "run/updates_per_s": 19.668,
        "episode/return": 202.44,
        "run/env_steps_per_s": 157.35,
        "eval/return": 226.2,
        "replay/steps": 500.0,
    }
    assert console_line(4000, row) == (
        "[step 4000] return 202.4 | eval return 226.2 | wm/loss 2.14  actor/actor_loss 0.708 | "
        "157 env steps/s, 19.7 updates/s"
    )
    assert console_line(500, {"replay/steps": 63.0, "openloop/vector_mse_h1": 1.0}) is None


def test_openloop_grid_layout_and_error_panel() -> None:
    rng = np.random.default_rng(0)
    b, t, h, w, c = 2, 4, 3, 5, 3
    truth = rng.uniform(size=(b, t, h, w, c)).astype(np.float32)
    pred = truth.copy()
    # Batch element 1 is maximally wrong after step 2: black truth, white prediction.
    truth[1, 2:] = 0.0
    pred[1, 2:] = 1.0

    grid = openloop_grid(truth, pred)
    assert grid.shape == (t, b * h, 3 * w, c)
    assert grid.dtype == np.uint8
    for i in range(b):
        rows = grid[:, i * h : (i + 1) * h]
        np.testing.assert_array_equal(rows[:, :, :w], np.round(truth[i] * 255))
        np.testing.assert_array_equal(rows[:, :, w : 2 * w], np.round(pred[i] * 255))
    error = grid[:, :, 2 * w :]
    assert np.all(error[:, :h] == 0)  # batch 0: pred == truth everywhere
    assert np.all(error[:2, h:] == 0)  # batch 1 before the divergence
    assert np.all(error[2:, h:] == 255)

    # uint8 inputs mean the same as their /255 floats.
    truth8 = np.round(truth * 255).astype(np.uint8)
    pred8 = np.round(pred * 255).astype(np.uint8)
    np.testing.assert_array_equal(
        openloop_grid(truth8, pred8), openloop_grid(truth8 / 255.0, pred8 / 255.0)
    )
    with pytest.raises(ValueError, match=r"\[B, T, H, W, C\]"):
        openloop_grid(truth, pred[:, :3])


def test_video_writes_gif_with_every_frame(tmp_path: Path) -> None:
    t, h, w = 6, 16, 20
    # Solid, distinct colours: the GIF palette holds them exactly.
    colours = np.array([[i * 40, 255 - i * 40, (i * 97) % 256] for i in range(t)], np.uint8)
    frames = np.broadcast_to(colours[:, None, None, :], (t, h, w, 3)).astype(np.float32) / 255
    with Logger(tmp_path, CONFIG) as logger:
        path = logger.video(1234, "eval/openloop", frames, fps=10)
    assert path == str(tmp_path / "videos" / "eval_openloop_000001234.gif")
    with Image.open(path) as gif:
        assert gif.n_frames == t
        assert gif.size == (w, h)
        for i in range(t):
            gif.seek(i)
            assert gif.info["duration"] == 100
            rgb = np.asarray(gif.convert("RGB"))
            assert rgb.shape == (h, w, 3)
            np.testing.assert_array_equal(rgb, np.broadcast_to(colours[i], (h, w, 3)))
    with Logger(tmp_path, CONFIG) as logger, pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
        logger.video(0, "bad", np.zeros((h, w, 3), np.uint8))


def _run_dirs(logdir: Path, run_id: str) -> list[Path]:
    return sorted((logdir / "wandb").glob(f"offline-run-*-{run_id}*"))


def test_wandb_offline_run_reads_back(
    tmp_path: Path, capfd: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_SILENT", "false")  # wandb's messages shown, as in a real run
    # A config value larger than two 32 KiB blocks forces FIRST/MIDDLE/LAST fragments, and
    # many steps make records straddle block boundaries.
    config = {**CONFIG, "notes": "x" * 70_000}
    steps = range(0, 400, 2)
    with Logger(tmp_path, config, wandb_mode="offline", tags=("test",)) as logger:
        for step in steps:
            logger.scalars(step, {"loss": 1.0 / (step + 1), "kl": step * 0.25})
        frames = np.zeros((3, 8, 8, 3), np.uint8)
        frames[1] = 128
        frames[2] = 255
        logger.video(400, "openloop", frames)
        logger.scalars(400, {"loss": float("nan")})
        run_id = logger.run_id

    # wandb's "Detected [agents] in use ... Weave" banner does not appear.
    assert "Weave" not in "".join(capfd.readouterr())
    (run_dir,) = _run_dirs(tmp_path, run_id)
    run_file = next(run_dir.glob("run-*.wandb"))
    assert run_file.name == f"run-{run_id}.wandb"
    assert run_file.stat().st_size > 3 * 32768
    run = read_offline_run(run_dir)
    assert run["run_id"] == run_id
    assert run["config"] == config

    # The x axis is the metric env_steps (wandb's own step just counts the calls).
    by_step = {row["env_steps"]: row for row in run["history"]}
    assert sorted(by_step) == [*steps, 400]
    for i, step in enumerate(steps):
        row = {"step": i, "env_steps": step, "loss": 1.0 / (step + 1), "kl": step * 0.25}
        assert by_step[step] == row
    last = {}  # the video and the last scalars: two calls at env step 400
    for row in run["history"]:
        if row["env_steps"] == 400:
            last.update(row)
    assert math.isnan(last["loss"])
    assert last["openloop"]["_type"] == "video-file"
    assert (run_dir / "files" / last["openloop"]["path"]).is_file()

    # The reader checks every record's checksum.
    corrupt = tmp_path / "corrupt.wandb"
    data = bytearray(run_file.read_bytes())
    data[40] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum mismatch"):
        read_offline_run(corrupt)


def test_wandb_resume_uses_the_same_run_id(tmp_path: Path) -> None:
    with Logger(tmp_path, CONFIG, wandb_mode="offline") as first:
        first.scalars(0, {"loss": 2.0})
        first.scalars(1, {"loss": 1.5})
    with Logger(tmp_path, CONFIG, wandb_mode="offline", run_id=first.run_id) as second:
        assert second.run_id == first.run_id
        # Resumed from a checkpoint before the killed run's last log: an earlier step is kept.
        second.scalars(1, {"loss": 1.25})
        second.scalars(2, {"loss": 1.0})

    runs = [read_offline_run(d) for d in _run_dirs(tmp_path, first.run_id)]
    assert len(runs) == 2
    assert {run["run_id"] for run in runs} == {first.run_id}
    histories = sorted(
        [[(row["env_steps"], row["loss"]) for row in run["history"]] for run in runs], key=str
    )
    assert histories == [[(0, 2.0), (1, 1.5)], [(1, 1.25), (2, 1.0)]]
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [0, 1, 1, 2]


def test_tensorboard_event_files(tmp_path: Path) -> None:
    import struct

    from tensorboardX.proto import event_pb2

    with Logger(tmp_path, CONFIG, tensorboard=True) as logger:
        logger.scalars(10, {"wm/loss": 2.5, "eval/return": 7.0})
        logger.scalars(20, {"wm/loss": 1.5})
    (path,) = (tmp_path / "tb").glob("events.out.tfevents.*")
    data, i, seen = path.read_bytes(), 0, []
    while i < len(data):  # TFRecord: length u64, its crc, the Event proto, its crc
        n = struct.unpack("<Q", data[i : i + 8])[0]
        event = event_pb2.Event()
        event.ParseFromString(data[i + 12 : i + 12 + n])
        seen += [(event.step, v.tag, v.simple_value) for v in event.summary.value]
        i += 16 + n
    assert seen == [(10, "wm/loss", 2.5), (10, "eval/return", 7.0), (20, "wm/loss", 1.5)]


def test_wandb_online_without_login_logs_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    # (A login with an unreachable server takes the same path after wandb's init timeout,
    # 90 s by default: too slow for the suite.)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))  # no ~/.netrc: no stored login
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(home))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    with Logger(tmp_path / "run", CONFIG, wandb_mode="online") as logger:
        assert logger.wandb_mode == "offline"
        logger.scalars(0, {"loss": 2.0})
    err = capsys.readouterr().err
    assert "warning: wandb online failed" in err and "wandb sync" in err
    [run] = _run_dirs(tmp_path / "run", logger.run_id)
    assert [row["loss"] for row in read_offline_run(run)["history"]] == [2.0]
