"""Environment throughput: agent and environment steps per second, printed as one JSON object.

    python benchmarks/envs.py [--steps 2000] [--pixel-steps 200] [--suite-steps 500] [--envs 2]
        [--only proprio,pixels,atari_crafter,replay]

An agent step applies one action for `action_repeat` environment (physics control, or Atari
frame) steps, so
env steps/s = agent steps/s x action_repeat. Rates count steps summed over all environments of a
batch; the auto-reset steps (which run no physics) are excluded from both counts. Process start-up
is reported separately (`startup_s`) and excluded from the rates, as are a few warm-up steps
(the first render creates the OpenGL context).

The output is assembled from section functions (`SECTIONS`): each takes the parsed arguments and
returns a JSON-able dict, or None to be left out. Add a section by writing a function and
listing it in `SECTIONS`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from experiments.envs.vec import make_envs

WARMUP_STEPS = 10


def machine_info() -> dict[str, Any]:
    """CPU count, platform and library versions, with the load average (machines are shared)."""
    from importlib.metadata import PackageNotFoundError, version

    import mujoco

    def maybe_version(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "mujoco": mujoco.__version__,
        "dm_control": version("dm-control"),
        "ale_py": maybe_version("ale-py"),
        "crafter": maybe_version("crafter"),
        "mujoco_gl": os.environ.get("MUJOCO_GL"),
        "loadavg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def measure_env_throughput(
    task: str,
    obs: str,
    num_envs: int,
    parallel: bool,
    steps: int,
    fast_render: bool = False,
    seed: int = 0,
    kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Step ``num_envs`` environments ``steps`` times with uniform random actions [steps, N, A]
    (discrete envs take their argmax). ``kwargs``: further `make_envs` keyword arguments (image
    size, gray, action_repeat, time_limit, atari options), reported under "kwargs".

    agent_steps = number of non-reset transitions over all environments;
    env_steps = agent_steps x action_repeat; rates are these divided by the timed seconds.
    """
    kwargs = dict(kwargs or {})
    start = time.perf_counter()
    envs = make_envs(task, obs, num_envs, seed, parallel, fast_render=fast_render, **kwargs)
    with envs:
        startup = time.perf_counter() - start
        rng = np.random.default_rng(seed)
        shape = (WARMUP_STEPS + steps, num_envs, envs.act_dim)
        actions = rng.uniform(-1.0, 1.0, shape).astype(np.float32)
        start = time.perf_counter()
        envs.reset()
        first_reset = time.perf_counter() - start
        for action in actions[:WARMUP_STEPS]:
            envs.step(action)
        transitions = 0
        start = time.perf_counter()
        for action in actions[WARMUP_STEPS:]:
            out = envs.step(action)
            transitions += int(num_envs - out["is_first"].sum())
        seconds = time.perf_counter() - start
        repeat = envs.action_repeat
    return {
        "task": task,
        "obs": obs,
        "num_envs": num_envs,
        "parallel": parallel,
        "fast_render": fast_render,
        "action_repeat": repeat,
        "agent_steps": transitions,
        "timed_resets": steps * num_envs - transitions,
        "env_steps": transitions * repeat,
        "seconds": round(seconds, 3),
        "agent_steps_per_s": round(transitions / seconds, 1),
        "env_steps_per_s": round(transitions * repeat / seconds, 1),
        "startup_s": round(startup, 3),
        "first_reset_s": round(first_reset, 3),
        **({"kwargs": kwargs} if kwargs else {}),
    }


def _configs(n: int) -> list[tuple[str, int, bool]]:
    """(label, num_envs, parallel): one in-process environment, then n in parallel."""
    return [("1_env", 1, False), (f"{n}_envs_parallel", n, True)]


def proprio_throughput(args: argparse.Namespace) -> dict[str, Any]:
    """State observations: walker-walk (repeat 2) and cartpole-swingup (repeat 8)."""
    results = {}
    for task in ("walker-walk", "cartpole-swingup"):
        for label, n, parallel in _configs(args.envs):
            results[f"{task}/{label}"] = measure_env_throughput(
                task, "proprio", n, parallel, args.steps, seed=args.seed
            )
    return results


def pixel_throughput(args: argparse.Namespace) -> dict[str, Any]:
    """64x64 walker-walk images with dm-control's default visuals and with `fast_render`."""
    steps = args.pixel_steps if args.pixel_steps is not None else max(args.steps // 10, 1)
    results = {}
    for fast, look in ((False, "default"), (True, "fast_render")):
        for label, n, parallel in _configs(args.envs):
            results[f"walker-walk/{look}/{label}"] = measure_env_throughput(
                "walker-walk", "pixels", n, parallel, steps, fast_render=fast, seed=args.seed
            )
    return results


# Benchmark suites: the settings of experiments.config's Atari 100k, full Atari and Crafter runs.
_ATARI_OPTIONS = dict(lives="unused", noops=30, clip_reward=False)
SUITE_SETTINGS: dict[str, tuple[str, dict[str, Any]]] = {
    # DreamerV3's atari100k: 64x64 colour, no sticky actions, the game's minimal action set.
    "atari100k/pong": (
        "atari:pong",
        dict(
            action_repeat=4,
            size=(64, 64),
            gray=False,
            time_limit=0,
            atari=dict(sticky=False, actions="needed", **_ATARI_OPTIONS),
        ),
    ),
    # Full Atari (Machado et al. 2018): 96x96 gray, sticky actions, all 18 actions.
    "atari_full/pong": (
        "atari:pong",
        dict(
            action_repeat=4,
            size=(96, 96),
            gray=True,
            time_limit=0,
            atari=dict(sticky=True, actions="all", **_ATARI_OPTIONS),
        ),
    ),
    # Crafter: 64x64 colour, one step per action, 10,000-step episodes.
    "crafter/reward": ("crafter:reward", dict(size=(64, 64), gray=False, time_limit=0)),
}


def suite_throughput(args: argparse.Namespace) -> dict[str, Any]:
    """Atari (pong, Atari 100k and full settings) and Crafter (reward) 64x64 / 96x96 images.

    Timed over ``--suite-steps`` agent steps. A Crafter reset generates a world (~1 s): the first
    is reported as ``first_reset_s`` beside ``startup_s``; episodes last up to 10,000 steps but
    a random agent dies sooner, and the auto-resets inside the timed steps (``timed_resets``)
    are timed, so they weigh on Crafter's rates.
    """
    results = {}
    for name, (task, kwargs) in SUITE_SETTINGS.items():
        for label, n, parallel in _configs(args.envs):
            results[f"{name}/{label}"] = measure_env_throughput(
                task, "pixels", n, parallel, args.suite_steps, seed=args.seed, kwargs=kwargs
            )
    return results


# ---------------------------------------------------------------------------------------------
# Replay sampling (slot for a later section)


def replay_throughput(args: argparse.Namespace) -> dict[str, Any] | None:
    """Replay: sequences/s of sample(16, 64) over stored 64x64x3 pixel steps, and add steps/s.

    Steps come from 4 worker streams written to a temporary directory in chunks, as in a run.
    """
    import tempfile

    from experiments.replay import Replay

    rng = np.random.default_rng(args.seed)
    stored, workers, batch, length = 20_000, 4, 16, 64
    frames = rng.integers(0, 256, (64, 64, 64, 3), dtype=np.uint8)  # reused image content
    with tempfile.TemporaryDirectory() as tmp:
        replay = Replay(stored, tmp, chunk_size=1024, seed=args.seed)
        start = time.perf_counter()
        for i in range(stored // workers):
            replay.add_batch(
                {
                    "image": frames[(i + np.arange(workers)) % len(frames)],
                    "action": rng.uniform(-1, 1, (workers, 6)).astype(np.float32),
                    "reward": np.zeros(workers, np.float32),
                    "is_first": np.full(workers, i % 500 == 0),
                    "is_last": np.zeros(workers, bool),
                    "is_terminal": np.zeros(workers, bool),
                }
            )
        add_s = time.perf_counter() - start
        replay.sample(batch, length)  # warm-up
        times = []
        for _ in range(30):
            t0 = time.perf_counter()
            replay.sample(batch, length)
            times.append(time.perf_counter() - t0)
    median = float(np.median(times))
    return {
        "stored_steps": stored,
        "workers": workers,
        "batch": [batch, length],
        "bytes_per_step": replay.bytes_per_step,
        "add_steps_per_s_with_disk": round(stored / add_s, 1),
        "sample_median_s": round(median, 5),
        "sample_p10_p90_s": [round(float(np.percentile(times, q)), 5) for q in (10, 90)],
        "sequences_per_s": round(batch / median, 1),
        "batches_per_s": round(1 / median, 1),
    }


# ---------------------------------------------------------------------------------------------

SECTIONS: dict[str, Callable[[argparse.Namespace], dict[str, Any] | None]] = {
    "proprio": proprio_throughput,
    "pixels": pixel_throughput,
    "atari_crafter": suite_throughput,
    "replay": replay_throughput,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--steps", type=int, default=2000, help="timed agent steps per environment (proprio)"
    )
    parser.add_argument(
        "--pixel-steps",
        type=int,
        default=None,
        help="timed agent steps per environment for pixel sections (default: steps // 10)",
    )
    parser.add_argument(
        "--suite-steps",
        type=int,
        default=500,
        help="timed agent steps per environment for the Atari and Crafter section",
    )
    parser.add_argument("--envs", type=int, default=2, help="environments in the parallel runs")
    parser.add_argument("--seed", type=int, default=0, help="environment and action seed")
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to run, from: {', '.join(SECTIONS)}",
    )
    args = parser.parse_args(argv)
    if (
        args.steps < 1
        or args.envs < 1
        or args.suite_steps < 1
        or (args.pixel_steps is not None and args.pixel_steps < 1)
    ):
        parser.error("--steps, --pixel-steps, --suite-steps and --envs must be >= 1")
    unknown = set(args.only.split(",")) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {list(SECTIONS)}")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    report: dict[str, Any] = {"benchmark": "envs", "machine": machine_info(), "args": vars(args)}
    start = time.perf_counter()
    for name in args.only.split(","):
        result = SECTIONS[name](args)
        if result is not None:
            report[name] = result
    report["total_s"] = round(time.perf_counter() - start, 1)
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return report


if __name__ == "__main__":
    # The guard matters: parallel environments start with 'spawn', which re-imports this file.
    main()
