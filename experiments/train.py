"""The training runner: collect -> replay -> train -> evaluate -> log -> checkpoint.

    python -m experiments.train --preset debug --task cartpole-balance --steps 4000 --logdir runs/x

Re-running with the same ``--logdir`` resumes from the last checkpoint: the training state,
counters and replay come back exactly, and the wandb run continues under the same id.

Counting: an *agent step* is one policy decision of one environment; an *environment step* is
one physics control step, so env_steps = agent_steps x action_repeat (the x axis of published
dm-control curves). ``run.train_ratio`` is replayed steps per agent step (DreamerV3), i.e. one
update of B x T replayed steps every B x T / train_ratio agent steps.
"""

from __future__ import annotations

if __name__ == "__main__":  # the allocator is chosen before JAX is imported (malloc.py)
    from experiments import malloc

    try:
        malloc.reexec()
    except ValueError as err:
        import sys

        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None

import contextlib
import functools
import hashlib
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from agents.world_model import CONTEXT_KEYS, WorldModel
from experiments import envs as envs_lib
from experiments import seeds as seeds_lib
from experiments import vecenv
from experiments.checkpoint import Checkpointer, check_config
from experiments.config import (
    RESUMABLE_FIELDS,
    Config,
    from_dict,
    make_agent,
    parse_args,
    to_dict,
)
from experiments.evaluate import env_kwargs
from experiments.logging import Logger, openloop_grid
from experiments.replay import Replay
from experiments.scale import BatchSplit, Topology, initialize

# Saved with every checkpoint. 'credit' is the fractional number of updates owed under
# run.train_ratio (the ratio schedule's state); the 'next_*' fields are when each periodic
# action is due next, so a resumed run keeps the same rhythm. 'agent_steps' counts the
# environments of every process; 'episodes' (and 'seed_episodes' with many seeds) and
# 'stored_steps' count those of process 0, the one that logs them.
COUNTERS = (
    "agent_steps",
    "updates",
    "episodes",
    "stored_steps",
    "credit",
    "next_log",
    "next_eval",
    "next_save",
    "next_video",
)


def _record(obs: dict[str, np.ndarray], action: np.ndarray) -> dict[str, np.ndarray]:
    """What replay stores per env step: o_t, a_{t-1} (zeros at a reset), r_t and the flags."""
    rec = {k: v for k, v in obs.items() if k not in ("reward",)}
    first = obs["is_first"].astype(bool)
    rec["action"] = np.where(first[:, None], 0.0, action).astype(np.float32)
    rec["reward"] = obs["reward"].astype(np.float32)
    return rec


def _policy_obs(obs: dict[str, np.ndarray], keys: tuple[str, ...]) -> dict[str, jax.Array]:
    return {k: jnp.asarray(obs[k]) for k in (*keys, "is_first")}


def _context(cfg: Config, carry: Any) -> dict[str, np.ndarray] | None:
    """The posterior of the step just observed, which replay stores as that step's context."""
    if not cfg.model.replay_context:
        return None
    return {k: np.asarray(carry["state"][k]) for k in CONTEXT_KEYS}


class ContextWriteBack:
    """Holds an update's refreshed per-step states until they are written back into replay.

    Writing back before the next sample (not right after the update) lets the update run while
    the host steps the environments; the result is the same at every later sample and save.
    """

    def __init__(self, replay: Replay, topo: Topology):
        self.replay, self.topo = replay, topo
        self.pending: tuple[np.ndarray, np.ndarray, dict] | None = None

    def hold(self, rows: np.ndarray, stamps: np.ndarray, values: dict) -> None:
        self.flush()
        self.pending = (rows, stamps, values) if values else None

    def flush(self) -> None:
        if self.pending is not None:
            rows, stamps, values = self.pending
            self.replay.update_context(rows, stamps, self.topo.local_rows(dict(values)))
            self.pending = None


class Progress:
    """One console line: steps, env steps/s, updates/s and ETA; newline-terminated off a TTY."""

    def __init__(self, total: int, start: int, updates: int, quiet: bool = False):
        self.total, self.start, self.t0 = total, start, time.time()
        self.updates0, self.last = updates, 0.0
        self.tty, self.quiet = sys.stderr.isatty() and not quiet, quiet

    def show(self, env_steps: int, updates: int, force: bool = False) -> None:
        now = time.time()
        if self.quiet or (not force and now - self.last < (1.0 if self.tty else 30.0)):
            return
        self.last = now
        dt = max(now - self.t0, 1e-6)
        sps = (env_steps - self.start) / dt
        ups = (updates - self.updates0) / dt
        eta = (self.total - env_steps) / sps if sps > 0 else float("inf")
        eta_s = time.strftime("%H:%M:%S", time.gmtime(eta)) if math.isfinite(eta) else "?"
        pct = 100.0 * env_steps / self.total
        line = (
            f"{env_steps}/{self.total} env steps ({pct:.0f}%) | {sps:.0f} env steps/s | "
            f"{ups:.2f} updates/s | ETA {eta_s}"
        )
        print(
            ("\r" + line) if self.tty else line,
            end="" if self.tty else "\n",
            file=sys.stderr,
            flush=True,
        )


class StopRequest:
    """SIGINT/SIGTERM handler. The first signal asks the loop to stop after the current step,
    so that replay and counters stay consistent and a final checkpoint is written; a second
    signal stops at once (KeyboardInterrupt)."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt(f"signal {signum}")
        self.signum = signum


@contextlib.contextmanager
def stop_on_signals():
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop  # handlers can only be installed from the main thread
        return
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class NonFiniteLoss(FloatingPointError):
    pass


class ConfigMismatch(ValueError):
    """The logdir holds a checkpoint written under a different config."""


def evaluate(
    agent, state, cfg: Config, env, key: jax.Array, keys: tuple[str, ...], record: bool = False
) -> tuple[float, dict[str, np.ndarray] | None]:
    """Mean return of ``cfg.run.eval_episodes`` episodes with the policy's 'eval' mode, and with
    ``record`` the first episode's steps as replay stores them (``[T, ...]`` per key, action
    a_{t-1} at step t), data no update ever trains on."""
    returns, episode = [], None
    for ep in range(cfg.run.eval_episodes):
        obs = {k: np.asarray(v)[None] for k, v in env.reset().items()}
        carry = agent.init_carry(1)
        total, t = 0.0, 0
        steps = []
        if record and ep == 0:
            steps.append(
                {**{k: v[0] for k, v in obs.items()}, "action": np.zeros(agent.action_dim)}
            )
        while True:
            act, carry = agent.policy(
                state,
                carry,
                _policy_obs(obs, keys),
                jax.random.fold_in(key, ep * 100_000 + t),
                "eval",
            )
            obs = {k: np.asarray(v)[None] for k, v in env.step(np.asarray(act)[0]).items()}
            if steps:
                steps.append({**{k: v[0] for k, v in obs.items()}, "action": np.asarray(act)[0]})
            total += float(obs["reward"][0])
            t += 1
            if obs["is_last"][0]:
                break
        returns.append(total)
        if steps:
            episode = {k: np.stack([step[k] for step in steps]) for k in steps[0]}
    return float(np.mean(returns)), episode


def heldout_windows(
    episode: dict[str, np.ndarray], length: int, count: int
) -> dict[str, np.ndarray] | None:
    """Up to ``count`` non-overlapping windows ``[B, length, ...]`` of an episode, each starting
    from h_0 (``is_first`` at its first step); None if the episode is shorter than one."""
    n = min(count, len(episode["reward"]) // length)
    if n == 0:
        return None
    out = {k: v[: n * length].reshape(n, length, *v.shape[1:]) for k, v in episode.items()}
    out["is_first"] = np.zeros((n, length), bool)
    out["is_first"][:, 0] = True
    out["action"] = out["action"].astype(np.float32)
    out["action"][:, 0] = 0.0
    return out


def heldout_gap(agent, state, episode, run, key: jax.Array, fn) -> dict[str, float]:
    """Per-step held-out ELBO, IWAE_K and their difference (a lower estimate of the ELBO's gap
    KL(q || p(s | o))) on windows of an evaluation episode, and the seconds it took."""
    start = time.perf_counter()
    batch = heldout_windows(episode, run.batch_length, run.gap_sequences)
    if batch is None:
        return {}
    params = state.params.get("wm", state.params)  # Dreamer's hold more than the world model
    elbo, iwae = jax.device_get(fn(params, {k: jnp.asarray(v) for k, v in batch.items()}, key))
    t = run.batch_length
    return {
        "heldout/elbo": float(elbo.mean()) / t,
        "heldout/iwae": float(iwae.mean()) / t,
        "heldout/gap": float((iwae - elbo).mean()) / t,
        "heldout/seconds": time.perf_counter() - start,
    }


def train(cfg: Config, logdir: str | Path) -> dict[str, Any]:
    """Run (or resume) an experiment in ``logdir``; returns the final counters and returns."""
    logdir = Path(logdir)
    run = cfg.run
    # Every device of every process; the batch is global and splits over them (scale.py).
    topo = Topology.create(fsdp=run.fsdp, lead=1 if run.seeds > 1 else 0)
    local_batch = topo.local_batch_size(run.batch_size)
    proc, procs = topo.process_index, topo.process_count
    lead = proc == 0  # the one process that logs, evaluates and records videos
    logdir.mkdir(parents=True, exist_ok=True)
    cfg_dict = to_dict(cfg)
    ckpt = Checkpointer(logdir / "checkpoints", keep=run.keep_checkpoints, async_save=True)
    resume_step = ckpt.latest_step()
    meta = None
    if resume_step is not None:
        meta = ckpt.restore_meta(resume_step)
        try:
            # Fields added to the code after the checkpoint was written take their defaults.
            saved = to_dict(from_dict(meta["config"]))
            check_config(saved, cfg_dict, ignore=RESUMABLE_FIELDS)
        except ValueError as err:
            ckpt.close()
            raise ConfigMismatch(f"{logdir}: {err}") from None
        saved_procs = meta.get("processes", 1)
        if saved_procs != procs:
            ckpt.close()
            raise ConfigMismatch(
                f"{logdir}: the checkpoint was written by {saved_procs} process(es), each with "
                f"its own replay; resume it with {saved_procs} process(es) (the number of "
                "devices per process may change)"
            )
    if lead:
        (logdir / "config.json").write_text(json.dumps(cfg_dict, indent=2))
        print(json.dumps(cfg_dict, indent=2), file=sys.stderr)

    # With run.seeds K, every key has a leading seed axis [K]: agent k's are those of the run
    # with seed run.seed + k (seeds.py).
    n_seeds = run.seeds
    if n_seeds == 1:
        key = jax.random.key(run.seed)
        init_key, policy_key, eval_key, video_key = jax.random.split(key, 4)
    else:
        key = jnp.stack([jax.random.key(run.seed + k) for k in range(n_seeds)])
        init_key, policy_key, eval_key, video_key = jax.vmap(jax.random.split, (0, None))(key, 4).T
    if proc:  # each process explores with its own noise
        policy_key = seeds_lib.fold_in(policy_key, proc)
    gap_root = seeds_lib.fold_in(key, 1 << 30)  # the held-out gap's own stream
    env_kw = env_kwargs(cfg)
    # Environment i of process p is seeded env_seed(seed, p * envs + i): one numbering over the
    # run; agent k of many seeds has the environments of the run with seed run.seed + k.
    n = cfg.env.envs
    env_seeds = [
        envs_lib.env_seed(run.seed + k, proc * n + i) for k in range(n_seeds) for i in range(n)
    ]
    vec = vecenv.make_envs(
        cfg.env.task,
        cfg.env.obs,
        n * n_seeds,
        run.seed,
        cfg.env.parallel,
        seeds=env_seeds,
        **env_kw,
    )
    stack = contextlib.ExitStack()
    stop = stack.enter_context(stop_on_signals())
    stack.enter_context(vec)
    stack.callback(ckpt.close)
    try:
        obs_keys = tuple(vec.obs_spec)
        obs_shapes = tuple((k, tuple(vec.obs_spec[k][0])) for k in obs_keys)
        single = make_agent(cfg, obs_shapes, vec.act_dim, vec.discrete)  # one seed's agent
        agent = single if n_seeds == 1 else seeds_lib.SeedBatch(single, n_seeds)
        # run.gap_particles: the held-out ELBO and IWAE bounds as one compiled program.
        heldout_fn = jax.jit(
            lambda p, b, k: single.wm.apply(
                p, b, k, run.gap_particles, method=WorldModel.heldout_bounds
            )
        )
        replay_dir = logdir / ("replay" if proc == 0 else f"replay-process{proc}")
        if meta is None and replay_dir.exists() and any(replay_dir.iterdir()):
            # Chunks without any checkpoint come from a run killed before its first save:
            # nothing refers to them, and a fresh start collects that data again.
            print(
                f"no checkpoint in {logdir}: discarding replay chunks of an unfinished earlier run",
                file=sys.stderr,
            )
            shutil.rmtree(replay_dir)
        replays = [
            Replay(
                run.replay_capacity,
                replay_dir if n_seeds == 1 else replay_dir / f"seed{k}",
                run.replay_chunk,
                run.seed + k + (proc << 20),
                context_dtype=run.context_dtype,
                online=run.batch_length + cfg.model.replay_context if run.replay_online else 0,
            )
            for k in range(n_seeds)
        ]
        replay = replays[0] if n_seeds == 1 else seeds_lib.ReplaySet(replays)
        writeback = ContextWriteBack(replay, topo)
        abstract = topo.abstract_state(agent.init, init_key)
        train_fn = topo.jit_train(agent.update, abstract)
        counters = dict.fromkeys(COUNTERS, 0)
        counters.update(
            next_log=run.log_every,
            next_eval=run.eval_every,
            next_save=run.save_every,
            next_video=run.video_every,
        )
        run_id = None
        if meta is None:
            state = topo.init_state(agent.init, init_key)
        else:
            # Restored into this run's shardings, whatever devices the checkpoint came from.
            state, meta = ckpt.restore(abstract, resume_step)
            counters.update(meta["counters"])
            replay.load(meta["replay"][proc] if procs > 1 else meta["replay"])
            run_id = meta["wandb_run_id"]
            resumed_at = counters["agent_steps"] * vec.action_repeat
            print(f"resumed from checkpoint at env step {resumed_at}: {counters}", file=sys.stderr)
            if lead:  # logs written after that checkpoint by the run that was interrupted
                for path in [logdir / "metrics.jsonl", *logdir.glob("seed*/metrics.jsonl")]:
                    drop_rows_after(path, resumed_at)
        acting = topo.local_view(state)  # what the policy reads: this process's replica
        lg = cfg.logging
        make_logger = functools.partial(
            Logger,
            wandb_mode=lg.wandb,
            project=lg.project,
            entity=lg.entity or None,
            tags=lg.tags,
            tensorboard=lg.tensorboard,
        )
        if not lead:
            logger = NullLogger()
        elif n_seeds == 1:
            logger = make_logger(
                logdir, cfg_dict, group=lg.group or None, name=lg.name or logdir.name, run_id=run_id
            )
        else:  # one log (and wandb run) per seed, grouped
            logger = seeds_lib.LoggerSet(
                logdir,
                cfg_dict,
                n_seeds,
                run.seed,
                run_id,
                make_logger,
                lg.name or logdir.name,
                lg.group or logdir.name,
            )
        stack.callback(logger.close)

        repeat = vec.action_repeat
        n = cfg.env.envs  # environments per seed in this process (vec holds n x seeds)
        per_update = run.batch_size * run.batch_length / run.train_ratio if run.train_ratio else 0
        params = sum(x.size for x in jax.tree.leaves(state.params)) // n_seeds
        step_bytes = sum(int(np.prod(s)) * np.dtype(d).itemsize for s, d in vec.obs_spec.values())
        step_bytes += 4 * vec.act_dim + 4 + 3
        train_agent_steps = max(0, (run.steps - run.prefill) // repeat)
        planned = int(train_agent_steps / per_update) if per_update else 0
        print(
            f"pre-flight: {params:,} parameters | replay at capacity {run.replay_capacity:,} "
            f"steps x {step_bytes:,} B = {run.replay_capacity * step_bytes / 2**30:.2f} GiB | "
            f"{run.steps:,} env steps = {math.ceil(run.steps / repeat):,} agent steps "
            f"(repeat {repeat}, {n} envs x {procs} process(es)) | {n_seeds} seed(s) | "
            f"{topo.size} device(s), "
            f"{local_batch} of {run.batch_size} sequences per update from this process | "
            f"~{planned:,} updates planned",
            file=sys.stderr,
        )

        def save(final: bool = False) -> None:
            if final and ckpt.latest_step() == counters["agent_steps"] * repeat:
                return
            writeback.flush()
            replay_state = replay.save()
            if procs > 1:  # every process's replay state, in the one meta file process 0 writes
                replay_state = [json.loads(x) for x in topo.gather_json(json.dumps(replay_state))]
            meta = {
                "config": cfg_dict,
                "counters": dict(counters),
                "replay": replay_state,
                "processes": procs,
                "wandb_run_id": logger.run_id,
            }
            # Numbered in environment steps, the unit of --steps, save_every and the logs.
            ckpt.save(counters["agent_steps"] * repeat, state, {**meta, "step_unit": "env_steps"})

        logged_at = -1
        timing: dict[str, Any] = {"first_update": None, "last": None}

        def log_metrics(env_steps: int) -> None:
            nonlocal logged_at
            # The mean of each metric over the updates since the last log (one value per metric,
            # or one per seed, [K], with many seeds); one transfer from the device.
            count = max(summed["count"], 1)
            scalars = {
                k: (float(v) / count if n_seeds == 1 else np.asarray(v, np.float64) / count)
                for k, v in topo.to_host(summed["sums"] or {}).items()
            }
            summed.update(sums=None, count=0)
            if scalars and not np.all(np.isfinite(_host_total_loss(scalars))):
                raise NonFiniteLoss(counters["updates"], metrics)
            scalars.update({"replay/steps": len(replay), "run/updates": counters["updates"]})
            now = time.time()
            if timing["last"] is not None:  # throughput since the previous log (wall clock)
                t0, steps0, updates0 = timing["last"]
                scalars["run/env_steps_per_s"] = (env_steps - steps0) / max(now - t0, 1e-9)
                scalars["run/updates_per_s"] = (counters["updates"] - updates0) / max(
                    now - t0, 1e-9
                )
            timing["last"] = (now, env_steps, counters["updates"])
            logger.scalars(env_steps, scalars)
            logged_at = env_steps

        def train_owed(t: int) -> None:
            """The updates owed after agent step t: once prefill is over and replay holds a
            batch's worth of data (B x T steps, and T + context consecutive steps in a stream),
            one per ``per_update`` agent steps."""
            nonlocal state, acting, metrics, pending_loss
            if not (t * repeat >= run.prefill and per_update and replay_ready()):
                return
            counters["credit"] += n * procs / per_update
            while counters["credit"] >= 1.0:
                writeback.flush()
                batch, rows, stamps = replay.sample_sequences(
                    local_batch, run.batch_length, ctx_steps
                )
                if pending_loss is not None and not finite(pending_loss):
                    raise NonFiniteLoss(counters["updates"], metrics)
                state, metrics, new_context = train_fn(state, topo.global_batch(batch))
                # Summed on the device (one small dispatch, no transfer) for the log's mean.
                summed["sums"] = metrics if summed["sums"] is None else add(summed["sums"], metrics)
                summed["count"] += 1
                acting = None  # refreshed before the policy next reads it
                writeback.hold(rows, stamps, new_context)
                pending_loss = _total_loss(metrics)
                counters["updates"] += 1
                counters["credit"] -= 1.0
                if timing["first_update"] is None:
                    jax.block_until_ready(metrics)
                    timing["first_update"] = time.time()
                    print(
                        f"first update done {timing['first_update'] - process_start():.1f} s "
                        "after process start",
                        file=sys.stderr,
                    )
                if run.video_every and counters["updates"] >= counters["next_video"]:
                    counters["next_video"] += run.video_every
                    view = topo.local_view(state)  # every process: it may gather (FSDP)
                    if lead:  # from this process's share of the batch
                        _log_video(
                            agent,
                            view,
                            batch if n_seeds == 1 else seeds_lib.take(batch, 0),
                            obs_keys,
                            logger,
                            jax.random.fold_in(video_key, counters["updates"]),
                            (t + n * procs) * repeat,
                        )

        ready = False

        def replay_ready() -> bool:
            """Whether replay holds a batch's worth of data (this process's share of B x T
            steps, and T + context consecutive steps in a stream) in every process; once true
            it stays true, so the processes agree on it (a collective) only until then."""
            nonlocal ready
            if not ready:
                ready = len(replay) >= local_batch * run.batch_length and replay.can_sample(
                    run.batch_length + ctx_steps
                )
                ready = not topo.any(not ready)
            return ready

        def finite(x) -> bool:
            """Whether a loss (one per seed with many seeds) is finite everywhere."""
            return bool(np.all(np.isfinite(topo.to_host(x))))

        def log_episodes(ended: np.ndarray, ep_return: np.ndarray, ep_length: np.ndarray):
            """Mean return and length of the episodes that just ended, per seed."""
            env_steps = counters["agent_steps"] * repeat
            for k in range(n_seeds):
                mine = ended[ended // n == k]
                if not len(mine):
                    continue
                counters["episodes"] += len(mine)
                if n_seeds == 1:
                    count = counters["episodes"]
                else:
                    counters["seed_episodes"][k] += len(mine)
                    count = counters["seed_episodes"][k]
                row = {
                    "episode/return": float(np.mean(ep_return[mine])),
                    "episode/length": float(np.mean(ep_length[mine])) * repeat,
                    "episode/count": count,
                }
                logger.scalars(env_steps, row, **({"seed": k} if n_seeds > 1 else {}))

        def stopping() -> bool:
            """A signal asked to stop; several processes agree on it every 64 iterations."""
            if procs == 1:
                return stop.signum is not None
            if (counters["agent_steps"] // (n * procs)) % 64:
                return False
            return topo.any(stop.signum is not None)

        eval_envs: dict[int, Any] = {}

        def run_evaluation(acting, env_steps: int) -> None:
            """Evaluation episodes (and the held-out gap on the first) of every seed's agent,
            each in its own evaluation environment, on this process."""
            for k in range(n_seeds):
                if k not in eval_envs:
                    eval_envs[k] = stack.enter_context(
                        envs_lib.make_env(
                            cfg.env.task, cfg.env.obs, seed=run.seed + k + 1_000_000, **env_kw
                        )
                    )
                one = (lambda x: x) if n_seeds == 1 else functools.partial(seeds_lib.take, k=k)
                to_seed = {} if n_seeds == 1 else {"seed": k}
                state_k = one(acting)
                ret, episode = evaluate(
                    single,
                    state_k,
                    cfg,
                    eval_envs[k],
                    jax.random.fold_in(one(eval_key), env_steps),
                    obs_keys,
                    record=run.gap_particles > 0,
                )
                logger.scalars(env_steps, {"eval/return": ret}, **to_seed)
                if episode is not None:
                    gap_key = jax.random.fold_in(one(gap_root), env_steps)
                    gap = heldout_gap(single, state_k, episode, run, gap_key, heldout_fn)
                    logger.scalars(env_steps, gap, **to_seed)

        obs = vec.reset()
        carry = agent.init_carry(vec.num_envs)
        prev_action = np.zeros((vec.num_envs, vec.act_dim), np.float32)
        ctx_steps = cfg.model.replay_context
        ep_return = np.zeros(vec.num_envs)
        ep_length = np.zeros(vec.num_envs, np.int64)
        if n_seeds > 1:
            counters.setdefault("seed_episodes", [0] * n_seeds)
        metrics: dict[str, Any] = {}
        summed: dict[str, Any] = {"sums": None, "count": 0}  # metrics since the last log
        pending_loss = None
        progress = Progress(
            run.steps, counters["agent_steps"] * repeat, counters["updates"], quiet=not lead
        )
        healthy = True
        try:
            while counters["agent_steps"] * repeat < run.steps and not stopping():
                # Before acting with freshly updated parameters: the policy step waits for the
                # update anyway, so checking its loss here costs no extra synchronization.
                if pending_loss is not None:
                    if not finite(pending_loss):
                        raise NonFiniteLoss(counters["updates"], metrics)
                    pending_loss = None
                if acting is None:
                    acting = topo.local_view(state)
                t = counters["agent_steps"]
                k = seeds_lib.fold_in(policy_key, t)
                # Prefill acts uniformly at random, through the agent so that its recurrent
                # state follows the executed actions.
                mode = "random" if t * repeat < run.prefill else "explore"
                action, carry = agent.policy(acting, carry, _policy_obs(obs, obs_keys), k, mode)
                # o_t is stored once the policy has seen it: with its posterior as context.
                replay.add_batch(_record(obs, prev_action), context=_context(cfg, carry))
                counters["stored_steps"] += n  # per seed
                if run.overlap:
                    # The updates owed now sample only what is stored (up to o_t), so they can
                    # be dispatched before the environments step: the device computes them
                    # while the host steps, with the same results as in the order below.
                    train_owed(t)
                action = np.asarray(action, np.float32)
                obs = vec.step(action)
                prev_action = action
                if not run.overlap:
                    train_owed(t)
                counters["agent_steps"] += n * procs  # every process steps n envs
                ep_return += obs["reward"]
                ep_length += 1
                for i in np.flatnonzero(obs["is_first"]):
                    ep_return[i], ep_length[i] = 0.0, 0  # auto-reset: a new episode began
                log_episodes(np.flatnonzero(obs["is_last"]), ep_return, ep_length)

                env_steps = counters["agent_steps"] * repeat
                if env_steps >= counters["next_log"]:
                    counters["next_log"] += run.log_every
                    log_metrics(env_steps)
                if run.eval_every and env_steps >= counters["next_eval"]:
                    counters["next_eval"] += run.eval_every
                    if acting is None:  # every process: it may gather (FSDP)
                        acting = topo.local_view(state)
                    if lead:
                        run_evaluation(acting, env_steps)
                if env_steps >= counters["next_save"]:
                    counters["next_save"] += run.save_every
                    save()
                progress.show(env_steps, counters["updates"])
            if pending_loss is not None and not finite(pending_loss):
                raise NonFiniteLoss(counters["updates"], metrics)
            if logged_at != counters["agent_steps"] * repeat:  # the run's last metrics
                log_metrics(counters["agent_steps"] * repeat)
        except NonFiniteLoss as err:
            healthy = False
            last = ckpt.latest_step()
            raise FloatingPointError(
                f"non-finite loss at update {err.args[0]} "
                f"({ {k: np.asarray(v).tolist() for k, v in topo.to_host(err.args[1]).items()} }). "
                "Training stopped; the "
                f"last checkpoint (env step {last}) is kept unchanged. Lower opt.lr, check "
                f"the observations for NaN/inf, or resume from it with a changed config in a "
                f"new logdir."
            ) from None
        except BaseException:
            # The final save is a collective with several processes: one that failed alone
            # would wait in it for the others forever. The last complete checkpoint stays.
            if procs > 1:
                healthy = False
            raise
        finally:
            if healthy:
                save(final=True)
                ckpt.wait()
            progress.show(counters["agent_steps"] * repeat, counters["updates"], force=True)
            if progress.tty:
                print(file=sys.stderr)
        view = topo.local_view(state)
        return {
            "counters": dict(counters),
            "replay_steps": len(replay),
            "env_steps": counters["agent_steps"] * repeat,
            "interrupted": counters["agent_steps"] * repeat < run.steps,  # stopped by a signal
            "process": proc,
            "devices": topo.size,
            "params_sha256": (
                params_digest(view)
                if n_seeds == 1
                else [params_digest(seeds_lib.take(view, k)) for k in range(n_seeds)]
            ),
        }
    finally:
        stack.close()


def process_start() -> float:
    """Wall-clock time this process started (from /proc; the import of this module if absent)."""
    try:
        # Field 22 of /proc/self/stat: start time in clock ticks since boot.
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
        return time.time() - age
    except (OSError, ValueError, IndexError, AttributeError):
        return _IMPORTED


_IMPORTED = time.time()


def drop_rows_after(path: Path, step: int) -> int:
    """Removes the lines of a ``metrics.jsonl`` logged after ``step`` (by a run killed after
    its last checkpoint, whose resumption logs those steps again); returns how many."""
    if not path.exists():
        return 0
    lines = path.read_text().splitlines(keepends=True)
    keep = [line for line in lines if not line.strip() or json.loads(line)["step"] <= step]
    if len(keep) < len(lines):
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(keep))
        os.replace(tmp, path)  # atomic: a kill leaves the old file or the new one
    return len(lines) - len(keep)


@jax.jit
def add(a: Any, b: Any) -> Any:
    """Elementwise sum of two metric dicts (the log interval's running sum)."""
    return jax.tree.map(jnp.add, a, b)


def _total_loss(metrics: dict) -> jax.Array:
    """Sum of every loss term (on device): non-finite iff one of them is."""
    return sum(v for k, v in metrics.items() if k.endswith("loss"))


def _host_total_loss(scalars: dict[str, float]) -> float:
    return sum(v for k, v in scalars.items() if k.endswith("loss"))


class NullLogger:
    """The logger of every process but the first: one run writes one set of logs."""

    run_id = None

    def scalars(self, step: int, metrics: Any, seed: int | None = None) -> None:
        pass

    def video(self, step: int, name: str, frames: Any, fps: int = 10) -> None:
        pass

    def close(self) -> None:
        pass


def params_digest(state: Any) -> str:
    """SHA-256 of the parameters' bytes (this process's replica): equal digests, equal
    parameters, bit for bit."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(jax.device_get(state.params)):
        h.update(np.ascontiguousarray(leaf).tobytes())
    return h.hexdigest()


def _log_video(agent, state, batch, obs_keys, logger: Logger, key, step: int) -> None:
    if "image" not in obs_keys:
        return
    sub = {k: v[:4] for k, v in batch.items() if k != "context"}
    pred = agent.openloop(state, sub, key)["image"]  # in [0, 1], as the decoder's target
    truth = sub["image"].astype(np.float32) / 255.0
    frames = openloop_grid(truth, np.clip(np.asarray(pred), 0.0, 1.0))
    logger.video(step, "openloop", frames)


def use_compile_cache(directory: str | os.PathLike) -> None:
    """Store every compiled XLA program under ``directory`` and load it from there next time.

    Compilation dominates a launch on a CPU (about a minute for a size1m Dreamer update); with
    the cache a second launch of the same command reaches its first update in seconds.
    """
    path = Path(directory).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def main(argv: list[str] | None = None) -> int:
    try:
        cfg, args = parse_args(argv)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        initialize(
            args.coordinator, args.num_processes, args.process_id, auto=args.distributed == "auto"
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not args.no_compile_cache:
        use_compile_cache(args.compile_cache)
    try:
        summary = train(cfg, args.logdir)
    except (ConfigMismatch, BatchSplit) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    if summary["interrupted"]:
        print("interrupted: checkpoint saved; re-run the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
