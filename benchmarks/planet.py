"""PlaNet planning cost: seconds per planned action, printed as one JSON object.

    python benchmarks/planet.py [--calls 5] [--envs 1] [--models planet,size1m]
        [--horizon 12] [--candidates 1000] [--top-k 100] [--iterations 10] [--out FILE]

One call is one ``PlanetAgent.policy`` call in mode 'eval' (no exploration noise); it plans one
action for each of ``--envs`` environments (``*_per_action`` = median per call / envs): a
posterior step on the observation, then CEM over the RSSM prior, I iterations of J candidate
sequences of H imagined steps each (I * J * H = 120,000 ``img_step`` rows at PlaNet's
settings), batched over the J candidates and ``vmap``-ed over the environments. The world model
is freshly initialized: planning cost does not depend on what the weights are.

Models (vector observations of 24 floats and 6 actions, as walker-walk):
  planet   the world model of the ``planet`` preset (``experiments.config.planet().model``):
           Gaussian latent of 30, GRU of 200 (one prior layer, no block layer, as
           ``rssm.planet``), layer norm and ELU, with vector instead of pixel observations.
  size1m   the world model of the ``dreamerv3`` preset: DreamerV3's size1m, 32 x 4
           categorical latent, GRU of 512 in 8 blocks, width 64.

Timing: ``lower_s`` is tracing + lowering, ``compile_s`` the XLA compilation (the persistent
compilation cache is not used, so both are cold); then one untimed warm-up call, then ``calls``
calls each timed to ``block_until_ready``: wall-clock seconds and process CPU seconds (all
threads together, so CPU seconds exceed wall seconds when XLA uses several cores). The machine
may be shared: the 1-minute load average is recorded before and after every model.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from device import device_info

from agents.planet import PlanetAgent, PlanetConfig
from experiments import config as config_lib

VECTOR_DIM = 24  # walker-walk proprioceptive observation size
ACTION_DIM = 6  # walker-walk
# The world models of the presets themselves, so the figures follow any change to them.
MODELS = {
    "planet": config_lib.planet().model,
    "size1m": config_lib.dreamerv3().model,
}


def loadavg() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def stats(seconds: list[float]) -> dict[str, float]:
    """Median, min and max of a list of seconds, rounded to 10 microseconds."""
    s = np.asarray(seconds)
    r = lambda x: round(float(x), 5)
    return {"median": r(np.median(s)), "min": r(s.min()), "max": r(s.max())}


def measure(name: str, cfg: PlanetConfig, envs: int, calls: int, seed: int) -> dict[str, Any]:
    """Compile and time ``calls`` planned actions for ``envs`` environments with model ``name``."""
    load_before = loadavg()
    wm_cfg = MODELS[name]
    agent = PlanetAgent(wm_cfg, cfg, (("vector", (VECTOR_DIM,)),), ACTION_DIM)
    key = jax.random.key(seed)
    k_init, k_obs, k_act = jax.random.split(key, 3)
    state = agent.init(k_init)
    carry = agent.init_carry(envs)
    obs = {
        "vector": jax.random.normal(k_obs, (envs, VECTOR_DIM)),
        "is_first": jnp.zeros((envs,), bool),
    }
    t0 = time.perf_counter()
    lowered = agent.policy.lower(state, carry, obs, k_act, "eval")
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    action, carry = compiled(state, carry, obs, k_act)  # warm-up
    jax.block_until_ready(action)
    wall, cpu = [], []
    for i in range(calls):
        k = jax.random.fold_in(k_act, i)
        w0, c0 = time.perf_counter(), time.process_time()
        action, carry = compiled(state, carry, obs, k)
        jax.block_until_ready((action, carry))
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    rows = cfg.iterations * cfg.candidates * cfg.horizon * envs
    median = float(np.median(wall))
    return {
        "model": name,
        "latent": wm_cfg.latent,
        "deter": wm_cfg.deter,
        "hidden": wm_cfg.hidden,
        "blocks": wm_cfg.blocks,
        "stoch": wm_cfg.stoch if wm_cfg.latent == "gaussian" else wm_cfg.groups * wm_cfg.classes,
        "envs": envs,
        "calls": calls,
        "lower_s": round(t1 - t0, 3),
        "compile_s": round(t2 - t1, 3),
        "wall_s_per_call": stats(wall),
        "cpu_s_per_call": stats(cpu),
        "wall_s_per_action": round(median / envs, 5),
        "cpu_s_per_action": round(float(np.median(cpu)) / envs, 5),
        "img_step_rows_per_s": round(rows / median),
        "action_finite_in_bounds": bool(
            np.all(np.isfinite(np.asarray(action))) and np.all(np.abs(np.asarray(action)) <= 1)
        ),
        "loadavg_1m_before": load_before,
        "loadavg_1m_after": loadavg(),
    }


def _models(value: str) -> list[str]:
    items = [v for v in value.split(",") if v]
    unknown = [v for v in items if v not in MODELS]
    if unknown or not items:
        raise argparse.ArgumentTypeError(
            f"--models {value!r}: unknown {unknown}; give a comma-separated subset of "
            f"{list(MODELS)}"
        )
    return items


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=5, help="timed planned actions per model")
    parser.add_argument("--envs", type=int, default=1, help="environments planned for at once")
    parser.add_argument("--models", type=_models, default=list(MODELS), help=f"from {list(MODELS)}")
    parser.add_argument("--horizon", type=int, default=PlanetConfig.horizon)
    parser.add_argument("--candidates", type=int, default=PlanetConfig.candidates)
    parser.add_argument("--top-k", type=int, default=PlanetConfig.top_k)
    parser.add_argument("--iterations", type=int, default=PlanetConfig.iterations)
    parser.add_argument("--seed", type=int, default=0, help="seed of parameters and keys")
    parser.add_argument("--out", default=None, help="also write the JSON to this file")
    args = parser.parse_args(argv)
    if args.calls < 1 or args.envs < 1:
        parser.error(f"--calls {args.calls} and --envs {args.envs} must both be >= 1")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    cfg = PlanetConfig(
        horizon=args.horizon,
        candidates=args.candidates,
        top_k=args.top_k,
        iterations=args.iterations,
    )
    cfg.validate()
    report = {
        "benchmark": "planet_planning",
        "planner": {k: getattr(cfg, k) for k in ("horizon", "candidates", "top_k", "iterations")},
        "obs": {"vector": VECTOR_DIM},
        "action_dim": ACTION_DIM,
        "device": device_info(),
        "results": [measure(m, cfg, args.envs, args.calls, args.seed) for m in args.models],
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
