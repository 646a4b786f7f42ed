"""Environment steps per second while training, with and without overlap, as JSON.

    python benchmarks/collect.py [--preset dreamerv3] [--task walker-walk] [--steps 6000]
        [--rounds 2] [--overlap both|true|false] [--set field=value ...]

    e.g. (benchmarks/results/collect_cpu_*.json): --steps 3000 --rounds 1 --set env.envs=1
        --set env.action_repeat=2 --set run.train_ratio=512

Runs the real runner (``experiments.train``) for ``--steps`` environment steps with
``run.overlap`` on and off, alternately (``--rounds`` each, fresh logdirs), and reads the
runner's own throughput log (``run/env_steps_per_s``, ``run/updates_per_s``: wall-clock rates
between two logs) from every log after training started. Both settings compute the same run;
only the order of the host's environment steps and the device's updates differs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from device import device_info

from experiments import config as config_lib
from experiments.run.logging import read_jsonl
from experiments.run.loop import train


def run(argv: list[str], logdir: Path) -> dict:
    cfg, _ = config_lib.parse_args([*argv, "--logdir", str(logdir)])
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries only this benchmark's JSON
        train(cfg, logdir)
    rows = [r for r in read_jsonl(logdir / "metrics.jsonl") if "run/env_steps_per_s" in r]
    rows = [r for r in rows if r.get("run/updates_per_s", 0) > 0]  # training under way
    if not rows:
        raise SystemExit(
            f"collect: no log with training under way in {argv}; training starts once replay "
            "holds run.batch_size x run.batch_length agent steps: raise --steps"
        )
    return {
        "env_steps_per_s": float(np.median([r["run/env_steps_per_s"] for r in rows])),
        "updates_per_s": float(np.median([r["run/updates_per_s"] for r in rows])),
        "logs": len(rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="dreamerv3")
    parser.add_argument("--task", default="walker-walk")
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument(
        "--overlap",
        choices=("both", "true", "false"),
        default="both",
        help="run.overlap settings to time (one setting: no speedup figure)",
    )
    args = parser.parse_args()
    argv = ["--preset", args.preset, "--task", args.task, "--steps", str(args.steps)]
    argv += ["--run.eval_every", "0", "--run.log_every", str(max(200, args.steps // 20))]
    for item in args.set:
        name, _, value = item.partition("=")
        argv += [f"--{name}", value]
    settings = [("sequential", "false"), ("overlap", "true")]
    settings = [(n, f) for n, f in settings if args.overlap in ("both", f)]
    results: dict[str, list] = {name: [] for name, _ in settings}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name, flag in settings:
                out = run([*argv, "--run.overlap", flag], Path(tmp) / f"{name}{r}")
                results[name].append(out)
    summary = {
        name: {
            "env_steps_per_s": round(float(np.median([x["env_steps_per_s"] for x in rows])), 2),
            "updates_per_s": round(float(np.median([x["updates_per_s"] for x in rows])), 3),
            "runs": rows,
        }
        for name, rows in results.items()
    }
    report = {"benchmark": "collect", "device": device_info(), "args": argv, **summary}
    if len(summary) == 2:
        ratio = summary["overlap"]["env_steps_per_s"] / summary["sequential"]["env_steps_per_s"]
        report["speedup"] = round(ratio, 3)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
