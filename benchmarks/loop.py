"""Environment steps per second while training: the host runner against the device loop, as JSON.

    python benchmarks/loop.py [--task mjx:cartpole-swingup] [--preset dreamerv3,size1m]
        [--ratios 32,128,512] [--seeds 1,2,4,8] [--loops host,device] [--steps 6000]
        [--set field=value ...]

Runs the real runner (``experiments.train``) for every (loop, train ratio, seeds K) with
``--run.loop host|device`` on the same JAX task, and reads the runner's own throughput log
(``run/env_steps_per_s``: one seed's environment steps per wall-clock second between two logs)
from every log after training started and after the first (compiling) one. ``total`` is that
rate times K: the environment steps of all seeds. The device loop compiles one program per
setting; its logs come once per chunk (``run.log_every`` env steps). The first update needs
16 x 64 windows (1087 env steps with one environment): --steps must reach past it by a few
logs. With K = 8 the preset's replay capacity (5M steps per seed) exceeds a 24 GiB machine's
memory check: add --set run.replay_capacity=100000 (the figure does not depend on it).
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


def measure(argv: list[str], logdir: Path) -> dict:
    cfg, _ = config_lib.parse_args([*argv, "--logdir", str(logdir)])
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries only this benchmark's JSON
        train(cfg, logdir)
    path = logdir / "metrics.jsonl"
    if not path.exists():  # several seeds: one file per seed, the same rates in each
        path = logdir / "seed0" / "metrics.jsonl"
    rows = [r for r in read_jsonl(path) if r.get("run/updates_per_s", 0) > 0]
    rows = rows[1:]  # the first rate may hold a compilation
    if not rows:
        raise SystemExit(
            f"loop: fewer than two logs with training under way in {argv}: raise --steps"
        )
    rates = [r["run/env_steps_per_s"] for r in rows]
    return {
        "env_steps_per_s": round(float(np.median(rates)), 2),
        "updates_per_s": round(float(np.median([r["run/updates_per_s"] for r in rows])), 3),
        "logs": len(rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="mjx:cartpole-swingup")
    parser.add_argument("--preset", default="dreamerv3,size1m")
    parser.add_argument("--ratios", default="32,128,512")
    parser.add_argument("--seeds", default="1,2,4,8")
    parser.add_argument("--loops", default="host,device")
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--log-every", type=int, default=1000)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    args = parser.parse_args()
    base = ["--preset", args.preset, "--task", args.task, "--steps", str(args.steps)]
    base += ["--run.eval_every", "0", "--run.report_every", "0", "--env.envs", "1"]
    base += ["--run.log_every", str(args.log_every), "--run.save_every", str(10 * args.steps)]
    base += ["--run.prefill", str(args.log_every)]
    for item in args.set:
        name, _, value = item.partition("=")
        base += [f"--{name}", value]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for ratio in [float(r) for r in args.ratios.split(",")]:
            for k in [int(s) for s in args.seeds.split(",")]:
                for loop in args.loops.split(","):
                    argv = [*base, "--run.loop", loop, "--run.train_ratio", str(ratio)]
                    argv += ["--run.seeds", str(k)]
                    out = measure(argv, Path(tmp) / f"{loop}-{ratio}-{k}")
                    out.update(loop=loop, train_ratio=ratio, seeds=k)
                    out["total_env_steps_per_s"] = round(out["env_steps_per_s"] * k, 2)
                    print(json.dumps(out), file=sys.stderr)
                    results.append(out)
    speedups = []
    for r in results:
        if r["loop"] != "device":
            continue
        host = [h for h in results if h["loop"] == "host" and h["train_ratio"] == r["train_ratio"]]
        host = [h for h in host if h["seeds"] == r["seeds"]]
        if host:
            ratio = r["total_env_steps_per_s"] / host[0]["total_env_steps_per_s"]
            speedups.append(
                {
                    "train_ratio": r["train_ratio"],
                    "seeds": r["seeds"],
                    "device_over_host": round(ratio, 2),
                }
            )
    report = {"benchmark": "loop", "device": device_info(), "args": base, "results": results}
    report["speedups"] = speedups
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
