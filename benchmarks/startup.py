"""Seconds from process start to the first training update, first and second launch, as JSON.

    python benchmarks/startup.py [--preset dreamerv3] [--task walker-walk] [-- EXTRA RUNNER ARGS]

Launches ``python -m experiments.train --preset P --task T --logdir DIR --compile-cache CACHE``
with a fresh logdir and an empty compilation cache, waits for the runner's line "first update
done N s after process start", stops it with SIGTERM (it checkpoints), then launches the same
command again (it resumes from the checkpoint, its replay already full enough to train) and
waits for the same line. The first launch compiles every program and collects the first batch
of experience; the second loads the compiled programs from the cache. With ``--no-cache`` both
launches compile (the cache flag turned off).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from device import device_info  # noqa: E402

LINE = re.compile(r"first update done ([\d.]+) s after process start")


def launch(cmd: list[str], timeout: float) -> dict:
    env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"), PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    start = time.time()
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    seconds, tail = None, []
    assert proc.stderr is not None
    for line in proc.stderr:
        tail = [*tail, line][-20:]
        match = LINE.search(line)
        if match:
            seconds = float(match.group(1))
            break
        if time.time() - start > timeout:
            break
    proc.send_signal(signal.SIGTERM)
    try:
        proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
    if seconds is None:
        raise RuntimeError(f"no first update within {timeout} s:\n{''.join(tail)}")
    return {"first_update_s": seconds, "returncode": proc.returncode}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="dreamerv3")
    parser.add_argument("--task", default="walker-walk")
    parser.add_argument("--no-cache", action="store_true", help="launch without the cache")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("extra", nargs="*", help="more runner arguments (after --)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "experiments.train",
            "--preset",
            args.preset,
            "--task",
            args.task,
            "--steps",
            "10000000",
            "--logdir",
            str(Path(tmp) / "run"),
            *(["--no-compile-cache"] if args.no_cache else ["--compile-cache", f"{tmp}/cache"]),
            *args.extra,
        ]
        first = launch(cmd, args.timeout)
        second = launch(cmd, args.timeout)
    print(
        json.dumps(
            {
                "benchmark": "startup",
                "device": device_info(),
                "command": " ".join(cmd[1:]).replace(tmp, "TMP"),
                "compile_cache": not args.no_cache,
                "first_launch_s": first["first_update_s"],
                "second_launch_s": second["first_update_s"],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
