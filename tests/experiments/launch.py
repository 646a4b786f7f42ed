"""Helpers the runner's tests share: the environment of a spawned run, starting the CLI in a
subprocess, waiting for a named pause point (experiments/pause.py), the checkpoint steps."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_env(devices: int = 1) -> dict[str, str]:
    """os.environ for a spawned run: headless rendering, offline wandb, the suite's compile
    cache, ``devices`` virtual CPU devices."""
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


def start(logdir: Path, *args: str, pause: str = "") -> subprocess.Popen:
    """The runner's CLI on the debug preset in a subprocess, output captured; ``pause`` holds
    it at a named point (experiments/pause.py), announced by a file beside the logdir."""
    cmd = [sys.executable, "-m", "experiments.train", "--preset", "debug"]
    cmd += ["--logdir", str(logdir), "--run.eval_every", "0", *args]
    env = run_env()
    if pause:
        env.update(RSSM_JAX_PAUSE=pause, RSSM_JAX_PAUSE_FILE=str(logdir) + "-pause")
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def wait_paused(proc: subprocess.Popen, logdir: Path, point: str, timeout: float = 240.0):
    """Waits until the run holds at ``point`` (its marker file exists)."""
    marker = Path(f"{logdir}-pause.{point}")
    deadline = time.time() + timeout
    while not marker.exists():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise AssertionError(f"never paused at {point}: {proc.communicate()[0][-3000:]}")
        time.sleep(0.05)
    marker.unlink()


def ckpt_steps(logdir: Path) -> list[int]:
    d = logdir / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.exists() else []
