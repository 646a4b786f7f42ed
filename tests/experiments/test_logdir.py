"""A logdir is owned by one run and nothing in it is lost: the lock, a fresh start beside an
earlier run's files, a log line cut short, and a replay file gone missing."""

import json
import signal

import pytest
from launch import start, wait_paused

from experiments import config as config_lib
from experiments import train as train_lib
from experiments.replay import chunk_file_name
from experiments.run.logdir import LogdirInUse, LogdirLock
from experiments.run.logging import read_jsonl
from experiments.run.loop import train


def _cfg(logdir, *extra: str):
    # debug without prefill: the first update comes after agent step 79 (env step 632).
    args = ["--preset", "debug", "--agent", "random", "--logdir", str(logdir)]
    args += ["--run.prefill", "0", "--run.eval_every", "0", "--run.log_every", "80", *extra]
    return config_lib.parse_args(args)[0]


def test_a_lock_per_process_id_and_none_after_release(tmp_path):
    first = LogdirLock(tmp_path, 0)
    other = LogdirLock(tmp_path, 1)  # another process id of the same run: its own lock
    with pytest.raises(LogdirInUse, match=r"the process of a run there is running as PID \d+"):
        LogdirLock(tmp_path, 0)
    with pytest.raises(LogdirInUse, match=r"process 1 of a run there is running"):
        LogdirLock(tmp_path, 1)
    first.release()
    other.release()
    LogdirLock(tmp_path, 0).release()  # free again; the file stays, naming its last holder
    assert json.loads((tmp_path / ".lock").read_text())["pid"] > 0


@pytest.mark.slow
def test_a_second_run_on_a_live_logdir_is_refused_and_a_killed_one_resumes(tmp_path, capsys):
    logdir = tmp_path / "run"
    proc = start(
        logdir,
        "--agent",
        "random",
        "--steps",
        "2000",
        "--run.save_every",
        "400",
        pause="env_step@800",
    )
    wait_paused(proc, logdir, "env_step")
    argv = ["--preset", "debug", "--agent", "random", "--logdir", str(logdir), "--seed", "1"]
    assert train_lib.main([*argv, "--steps", "2000"]) == 2
    err = capsys.readouterr().err
    assert f"is in use: the process of a run there is running as PID {proc.pid}" in err
    before = sorted((logdir / "checkpoints").iterdir())
    assert [p.name for p in before] == ["400", "800"]  # the live run's, untouched
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    # The kernel released the killed run's lock: the same command resumes.
    argv = ["--preset", "debug", "--agent", "random", "--logdir", str(logdir)]
    argv += ["--run.eval_every", "0", "--steps", "1200", "--run.save_every", "400"]
    summary = train(config_lib.parse_args(argv)[0], logdir)
    assert summary["env_steps"] == 1200
    assert "resumed from checkpoint at env step 800" in capsys.readouterr().err


def test_a_fresh_start_keeps_earlier_logs_and_files_it_did_not_write(tmp_path, capsys):
    # What a run killed before its first checkpoint leaves, plus a user's own files.
    replay = tmp_path / "replay"
    replay.mkdir(parents=True)
    (replay / "notes.txt").write_text("mine")
    (replay / chunk_file_name(0, 0, 8)).write_bytes(b"a chunk of the killed run")
    (tmp_path / "data.csv").write_text("1,2")
    old_rows = '{"step": 8, "x": 1}\n{"step": 720, "x": 2}\n{"step": 7'  # killed mid-line
    (tmp_path / "metrics.jsonl").write_text(old_rows)
    (tmp_path / "config.json").write_text('{"old": true}')
    summary = train(_cfg(tmp_path, "--steps", "720"), tmp_path)
    assert summary["counters"]["updates"] == (90 - 79)  # iterations 79 .. 89
    err = capsys.readouterr().err
    assert "deleted 1 replay file(s) of an unfinished earlier run" in err
    assert (replay / "notes.txt").read_text() == "mine" and (tmp_path / "data.csv").exists()
    assert not (replay / chunk_file_name(0, 0, 8)).exists()
    [earlier] = (tmp_path / "earlier").iterdir()
    assert f"kept them in {earlier}" in err
    assert (earlier / "metrics.jsonl").read_text() == old_rows  # kept as it was
    assert json.loads((earlier / "config.json").read_text()) == {"old": True}
    steps = [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")]
    assert steps == sorted(steps) and len(steps) == len(set(steps)) and steps[-1] == 720


def test_a_log_line_cut_short_is_dropped_on_resume(tmp_path, capsys):
    train(_cfg(tmp_path, "--steps", "720", "--run.save_every", "400"), tmp_path)
    path = tmp_path / "metrics.jsonl"
    rows = read_jsonl(path)
    with open(path, "a") as f:
        f.write('{"step": 7')  # a kill while writing
    summary = train(_cfg(tmp_path, "--steps", "800"), tmp_path)
    assert summary["env_steps"] == 800
    assert "the last line is cut short" in capsys.readouterr().err
    again = read_jsonl(path)
    assert again[: len(rows)] == rows and again[-1]["step"] == 800


@pytest.mark.slow
def test_a_missing_replay_file_is_named_like_a_damaged_one(tmp_path, capsys):
    train(_cfg(tmp_path, "--steps", "720", "--run.replay_chunk", "32"), tmp_path)
    victim = sorted((tmp_path / "replay").glob("w*.npz"))[1]
    victim.rename(tmp_path / "elsewhere.npz")
    argv = ["--preset", "debug", "--agent", "random", "--logdir", str(tmp_path)]
    argv += ["--run.prefill", "0", "--run.eval_every", "0", "--run.log_every", "80"]
    assert train_lib.main([*argv, "--steps", "800", "--run.replay_chunk", "32"]) == 2
    err = capsys.readouterr().err
    assert f"replay file {tmp_path / 'replay'}" in err and "is missing (FileNotFoundError" in err
    assert "move" in err and "aside and re-run the same command" in err
    assert not (tmp_path / "replay").joinpath(victim.name).exists()
