"""What names a run outside its logdir: the wandb id that survives a kill, sweeps, logdir
placeholders, the default group and tags, the code's git state."""

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from launch import ROOT, start
from wandb_reader import read_offline_run

from experiments import config as config_lib
from experiments.errors import ConfigError
from experiments.run import identity


def _debug():
    return config_lib.compose("debug")


def test_logdir_placeholders(monkeypatch) -> None:
    cfg = config_lib.replace(_debug(), {"env.task": "gym:CartPole-v1", "run.seed": 7})
    monkeypatch.setattr(
        time, "gmtime", lambda *_: time.struct_time((2026, 12, 6, 9, 3, 4, 6, 340, 0))
    )
    out = identity.expand_logdir(
        "runs/{preset}/{task}-s{seed}-{agent}/{timestamp}-{run_id}",
        cfg,
        "dreamerv3,size12m",
        "ab12cd34",
    )
    assert out == "runs/dreamerv3-size12m/gym-CartPole-v1-s7-dreamer/20261206-090304-ab12cd34"
    assert identity.expand_logdir("runs/plain", cfg, "debug", "x") == "runs/plain"
    with pytest.raises(ConfigError, match=r"placeholder \{date\}; known are \{timestamp\}"):
        identity.expand_logdir("runs/{date}", cfg, "debug", "x")
    with pytest.raises(ConfigError, match="not a valid template"):
        identity.expand_logdir("runs/{seed", cfg, "debug", "x")


def test_default_group_and_tags() -> None:
    cfg = identity.with_wandb_defaults(_debug(), "debug")
    assert cfg.logging.group == "debug-cartpole-balance"
    assert cfg.logging.tags == ("dreamer", "debug", "cartpole-balance")
    mine = config_lib.replace(
        _debug(), {"logging.group": "ablation", "logging.tags": ("a", "debug")}
    )
    mine = identity.with_wandb_defaults(mine, "debug")
    assert mine.logging.group == "ablation"  # a group the user gave stays
    assert mine.logging.tags == ("a", "debug", "dreamer", "cartpole-balance")


def test_sweep_agent_gives_the_run_id(monkeypatch) -> None:
    monkeypatch.delenv("WANDB_SWEEP_ID", raising=False)
    monkeypatch.setenv("WANDB_RUN_ID", "notasweep")
    assert identity.sweep_run_id() is None  # WANDB_RUN_ID alone is not a sweep
    monkeypatch.setenv("WANDB_SWEEP_ID", "sw33p")
    monkeypatch.setenv("WANDB_RUN_ID", "r4nd0m12")
    assert identity.sweep_run_id() == "r4nd0m12"


def _readme_sweep() -> dict:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    (sweep,) = [yaml.safe_load(b) for b in blocks if "command:" in b]
    return sweep


def test_readme_sweep_command_line_parses() -> None:
    sweep = _readme_sweep()
    # What a wandb agent runs: the command with ${args} as --name=value of one draw.
    draw = {}
    for name, spec in sweep["parameters"].items():
        draw[name] = spec["values"][-1] if "values" in spec else spec["min"]
    argv = []
    for item in sweep["command"]:
        if item == "${args}":
            argv += [f"--{name}={value}" for name, value in draw.items()]
        elif item not in ("${env}", "${interpreter}", "python", "-m", "experiments.train"):
            argv.append(item)
    cfg, args = config_lib.parse_args(argv)
    for name, value in draw.items():
        section, field = name.split(".")
        assert getattr(getattr(cfg, section), field) == pytest.approx(value), name
    assert "{run_id}" in args.logdir
    logdir = identity.expand_logdir(args.logdir, cfg, args.preset, "r4nd0m12")
    assert logdir.endswith("r4nd0m12") and "{" not in logdir


def test_git_state_of_a_checkout(tmp_path: Path) -> None:
    assert identity.git_state(tmp_path) is None  # not a checkout (an installed package)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q", "-b", "trunk"], cwd=tmp_path, check=True)
    (tmp_path / "f.py").write_text("a = 1\n")
    subprocess.run([*git, "add", "f.py"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "c"], cwd=tmp_path, check=True)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True
    ).stdout.strip()
    assert identity.git_state(tmp_path) == {"commit": head, "branch": "trunk", "dirty": False}
    (tmp_path / "f.py").write_text("a = 2\n")
    state = identity.git_state(tmp_path)
    assert state["dirty"] and "-a = 1\n+a = 2" in state["diff"]
    logdir = tmp_path / "run"
    logdir.mkdir()
    identity.record_git_state(logdir, 800, state)
    (line,) = [json.loads(x) for x in (logdir / "git.jsonl").read_text().splitlines()]
    assert line["commit"] == head and line["env_step"] == 800 and line["dirty"]
    assert (logdir / line["diff_file"]).read_text() == state["diff"]


@pytest.mark.slow
def test_a_run_killed_before_its_first_checkpoint_resumes_into_its_wandb_run(tmp_path) -> None:
    logdir = tmp_path / "run"
    args = ("--agent", "random", "--wandb", "offline", "--run.save_every", "1000000")
    proc = start(logdir, *args, "--steps", "1000000")
    deadline = time.time() + 240
    while not (logdir / "metrics.jsonl").exists() or not (logdir / "metrics.jsonl").stat().st_size:
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[0][-2000:]
        time.sleep(0.1)
    first = json.loads((logdir / "wandb.json").read_text())["run_id"]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (logdir / "checkpoints").exists() or not any((logdir / "checkpoints").iterdir())
    again = start(logdir, *args, "--steps", "1200")
    out = again.communicate()[0]
    assert again.returncode == 0, out[-2000:]
    assert json.loads((logdir / "wandb.json").read_text())["run_id"] == first
    runs = sorted((logdir / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and runs[-1].name.endswith(first)
    assert read_offline_run(runs[-1])["run_id"] == first
