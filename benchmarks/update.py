"""Seconds per training update of the runner's own agents, printed as JSON.

    python benchmarks/update.py [--cases size1m,size12m,size12m-vision,planet] [--steps 10]
        [--peak-gflops 166] [--profile DIR] [--baseline REV [--rounds 3]] [--seeds 1,2,4,8]
        [--xla-flags="FLAGS;FLAGS" [--rounds 3]]

One update is one call of ``agent.train(state, batch)`` exactly as ``experiments.train`` makes
and calls it (``experiments.train.make_agent`` on the preset's config), on a batch of the preset's
size with random contents (vector observations of 24 floats and 6 actions, as walker-walk, or
64x64x3 images):

  size1m          ``dreamerv3`` (DreamerV3 2024, size1m, states), batch 16 x 64
  size12m         ``dreamerv3-vision`` with state observations (size12m), batch 16 x 64
  size12m-vision  ``dreamerv3-vision`` (size12m, pixels), batch 16 x 64
  planet          ``planet`` (world model only; Gaussian 30 + GRU 200, pixels), batch 50 x 50

Per case: compile seconds (tracing, lowering and XLA compilation of the first call), then
``--steps`` timed updates (median / min / max wall seconds, each to ``block_until_ready``),
XLA's FLOP count of the compiled update, the achieved FLOP/s and its fraction of the CPU's
float32 peak (cores x clock x 32 FLOP/cycle with AVX-512 or AVX2+FMA, or ``--peak-gflops``),
the FLOP/s of one large float32 matmul on the same backend (``matmul_gflops``: what XLA reaches
on this machine when FLOPs are all there is, so the update's fraction of it is the headroom left
to layout and fusion work), and the process's peak RSS.

``--profile DIR`` also traces ``--steps`` updates with ``jax.profiler`` into DIR and prints the
time per part of the update (the ``jax.named_scope`` of each op: world model, imagination,
actor, critic, replay value, optimizer) and the top ops, by matching the trace's op names to
the compiled HLO's metadata.

``--seeds 1,2,4,8`` times, per case, K agents updated together by one ``vmap``-ed update (as
``--run.seeds K`` trains them, ``experiments/run/seeds.py``) and reports each K's time relative to
one agent.

``--baseline REV`` builds the git revision REV in a temporary worktree and times it and the
working tree alternately, one process per (revision, case, round), and prints each case's
median seconds per update for both and their ratio (baseline / current). The script runs
with the runner's allocator (TCMalloc where installed, ``experiments/malloc.py``), the
baseline revision with glibc's malloc as it did; ``RSSM_JAX_MALLOC=system`` runs both with
glibc's, which isolates the code's own speedup.

``--xla-flags="A;B"`` (with ``=``: the value starts with dashes) times the working tree with
each ``XLA_FLAGS`` setting (``;``-separated; each may hold several flags) alternately with no
flags, ``--rounds`` times, and prints each setting's ratio (default / flagged): the XLA:CPU
options measured here, which the runner does not set because none helped
(``benchmarks/results/update_cpu_xla_flags.json``).
"""

from __future__ import annotations

import argparse
import collections
import functools
import gzip
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")
ROOT = Path(__file__).resolve().parents[1]
if os.environ.get("UPDATE_BENCH_ROOT"):  # a baseline worktree's packages come first
    sys.path.insert(0, os.environ["UPDATE_BENCH_ROOT"])
else:
    sys.path.insert(0, str(ROOT))
    # The runner's allocator (experiments/malloc.py), chosen before JAX is imported; a
    # baseline revision runs as it did, with glibc's malloc (see run_child).
    from experiments import malloc

    if (status := malloc.reexec_command()) is not None:
        raise SystemExit(status)
sys.path.insert(1, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from device import device_info  # noqa: E402

CASES = {
    # case: (preset names, newest first, observation key, batch override)
    "size1m": (("dreamerv3", "dmc-proprio"), "vector"),
    "size12m": (("dreamerv3-vision", "dmc-vision"), "vector"),
    "size12m-vision": (("dreamerv3-vision", "dmc-vision"), "image"),
    "planet": (("planet",), "image"),
}
VECTOR_DIM, ACTION_DIM = 24, 6
SCOPES = ("world_model", "imagination", "actor", "critic", "replay_value", "optimizer")


def make_case(case: str, batch_size: int | None, length: int | None, sets: tuple[str, ...] = ()):
    """(agent, batch) for a case, from the runner's own construction."""
    from experiments import config as config_lib
    from experiments.config import make_agent
    from experiments.config.values import parse_value

    names, obs = CASES[case]
    name = next(n for n in names if n in config_lib.PRESETS)
    cfg = config_lib.PRESETS[name]()
    overrides = {}
    if batch_size:
        overrides["run.batch_size"] = batch_size
    if length:
        overrides["run.batch_length"] = length
    overrides["env.obs"] = "proprio" if obs == "vector" else "pixels"
    types = config_lib.fields(config_lib.Config)
    for item in sets:
        field, _, value = item.partition("=")
        overrides[field] = parse_value(field, types[field][0], value)
    cfg = config_lib.replace(cfg, overrides)
    shape = (VECTOR_DIM,) if obs == "vector" else (64, 64, 3)
    agent = make_agent(cfg, ((obs, shape),), ACTION_DIM)
    b, t = cfg.run.batch_size, cfg.run.batch_length
    batch = {k: np.asarray(v) for k, v in agent.dummy_batch(b, t).items() if k != "context"}
    rng = np.random.default_rng(0)
    if obs == "vector":
        batch["vector"] = rng.normal(size=(b, t, VECTOR_DIM)).astype(np.float32)
    else:
        batch["image"] = rng.integers(0, 256, (b, t, 64, 64, 3), dtype=np.uint8)
    batch["action"] = rng.uniform(-1, 1, (b, t, ACTION_DIM)).astype(np.float32)
    batch["reward"] = rng.normal(size=(b, t)).astype(np.float32)
    batch["is_first"] = np.zeros((b, t), bool)
    batch["is_first"][::4, 0] = True
    batch["is_terminal"] = np.zeros((b, t), bool)
    batch["is_terminal"][1, t // 2] = True
    if "is_last" in batch:
        batch["is_last"] = batch["is_terminal"].copy()
    context = agent.dummy_batch(b, t).get("context")
    if context is not None:
        batch["context"] = {
            "deter": rng.uniform(-1, 1, context["deter"].shape).astype(np.float32),
            "stoch": np.asarray(context["stoch"]),
        }
    return agent, jax.tree.map(jnp.asarray, batch), name, (b, t)


def train_step(agent, state, batch):
    out = agent.train(state, batch)
    return out[0], out[1]  # (state, metrics); newer agents also return replay context


def peak_flops(override: float | None) -> tuple[float | None, str]:
    """The peak FLOP/s to hold the update against: given, or the CPU's from its cores, clock
    and vector width (None on an accelerator, whose peak is not read from /proc/cpuinfo)."""
    if override:
        return override * 1e9, "given"
    if jax.default_backend() != "cpu":
        return None, "not estimated off the CPU: give --peak-gflops"
    cores = len(os.sched_getaffinity(0))
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    mhz = [float(m) for m in re.findall(r"cpu MHz\s*:\s*([\d.]+)", text)]
    flags = set(re.search(r"flags\s*:(.*)", text).group(1).split()) if "flags" in text else set()
    per_cycle = 32 if ("avx512f" in flags or {"avx2", "fma"} <= flags) else 16
    ghz = max(mhz) / 1e3 if mhz else 2.0
    return cores * ghz * 1e9 * per_cycle, f"{cores} cores x {ghz:.2f} GHz x {per_cycle} FLOP/cycle"


@functools.cache
def matmul_gflops(reps: int = 5) -> float:
    """GFLOP/s of a jitted ``[n, n] @ [n, n]`` float32 matmul at the backend's default precision
    (TF32 on NVIDIA GPUs): n = 2048 on a CPU, 8192 on an accelerator, ten products queued
    before one wait (so a fast device is not timed on its dispatch), best of ``reps``."""
    n = 2048 if jax.default_backend() == "cpu" else 8192
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    jax.block_until_ready(f(a))
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        outs = [f(a) for _ in range(10)]
        jax.block_until_ready(outs)
        best = min(best, (time.perf_counter() - t0) / 10)
    return 2 * n**3 / best / 1e9


def time_case(case: str, steps: int, args, seeds: int = 1) -> dict[str, Any]:
    agent, batch, preset, (b, t) = make_case(case, args.batch_size, args.length, tuple(args.set))
    key = jax.random.key(0)
    if seeds > 1:  # K agents in one vmapped update, as --run.seeds K trains them
        from experiments.run.seeds import SeedBatch

        agent = SeedBatch(agent, seeds)
        key = jax.random.split(key, seeds)
        batch = jax.tree.map(lambda x: jnp.stack([x] * seeds), batch)
    state = agent.init(key)
    jax.block_until_ready(state)
    start = time.perf_counter()
    lowered = agent.train.lower(state, batch)
    compiled = lowered.compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
    state, metrics = train_step(agent, state, batch)  # the runner's own jitted call
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - start
    times = []
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(steps):
        t0 = time.perf_counter()
        state, metrics = train_step(agent, state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t0)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps
    median = float(np.median(times))
    peak, how = peak_flops(args.peak_gflops)
    matmul = matmul_gflops()
    result = {
        "case": case,
        "seeds": seeds,
        "preset": preset,
        "overrides": list(args.set),
        "batch": [b, t],
        "compile_s": round(compile_s, 2),
        "median_s": round(median, 4),
        "min_s": round(min(times), 4),
        "max_s": round(max(times), 4),
        "steps": steps,
        "flops": flops,
        "gflops_per_s": round(flops / median / 1e9, 1),
        "fraction_of_peak": round(flops / median / peak, 3) if peak else None,
        "peak_gflops": round(peak / 1e9, 1) if peak else None,
        "peak_estimate": how,
        "matmul_gflops": round(matmul, 1),
        "fraction_of_matmul": round(flops / median / 1e9 / matmul, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "malloc": "tcmalloc" if "tcmalloc" in os.environ.get("LD_PRELOAD", "") else "glibc",
        # Page faults per timed update: a buffer mapped afresh each update shows up here.
        "minor_faults_per_update": round(faults),
        "loss_finite": bool(all(np.all(np.isfinite(np.asarray(v))) for v in metrics.values())),
    }
    if args.profile:
        result["profile"] = profile(agent, state, batch, compiled, steps, Path(args.profile) / case)
    return result


# --- profile ------------------------------------------------------------------------------------


def _part(op_name: str) -> str:
    """The part of the update an op belongs to, from its metadata: the innermost named scope,
    forward or backward (ops under ``transpose(...)``), the RSSM's scan split from the rest."""
    hits = [(op_name.rfind(s), s) for s in SCOPES if s in op_name]
    if not hits:
        return "other"
    scope = max(hits)[1]
    if scope == "world_model":
        scope += " observe-scan" if "observe/while" in op_name else " nets"
    if scope == "optimizer":
        return scope
    return f"{scope} {'backward' if 'transpose(' in op_name else 'forward'}"


def _op_scopes(hlo_text: str) -> dict[str, str]:
    """HLO instruction name -> the part of the update it belongs to ('other' if unknown)."""
    out = {}
    for line in hlo_text.splitlines():
        m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = .*?op_name=\"([^\"]*)\"", line)
        if m:
            out[m.group(1)] = _part(m.group(2))
    return out


def profile(agent, state, batch, compiled, steps: int, out_dir: Path) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    scopes = _op_scopes(compiled.as_text())
    jax.profiler.start_trace(str(out_dir), create_perfetto_trace=True)
    for _ in range(steps):
        state, metrics = train_step(agent, state, batch)
        jax.block_until_ready(metrics)
    jax.profiler.stop_trace()
    traces = sorted(out_dir.rglob("*.trace.json.gz"), key=lambda p: p.stat().st_mtime)
    with gzip.open(traces[-1]) as f:
        events = json.load(f)["traceEvents"]
    by_op: dict[str, float] = collections.Counter()
    for e in events:
        op = (e.get("args") or {}).get("hlo_op")
        if (
            e.get("ph") == "X"
            and op
            and (e.get("args") or {}).get("hlo_module", "").startswith("jit__train")
        ):
            by_op[op] += e.get("dur", 0.0) / 1e6 / steps
    # Control-flow ops (while, call, conditional) contain the ops they run: count leaves only.
    leaves = {k: v for k, v in by_op.items() if not re.match(r"(while|call|conditional)", k)}
    by_scope: dict[str, float] = collections.Counter()
    for op, sec in leaves.items():
        by_scope[scopes.get(op, "other")] += sec
    total = sum(leaves.values())
    return {
        "trace_dir": str(out_dir),
        "seconds_per_update_in_ops": round(total, 4),
        "by_part": {k: round(v, 4) for k, v in sorted(by_scope.items(), key=lambda kv: -kv[1])},
        "top_ops": [
            {"op": k, "scope": scopes.get(k, "other"), "s": round(v, 4)}
            for k, v in sorted(leaves.items(), key=lambda kv: -kv[1])[:15]
        ],
    }


# --- baseline -----------------------------------------------------------------------------------


def run_child(root: Path | None, case: str, args, xla_flags: str | None = None) -> dict[str, Any]:
    env = dict(os.environ)
    if xla_flags is not None:  # None: as this process has them; "": none
        env.pop("XLA_FLAGS", None)
        if xla_flags:
            env["XLA_FLAGS"] = xla_flags
    if root is not None:
        env["UPDATE_BENCH_ROOT"] = str(root)
        # The baseline as it ran: without the allocator this process may have been given.
        env.pop("LD_PRELOAD", None)
        env.pop("RSSM_JAX_MALLOC_ACTIVE", None)
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--cases",
        case,
        "--steps",
        str(args.steps),
    ]
    for flag in ("batch_size", "length", "peak_gflops"):
        if getattr(args, flag):
            cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    for item in args.set:
        cmd += ["--set", item]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out)["results"][0]


def baseline(args, cases: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "baseline"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), args.baseline],
            check=True,
            capture_output=True,
        )
        try:
            rows = []
            for case in cases:
                old, new = [], []
                for _ in range(args.rounds):  # alternate, so drifts in load hit both alike
                    old.append(run_child(tree, case, args))
                    new.append(run_child(None, case, args))
                o = float(np.median([r["median_s"] for r in old]))
                n = float(np.median([r["median_s"] for r in new]))
                rows.append(
                    {
                        "case": case,
                        "baseline_s": round(o, 4),
                        "current_s": round(n, 4),
                        "speedup": round(o / n, 2),
                        "baseline_flops": old[0]["flops"],
                        "current_flops": new[0]["flops"],
                        "baseline_malloc": old[0].get("malloc", "glibc"),
                        "current_malloc": new[0]["malloc"],
                        "baseline_runs_s": [r["median_s"] for r in old],
                        "current_runs_s": [r["median_s"] for r in new],
                    }
                )
            return {"baseline": args.baseline, "rounds": args.rounds, "cases": rows}
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                check=False,
                capture_output=True,
            )


def flags_sweep(args, cases: list[str]) -> dict[str, Any]:
    """Each XLA_FLAGS setting against none, alternating (see the module doc)."""
    settings = [f.strip() for f in args.xla_flags.split(";") if f.strip()]
    rows = []
    for case in cases:
        for flags in settings:
            plain, flagged = [], []
            for _ in range(args.rounds):
                plain.append(run_child(None, case, args, "")["median_s"])
                flagged.append(run_child(None, case, args, flags)["median_s"])
            o, n = float(np.median(plain)), float(np.median(flagged))
            rows.append(
                {
                    "case": case,
                    "xla_flags": flags,
                    "default_s": round(o, 4),
                    "flagged_s": round(n, 4),
                    "speedup": round(o / n, 3),
                    "default_runs_s": plain,
                    "flagged_runs_s": flagged,
                }
            )
    return {"rounds": args.rounds, "flags": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="size1m,size12m,size12m-vision,planet")
    parser.add_argument("--steps", type=int, default=10, help="timed updates per case")
    parser.add_argument("--batch-size", type=int, default=None, help="override the preset's")
    parser.add_argument("--length", type=int, default=None, help="override the preset's")
    parser.add_argument("--peak-gflops", type=float, default=None, help="float32 peak, GFLOP/s")
    parser.add_argument("--profile", default=None, help="trace into this directory")
    parser.add_argument("--baseline", default=None, help="git revision to compare against")
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternations with --baseline or --xla-flags"
    )
    parser.add_argument(
        "--xla-flags", default=None, help="';'-separated XLA_FLAGS settings to time vs none"
    )
    parser.add_argument("--out", default=None, help="also write the JSON here")
    parser.add_argument(
        "--seeds",
        default="1",
        help="comma-separated K: time K agents updated together (vmap, --run.seeds K), with "
        "each K's seconds per update relative to K=1 when 1 is listed",
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE", help="config override"
    )
    args, rest = parser.parse_known_args()
    # Overrides in the runner's syntax (--section.field VALUE) too, beside --set FIELD=VALUE.
    while rest:
        if not rest[0].startswith("--") or len(rest) < 2 or "=" in rest[0]:
            parser.error(f"unexpected arguments {rest}; overrides look like --model.deter 512")
        args.set.append(f"{rest[0][2:]}={rest[1]}")
        rest = rest[2:]
    cases = [c for c in args.cases.split(",") if c]
    unknown = set(cases) - set(CASES)
    if unknown:
        parser.error(f"unknown cases {sorted(unknown)}; expected some of {list(CASES)}")
    report: dict[str, Any] = {"benchmark": "update", "device": device_info()}
    if args.baseline and args.xla_flags:
        parser.error("--baseline and --xla-flags each alternate against the working tree: one")
    if args.baseline:
        report.update(baseline(args, cases))
    elif args.xla_flags:
        report.update(flags_sweep(args, cases))
    else:
        seeds = [int(k) for k in args.seeds.split(",") if k]
        report["results"] = [time_case(c, args.steps, args, k) for c in cases for k in seeds]
        one = {r["case"]: r["median_s"] for r in report["results"] if r["seeds"] == 1}
        for r in report["results"]:
            if r["case"] in one and r["seeds"] > 1:
                r["time_vs_one_seed"] = round(r["median_s"] / one[r["case"]], 2)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
