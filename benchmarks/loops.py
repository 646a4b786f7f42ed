"""Whether XLA runs two independent loops of one program at the same time, printed as JSON.

    python benchmarks/loops.py [--steps 400] [--reps 20]

One jitted program with one scan of ``h = tanh(h @ W)`` at batch 16 (latency-bound, as the
observe scan is) and one with two such scans that share nothing. Two loops taking twice one's
time means they run one after the other: on such a backend a latency-bound scan cannot hide
behind other work of the same update.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax
import jax.numpy as jnp
import numpy as np
from device import device_info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    w = jax.random.normal(jax.random.key(0), (256, 256)) * 256**-0.5

    def loop(x):
        return jax.lax.scan(lambda c, _: (jnp.tanh(c @ w), None), x, None, length=args.steps)[0]

    def timed(fn, *xs) -> float:
        fn = jax.jit(fn)
        jax.block_until_ready(fn(*xs))
        times = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*xs))
            times.append(time.perf_counter() - t0)
        return float(np.median(times))

    x, y = jnp.ones((16, 256)), jnp.full((16, 256), 0.5)
    one = timed(loop, x)
    two = timed(lambda a, b: (loop(a), loop(b)), x, y)
    report = {
        "benchmark": "loops",
        "device": device_info(),
        "steps": args.steps,
        "one_loop_s": round(one, 6),
        "two_independent_loops_s": round(two, 6),
        "ratio": round(two / one, 2),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
