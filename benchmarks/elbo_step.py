"""World-model training step time: one -ELBO gradient step + Adam, printed as one JSON object.

    python benchmarks/elbo_step.py [--steps 5] [--image-steps N] [--batch 16] [--length 64]
        [--only vector|image] [--sizes size1m,size12m] [--dtypes float32,bfloat16]
        [--cache DIR] [--out FILE]

For every (observation, size, dtype) combination it builds a DreamerV3-style world model from
``rssm`` alone (encoder -> RSSM.observe -> decoder, reward and continue heads), and times

    params, opt_state = adam(params, opt_state, grad_params -ELBO(params; batch, key))

jit-compiled once with ``donate_argnums`` on (params, opt_state), on a synthetic batch
``[B, T] = [16, 64]`` that stays on the device (host-to-device transfer is not timed). The loss
is ``rssm.sequential_elbo`` with DreamerV3's weights: reconstruction, reward and continue terms
scaled 1, free nats 1, beta_dyn 0.5, beta_rep 0.1.

Observations:
  vector  24 floats; encoder MLP(3 layers, symlog inputs), decoder Head 'symlog_mse' (24,).
  image   64x64x3 floats in [-0.5, 0.5]; ConvEncoder, ConvDecoder + MSEDist over [64, 64, 3].
Sizes: ``rssm.dreamer(size)`` for the RSSM; CNN ``depth`` and MLP/head ``units`` from DreamerV3's
size table (``NET_SIZES``). Dtypes: the compute dtype of the RSSM and every net; parameters,
optimizer state, latent statistics and losses stay float32.

Timing: ``lower_s`` is tracing + lowering, ``compile_s`` the XLA compilation; then one untimed
warm-up call (``first_call_s``), then ``steps`` calls each timed to ``block_until_ready`` on the
new parameters, optimizer state and loss. On CPU the image runs default to at most
``CPU_IMAGE_STEPS`` timed steps (a size12m image step takes tens of seconds there); the number
actually timed is always in the output as ``steps``. The persistent compilation cache is off
unless ``--cache DIR`` is given, so compile times are cold by default. The machine may be
shared: the 1-minute load average is recorded before and after every combination.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from device import device_info

import rssm

Array = jax.Array
Batch = dict[str, Array]

VECTOR_DIM = 24  # proprioceptive observation size (walker-walk has 24)
IMAGE_SHAPE = (64, 64, 3)
ACTION_DIM = 6  # walker-walk
CPU_IMAGE_STEPS = 2  # default cap on timed image steps on CPU
# DreamerV3 (2024 release, configs.yaml): CNN base depth and MLP/head units per model size.
NET_SIZES = {
    "size1m": (4, 64),
    "size12m": (16, 256),
    "size25m": (24, 384),
    "size50m": (32, 512),
}
ENC_DEC_LAYERS = 3  # DreamerV3 'simple' encoder/decoder MLP layers
HEAD_LAYERS = 1  # DreamerV3 reward and continue heads
SCALES = {"obs": 1.0, "reward": 1.0, "cont": 1.0}
FREE_NATS, BETA_DYN, BETA_REP = 1.0, 0.5, 0.1
LEARNING_RATE = 4e-5  # DreamerV3 world-model learning rate
OBS_KINDS = ("vector", "image")
RSSM_FIELDS = ("deter", "hidden", "classes")  # order of rssm.DREAMER_SIZES entries
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class BenchWorldModel(nn.Module):
    """Encoder + RSSM + decoder, reward and continue heads; returns the -ELBO loss.

    ``__call__(batch, key) -> (loss, metrics)`` with batch entries ``obs [B, T, *obs_shape]``,
    ``action [B, T, A]`` (a_{t-1}), ``is_first [B, T]``, ``reward [B, T]``, ``cont [B, T]``:

        loss = mean_{B,T} [ -sum_k scale_k log p_k(x_t | h_t, s_t)
                            + beta_dyn max(free, KL(sg q || p))
                            + beta_rep max(free, KL(q || sg p)) ]
    """

    obs_kind: str = "vector"
    size: str = "size1m"
    action_dim: int = ACTION_DIM
    dtype: Any = jnp.float32

    def setup(self) -> None:
        depth, units = NET_SIZES[self.size]
        dt = self.dtype
        self.rssm = rssm.dreamer(self.size, self.action_dim, dtype=dt)
        if self.obs_kind == "vector":
            self.encoder = rssm.MLP(ENC_DEC_LAYERS, units, symlog_inputs=True, dtype=dt)
            self.decoder = rssm.Head((VECTOR_DIM,), "symlog_mse", ENC_DEC_LAYERS, units, dtype=dt)
        elif self.obs_kind == "image":
            self.encoder = rssm.ConvEncoder(depth, dtype=dt)
            self.decoder = rssm.ConvDecoder(
                depth,
                channels=IMAGE_SHAPE[-1],
                size=IMAGE_SHAPE[:2],
                deter=self.rssm.deter,
                units=units,
                dtype=dt,
            )
        else:
            raise ValueError(f"obs_kind={self.obs_kind!r}; expected one of {OBS_KINDS}")
        self.reward = rssm.Head((), "symexp_twohot", HEAD_LAYERS, units, dtype=dt)
        self.cont = rssm.Head((), "binary", HEAD_LAYERS, units, dtype=dt)

    def __call__(self, batch: Batch, key: Array) -> tuple[Array, dict[str, Array]]:
        obs = batch["obs"]
        embed = self.encoder(obs).astype(jnp.float32)
        post, prior = self.rssm.observe(embed, batch["action"], batch["is_first"], key)
        feat = rssm.features(post)
        if self.obs_kind == "image":
            obs_dist = rssm.MSEDist(self.decoder(feat), len(IMAGE_SHAPE))
        else:
            obs_dist = self.decoder(feat)
        log_probs = {
            "obs": obs_dist.log_prob(obs),
            "reward": self.reward(feat).log_prob(batch["reward"]),
            "cont": self.cont(feat).log_prob(batch["cont"]),
        }
        return rssm.sequential_elbo(
            self.rssm.latent, post, prior, log_probs, SCALES, FREE_NATS, BETA_DYN, BETA_REP
        )


def synthetic_batch(obs_kind: str, batch: int, length: int, seed: int) -> dict[str, np.ndarray]:
    """A fixed-seed batch ``[B, T, ...]``: uniform images in [-0.5, 0.5] or N(0, 2^2) vectors,
    actions in [-1, 1] (zero at t = 0, where is_first), rewards in [0, 1], cont = 1 (no
    terminals, as in dm-control)."""
    rng = np.random.default_rng(seed)
    if obs_kind == "image":
        obs = rng.uniform(-0.5, 0.5, (batch, length, *IMAGE_SHAPE))
    else:
        obs = 2.0 * rng.standard_normal((batch, length, VECTOR_DIM))
    action = rng.uniform(-1.0, 1.0, (batch, length, ACTION_DIM))
    action[:, 0] = 0.0
    is_first = np.zeros((batch, length), bool)
    is_first[:, 0] = True
    return {
        "obs": obs.astype(np.float32),
        "action": action.astype(np.float32),
        "is_first": is_first,
        "reward": rng.uniform(0.0, 1.0, (batch, length)).astype(np.float32),
        "cont": np.ones((batch, length), np.float32),
    }


def count_params(tree: Any) -> int:
    return int(sum(math.prod(x.shape) for x in jax.tree.leaves(tree)))


def loadavg() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def step_stats(seconds: list[float]) -> dict[str, float]:
    """Median, mean, p10/p25/p75/p90, IQR, min and max of per-step wall-clock seconds."""
    s = np.asarray(seconds)
    p10, p25, p50, p75, p90 = np.percentile(s, [10, 25, 50, 75, 90])
    r = lambda x: round(float(x), 5)
    return {
        "median": r(p50),
        "mean": r(s.mean()),
        "p10": r(p10),
        "p25": r(p25),
        "p75": r(p75),
        "p90": r(p90),
        "iqr": r(p75 - p25),
        "min": r(s.min()),
        "max": r(s.max()),
    }


def memory_info(compiled: Any) -> dict[str, int] | None:
    """XLA's buffer sizes for the compiled step (bytes), where the backend reports them."""
    mem = compiled.memory_analysis()
    if mem is None:
        return None
    # XLA:CPU's peak_memory_in_bytes counts the arguments only, so it is left out; the step
    # needs about argument + output - alias + temp bytes.
    names = ("argument", "output", "alias", "temp")
    return {f"{n}_bytes": int(getattr(mem, f"{n}_size_in_bytes")) for n in names}


def measure(
    obs_kind: str, size: str, dtype_name: str, batch: int, length: int, steps: int, seed: int
) -> dict[str, Any]:
    """Build, compile and time one world-model training step; see the module docstring."""
    load_before = loadavg()
    model = BenchWorldModel(obs_kind, size, ACTION_DIM, DTYPES[dtype_name])
    data = jax.device_put(synthetic_batch(obs_kind, batch, length, seed))
    key = jax.random.key(seed)
    init_key, run_key = jax.random.split(key)

    start = time.perf_counter()
    # A [1, 2] slice is enough to create every parameter and keeps the eager init cheap.
    params = model.init(init_key, jax.tree.map(lambda x: x[:1, :2], data), init_key)
    params = jax.block_until_ready(params)
    init_s = time.perf_counter() - start
    param_dtypes = sorted({str(x.dtype) for x in jax.tree.leaves(params)})
    by_module = {k: count_params(v) for k, v in params["params"].items()}

    optimizer = optax.adam(LEARNING_RATE)
    opt_state = optimizer.init(params)

    def train_step(params, opt_state, batch, key):
        (loss, metrics), grads = jax.value_and_grad(model.apply, has_aux=True)(params, batch, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, metrics

    step_fn = jax.jit(train_step, donate_argnums=(0, 1))
    start = time.perf_counter()
    lowered = step_fn.lower(params, opt_state, data, run_key)
    lower_s = time.perf_counter() - start
    start = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - start

    keys = jax.random.split(run_key, steps + 1)
    start = time.perf_counter()
    params, opt_state, loss, metrics = compiled(params, opt_state, data, keys[0])
    jax.block_until_ready((params, opt_state, loss))
    first_call_s = time.perf_counter() - start
    loss_first = float(loss)

    times = []
    for i in range(steps):
        start = time.perf_counter()
        params, opt_state, loss, metrics = compiled(params, opt_state, data, keys[i + 1])
        jax.block_until_ready((params, opt_state, loss))
        times.append(time.perf_counter() - start)
    loss_last = float(loss)
    stats = step_stats(times)
    depth, units = NET_SIZES[size]
    return {
        "obs": obs_kind,
        "size": size,
        "dtype": dtype_name,
        "param_dtypes": param_dtypes,
        "params": count_params(params),
        "params_by_module": by_module,
        "nets": {
            "depth": depth if obs_kind == "image" else None,
            "units": units,
            "enc_dec_layers": ENC_DEC_LAYERS if obs_kind == "vector" else None,
            "head_layers": HEAD_LAYERS,
            "rssm": dict(zip(RSSM_FIELDS, rssm.DREAMER_SIZES[size], strict=True)),
        },
        "init_s": round(init_s, 3),
        "lower_s": round(lower_s, 3),
        "compile_s": round(compile_s, 3),
        "first_call_s": round(first_call_s, 4),
        "steps": steps,
        "step_s": stats,
        "steps_per_s": round(1.0 / stats["median"], 4),
        "frames_per_s": round(batch * length / stats["median"], 1),
        "memory": memory_info(compiled),
        "loss_first": round(loss_first, 4),
        "loss_last": round(loss_last, 4),
        "elbo_last": round(float(metrics["elbo"]), 4),
        "finite": bool(np.isfinite(loss_first) and np.isfinite(loss_last)),
        "loadavg_1m_before": load_before,
        "loadavg_1m_after": loadavg(),
    }


def _csv(value: str, allowed: tuple[str, ...] | list[str], flag: str) -> list[str]:
    items = [v for v in value.split(",") if v]
    unknown = [v for v in items if v not in allowed]
    if unknown or not items:
        raise argparse.ArgumentTypeError(
            f"{flag} {value!r}: unknown {unknown}; give a comma-separated subset of {list(allowed)}"
        )
    return items


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per combination")
    parser.add_argument(
        "--image-steps",
        type=int,
        default=None,
        help=f"timed steps for image runs (default: --steps, at most {CPU_IMAGE_STEPS} on CPU)",
    )
    parser.add_argument("--batch", type=int, default=16, help="sequences per batch (B)")
    parser.add_argument("--length", type=int, default=64, help="steps per sequence (T)")
    parser.add_argument("--only", choices=OBS_KINDS, default=None, help="one observation kind")
    parser.add_argument("--sizes", default="size1m,size12m", help=f"from {list(NET_SIZES)}")
    parser.add_argument("--dtypes", default="float32,bfloat16", help=f"from {list(DTYPES)}")
    parser.add_argument("--seed", type=int, default=0, help="seed of data, parameters and keys")
    parser.add_argument(
        "--cache", default=None, help="persistent compilation cache directory (default: off)"
    )
    parser.add_argument("--out", default=None, help="also write the JSON to this file")
    args = parser.parse_args(argv)
    for name in ("steps", "batch", "length"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.image_steps is not None and args.image_steps < 1:
        parser.error(f"--image-steps must be >= 1, got {args.image_steps}")
    try:
        args.sizes = _csv(args.sizes, list(NET_SIZES), "--sizes")
        args.dtypes = _csv(args.dtypes, list(DTYPES), "--dtypes")
    except argparse.ArgumentTypeError as err:
        parser.error(str(err))
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.cache:
        jax.config.update("jax_enable_compilation_cache", True)
        jax.config.update("jax_compilation_cache_dir", args.cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    else:
        # A cache configured through the environment would make compile times warm.
        jax.config.update("jax_enable_compilation_cache", False)
    backend = jax.default_backend()
    if args.image_steps is not None:
        image_steps = args.image_steps
    elif backend == "cpu":
        image_steps = min(args.steps, CPU_IMAGE_STEPS)
    else:
        image_steps = args.steps
    kinds = [args.only] if args.only else list(OBS_KINDS)

    report: dict[str, Any] = {
        "benchmark": "elbo_step",
        "device": device_info(),
        "config": {
            "batch": args.batch,
            "length": args.length,
            "action_dim": ACTION_DIM,
            "vector_dim": VECTOR_DIM,
            "image_shape": list(IMAGE_SHAPE),
            "optimizer": f"adam(lr={LEARNING_RATE})",
            "loss": {
                "scales": SCALES,
                "free_nats": FREE_NATS,
                "beta_dyn": BETA_DYN,
                "beta_rep": BETA_REP,
            },
            "conv_kernels": {
                "encoder": rssm.ConvEncoder.kernel,
                "decoder": rssm.ConvDecoder.kernel,
            },
            "steps": args.steps,
            "image_steps": image_steps,
            "seed": args.seed,
            "compilation_cache": args.cache,
        },
        "loadavg_1m_start": loadavg(),
        "results": [],
    }
    start = time.perf_counter()
    for kind in kinds:
        steps = image_steps if kind == "image" else args.steps
        for size in args.sizes:
            for dtype_name in args.dtypes:
                print(f"[elbo_step] {kind} {size} {dtype_name} ...", file=sys.stderr, flush=True)
                result = measure(kind, size, dtype_name, args.batch, args.length, steps, args.seed)
                print(
                    f"[elbo_step]   compile {result['compile_s']} s, "
                    f"step {result['step_s']['median']} s",
                    file=sys.stderr,
                    flush=True,
                )
                report["results"].append(result)
    report["loadavg_1m_end"] = loadavg()
    report["total_s"] = round(time.perf_counter() - start, 1)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    bad = [f"{r['obs']}/{r['size']}/{r['dtype']}" for r in report["results"] if not r["finite"]]
    if bad:
        raise FloatingPointError(f"non-finite loss in {bad}; the timings above are not meaningful")
    return report


if __name__ == "__main__":
    main()
