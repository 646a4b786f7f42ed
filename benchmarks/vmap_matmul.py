"""What K seeds cost in one program: a matmul with K weight sets (``vmap`` over seeds, as
``--run.seeds K`` runs them) against K times the rows through one weight set, printed as JSON.

    python benchmarks/vmap_matmul.py [--seeds 1,2,4,8] [--reps 50]

Two shapes of the size1m update: a 64-step scan of ``h = tanh(h @ W)`` at batch 16 (the
observe scan: small, latency-bound products) and one ``[1024, 512] @ [512, 1536]`` product (an
imagination step). For each K: seconds with K weight sets ``[K, ...]`` (each seed its own
parameters: the products stay K separate products of one seed's shape) and with one weight
set and K times the rows (one product K times taller), each relative to K = 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax
import jax.numpy as jnp
import numpy as np
from device import device_info


def _time(fn, *args, reps: int) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _scan(h: jax.Array, w: jax.Array) -> jax.Array:
    """64 steps of h <- tanh(h @ w): h [B, D], w [D, D]."""
    return jax.lax.scan(lambda c, _: (jnp.tanh(c @ w), None), h, None, length=64)[0]


def case(k: int, reps: int) -> dict[str, Any]:
    keys = jax.random.split(jax.random.key(k), 4)
    d = 512
    w_seeds = jax.random.normal(keys[0], (k, d, d)) * d**-0.5
    h_seeds = jax.random.normal(keys[1], (k, 16, d))
    big_w = jax.random.normal(keys[2], (k, d, 3 * d)) * d**-0.5
    x_seeds = jax.random.normal(keys[3], (k, 1024, d))
    per_seed_scan = jax.jit(jax.vmap(_scan))
    shared_scan = jax.jit(_scan)
    per_seed_mm = jax.jit(jax.vmap(jnp.matmul))
    shared_mm = jax.jit(jnp.matmul)
    h_rows, x_rows = h_seeds.reshape(k * 16, d), x_seeds.reshape(k * 1024, d)
    return {
        "seeds": k,
        "scan_per_seed_weights_s": _time(per_seed_scan, h_seeds, w_seeds, reps=reps),
        "scan_shared_weights_s": _time(shared_scan, h_rows, w_seeds[0], reps=reps),
        "matmul_per_seed_weights_s": _time(per_seed_mm, x_seeds, big_w, reps=reps),
        "matmul_shared_weights_s": _time(shared_mm, x_rows, big_w[0], reps=reps),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2,4,8")
    parser.add_argument("--reps", type=int, default=50)
    args = parser.parse_args()
    rows = [case(int(k), args.reps) for k in args.seeds.split(",") if k]
    one = rows[0] if rows and rows[0]["seeds"] == 1 else None
    for row in rows:
        for name in [n for n in row if n.endswith("_s")]:
            row[name] = round(row[name], 6)
            if one:
                row[name[: -len("_s")] + "_vs_one"] = round(row[name] / one[name], 2)
    print(json.dumps({"benchmark": "vmap_matmul", "device": device_info(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
