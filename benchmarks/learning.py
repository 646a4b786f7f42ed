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

os.environ.setdefault("MUJOCO_GL", "egl")


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from device import device_info  # benchmarks/ is on sys.path when a script here runs

from experiments import config as config_lib
from experiments.run.logging import read_jsonl
from experiments.run.loop import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="cartpole-swingup")
    parser.add_argument("--steps", type=int, default=50_000, help="environment steps")
    parser.add_argument("--preset", default="dreamerv3-cpu", help="preset(s), as the runner's")
    parser.add_argument("--agent", default="dreamer", choices=config_lib.AGENTS)
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
    evals = [(r["step"], r["eval/return"]) for r in rows if "eval/return" in r]
    episodes = [(r["step"], r["episode/return"]) for r in rows if "episode/return" in r]
    result = {
        "benchmark": "learning",
        "task": args.task,
        "agent": args.agent,
        "preset": args.preset,
        "seed": args.seed,
        "overrides": [*args.set, *passthrough],
        "device": device_info(),
        "env_steps": summary["env_steps"],
        "updates": summary["counters"]["updates"],
        "wall_s_this_invocation": round(wall, 1),
        "eval_return": [{"env_steps": s, "return": round(v, 1)} for s, v in evals],
        "train_episode_return": [{"env_steps": s, "return": round(v, 1)} for s, v in episodes],
        "best_eval_return": max((v for _, v in evals), default=None),
        "logdir": str(logdir),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
