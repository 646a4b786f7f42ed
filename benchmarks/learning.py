"""Learning curve of an agent on a dm-control or Gymnasium task, as JSON.

    python benchmarks/learning.py --task cartpole-swingup --steps 50000 [--preset dreamerv3-cpu]
        [--logdir runs/learning] [--run.eval_every 5000 --dreamer.horizon 15 ...]

Overrides use the runner's syntax (--section.field VALUE); --set FIELD=VALUE works too.

Runs the real runner (``experiments.train``) and prints one JSON object: the evaluation-return
curve (the agent's 'eval' policy) against environment steps, episode returns during training, wall
time, env steps/s and updates/s. Re-running with the same ``--logdir`` resumes the run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from device import device_info  # benchmarks/ is on sys.path when a script here runs

from experiments import config as config_lib
from experiments.config.validate import AGENTS
from experiments.run.logging import read_jsonl
from experiments.run.loop import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="cartpole-swingup")
    parser.add_argument("--steps", type=int, default=50_000, help="environment steps")
    parser.add_argument("--preset", default="dreamerv3-cpu", help="preset(s), as the runner's")
    parser.add_argument("--agent", default="dreamer", choices=AGENTS)
    parser.add_argument("--logdir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="any config override, e.g. run.train_ratio=256",
    )
    # Any other --section.field VALUE goes to the runner as it is (the runner's own syntax).
    args, passthrough = parser.parse_known_args()
    logdir = Path(args.logdir or f"runs/learning-{args.task}-{args.agent}-s{args.seed}")
    argv = [
        "--preset",
        args.preset,
        "--logdir",
        str(logdir),
        "--task",
        args.task,
        "--steps",
        str(args.steps),
        "--seed",
        str(args.seed),
        "--agent",
        args.agent,
        "--run.eval_every",
        str(max(1000, args.steps // 20)),
        "--run.eval_episodes",
        "5",
    ]
    for item in args.set:
        name, _, value = item.partition("=")
        argv += [f"--{name}", value]
    argv += passthrough
    cfg, _ = config_lib.parse_args(argv)
    start = time.time()
    summary = train(cfg, logdir)
    wall = time.time() - start
    rows = read_jsonl(logdir / "metrics.jsonl")
    run = {"task": args.task, "agent": args.agent, "preset": args.preset, "seed": args.seed}
    run["overrides"] = [*args.set, *passthrough]
    print(json.dumps(curves(run, summary, rows, wall, args.steps, logdir)))


def curves(run: dict, summary: dict, rows: list[dict], wall: float, steps: int, logdir) -> dict:
    """The result: the run's settings, its counts, the evaluation and training-episode curves,
    and the benchmarks' own (Atari scores, Crafter's achievements) where the rows have them."""
    evals = [(r["step"], r["eval/return"]) for r in rows if "eval/return" in r]
    episodes = [(r["step"], r["episode/return"]) for r in rows if "episode/return" in r]
    result = {
        "benchmark": "learning",
        **run,
        "device": device_info(),
        "env_steps": summary["env_steps"],
        "updates": summary["counters"]["updates"],
        "wall_s_this_invocation": round(wall, 1),
        "eval_return": [{"env_steps": s, "return": round(v, 1)} for s, v in evals],
        "train_episode_return": [{"env_steps": s, "return": round(v, 1)} for s, v in episodes],
        "best_eval_return": max((v for _, v in evals), default=None),
        "logdir": str(logdir),
    }
    scores = [(r["step"], r["episode/score"]) for r in rows if "episode/score" in r]
    if scores:  # Atari: the unclipped game score of each training episode
        result["train_episode_score"] = [{"env_steps": s, "score": v} for s, v in scores]
    result.update(achievement_summary(rows, steps))
    return result


def achievement_summary(rows: list[dict], steps: int, tail: float = 0.25) -> dict:
    """Crafter's metrics from the runner's episode rows: the success rates (percent) and the
    Crafter score over all training episodes (the benchmark's definition, as logged) and over
    the episodes that ended in the last ``tail`` of the steps (what the agent does by then).

    The rows log each achievement's rate over every episode so far, r_t = 100 u_t / n_t, with
    n_t the episodes so far (``episode/count``); u_t = r_t n_t / 100 recovers
    the counts, and a window's rate is 100 (u_end - u_start) / (n_end - n_start)."""
    from experiments.run.episodes import crafter_score

    marked = [
        (r["step"], int(r["episode/count"]), r) for r in rows if "achievements/crafter_score" in r
    ]
    if not marked:
        return {}
    names = sorted(k.split("/", 1)[1] for k in marked[-1][2] if k.startswith("achievements/"))
    names.remove("crafter_score")

    def unlocked(n: int, row: dict) -> np.ndarray:
        return np.array([row.get(f"achievements/{k}", 0.0) * n / 100.0 for k in names])

    _, n_end, row_end = marked[-1]
    before = [m for m in marked if m[0] <= (1.0 - tail) * steps]
    n_start, u_start = (before[-1][1], unlocked(*before[-1][1:])) if before else (0, 0.0)
    window = n_end - n_start
    rates_tail = np.round(100.0 * (unlocked(n_end, row_end) - u_start) / max(window, 1), 2)
    return {
        "episodes": n_end,
        "crafter_score": round(row_end["achievements/crafter_score"], 3),
        "achievement_rates": {k: round(row_end[f"achievements/{k}"], 2) for k in names},
        "tail_fraction": tail,
        "tail_episodes": window,
        "tail_crafter_score": round(crafter_score(np.clip(rates_tail, 0, 100)), 3),
        "tail_achievement_rates": dict(zip(names, rates_tail.tolist(), strict=True)),
        "crafter_score_curve": [
            {"env_steps": s, "episodes": n, "score": round(r["achievements/crafter_score"], 3)}
            for s, n, r in marked[:: max(1, len(marked) // 50)]
        ],
    }


if __name__ == "__main__":
    main()
