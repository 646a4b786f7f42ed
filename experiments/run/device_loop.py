"""The device loop: a run of a JAX task (``mjx:``, ``gymnax:``) as compiled chunks.

``DeviceRunner(cfg, logdir)`` builds what the host runner builds (``RunSetup``: config checks,
logdir and its lock, keys, agent, logger, checkpointer), but its environments, replay and
counters live in one carry on the device (``device_program.Carry``, vmapped over K seeds),
and ``run()`` only loops over chunks of ``run.log_every`` environment steps:

    carry, steps = chunk(carry)    collect, store, train, step, evaluate when due: one
                                   compiled program (``device_program``, ``device_eval``)
    log                            the chunk's episodes, evaluations and the updates' means
    report, save                   when due (open-loop reports on a batch drawn from replay)

Logs carry the host runner's names (``episode/return``, ``episode/length``, ``episode/count``,
``eval/return``, the agent's metrics, ``replay/steps``, ``run/updates``,
``run/env_steps_per_s``). Evaluations record no video and no held-out gap (both need the
episode on the host: use ``--run.loop host``). A checkpoint is the whole carry (agent,
environment states, replay, counters, keys) plus the host counters, so a resumed run goes on
exactly as the uninterrupted one.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from agents.contract import STATE_LAYOUT
from experiments import envs as envs_lib
from experiments.envs import jax_envs
from experiments.errors import ConfigError
from experiments.replay import device as replay_lib
from experiments.run import device_program as dp
from experiments.run import seeds as seeds_lib
from experiments.run.device_carry import device_settings, unshared, with_empty, without_empty
from experiments.run.eval import EVAL_SEED_OFFSET
from experiments.run.logging import drop_rows_after
from experiments.run.metrics import NonFiniteLoss, params_digest
from experiments.run.reports import Reports
from experiments.run.setup import RunSetup

# The host's mirror of the carry's counts and the periodic actions' next steps (the credit,
# replay's fill and the update count's source live in the carry).
COUNTERS = (
    "agent_steps", "updates", "episodes", "next_eval", "next_save", "next_log", "next_report",
)  # fmt: skip


class DeviceRunner(RunSetup, Reports):
    """One training run of a JAX task in ``logdir``, stepped by ``run()`` chunk by chunk."""

    def __init__(self, cfg: Any, logdir: str | Path, run_id: str | None = None):
        super().__init__(cfg, logdir, COUNTERS, run_id)
        chunk = dp.make_chunk(self.single, self.env, self.settings, self.chunk_steps)
        self.chunk = jax.jit(chunk if self.n_seeds == 1 else jax.vmap(chunk), donate_argnums=0)
        draw = functools.partial(_report_batch, settings=self.settings)
        self.report_batch = jax.jit(draw if self.n_seeds == 1 else jax.vmap(draw, (0, 0, None)))
        self.last_log: tuple[float, int, int] | None = None

    # --- what RunSetup builds differently here -------------------------------------------

    def _make_envs(self) -> None:
        cfg = self.cfg
        if not envs_lib.is_jax_task(cfg.env.task):
            raise ConfigError(
                f"run.loop=device runs JAX tasks (mjx:<task>, gymnax:<id>), not {cfg.env.task!r}"
                "; use --run.loop host"
            )
        envs_lib.check_obs(cfg.env.task, cfg.env.obs)
        unsupported = {
            "several processes": jax.process_count() > 1,
            "run.fsdp": bool(cfg.run.fsdp),
            "run.prefill_to_batch": bool(cfg.run.prefill_to_batch),
            # The held-out gap needs an evaluation episode recorded on the host.
            "run.gap_particles > 0": cfg.run.gap_particles > 0,
        }
        for what, used in unsupported.items():
            if used:
                raise ConfigError(
                    f"run.loop=device does not run with {what} yet; use --run.loop host"
                )
        self.env = jax_envs.make_jax_env(
            cfg.env.task, cfg.env.action_repeat or None, cfg.env.time_limit
        )
        env = self.env
        self.vec = SimpleNamespace(
            obs_spec=env.obs_spec,
            act_dim=env.act_dim,
            discrete=env.discrete,
            action_repeat=env.action_repeat,
            num_envs=self.n * self.n_seeds,
        )
        self.repeat = env.action_repeat
        self.obs_keys = tuple(env.obs_spec)
        run = cfg.run
        self.settings = device_settings(cfg, env)
        per_iteration = self.n * env.action_repeat  # environment steps of one agent step
        self.chunk_steps = max(1, run.log_every // per_iteration)
        self.rows = self._replay_rows(run.steps)
        self._check_device_memory()

    def _replay_rows(self, steps: int) -> int:
        """Replay rows per stream: run.replay_capacity / N, or fewer when the run stores fewer
        steps (whole chunks up to ``steps``): the same FIFO, never full, allocated only as
        large as it gets. A resumed run that goes on longer grows it (``replay.resize``)."""
        iterations = -(-steps // (self.n * self.repeat))
        stored = -(-iterations // self.chunk_steps) * self.chunk_steps
        return min(self.cfg.run.replay_capacity // self.n, stored)

    def _check_device_memory(self) -> None:
        """The replay at capacity (every seed's) against the device's memory, before anything
        is created; on a CPU the host check (``check_memory``) already did this."""
        run = self.cfg.run
        if run.replay_capacity % self.n:
            raise ConfigError(
                f"run.replay_capacity={run.replay_capacity} does not split into the "
                f"{self.n} environments' streams; use a multiple of {self.n}"
            )
        spec = dp.replay_spec(self.env, self.env.act_dim)
        need = replay_lib.nbytes(spec, self.rows * self.n) * self.n_seeds
        stats = jax.devices()[0].memory_stats() or {}
        limit = stats.get("bytes_limit")
        if limit and need > 0.8 * limit:
            raise ConfigError(
                f"replay at capacity needs {need / 2**30:.1f} GiB on the device, more than 80% "
                f"of its {limit / 2**30:.1f} GiB: lower --run.replay_capacity"
            )

    def _make_replay(self) -> None:
        self.replay, self.replay_missing = None, False  # in the carry

    def _fresh_carry(self, rows: int) -> dp.Carry:
        run = self.cfg.run
        seeds = [run.seed + k for k in range(self.n_seeds)]

        def one(k: int) -> dp.Carry:
            pick = self.seed_slice(k)
            keys = (pick(self.init_key), pick(self.policy_key), pick(self.sample_key))
            # Evaluation: the host runner's policy key and its own environment seed per agent.
            eval_env_key = jax_envs.seed_key(seeds[k] + EVAL_SEED_OFFSET)
            keys += (pick(self.eval_key), eval_env_key)
            env_seeds = envs_lib.env_seeds(seeds[k], self.n, 1, 0)
            env_keys = jnp.stack([jax_envs.seed_key(s) for s in env_seeds])
            return dp.init_carry(
                self.single, self.env, self.settings, rows * self.n, keys, env_keys,
                jnp.dtype(run.context_dtype),
            )  # fmt: skip

        carries = [one(k) for k in range(self.n_seeds)]
        if self.n_seeds == 1:
            return carries[0]
        return jax.tree.map(lambda *x: jnp.stack(x), *carries)

    def _init_state(self) -> None:
        self.run_id = None
        if self.meta is None:
            self.carry = self._fresh_carry(self.rows)
        else:
            saved_rows = int(self.meta.get("replay_rows", self.rows))
            fresh = jax.eval_shape(lambda: self._fresh_carry(saved_rows))
            stored, meta = self.ckpt.restore(without_empty(fresh), self.resume_step)
            self.carry = with_empty(fresh, stored)
            if saved_rows < self.rows:  # this run goes on longer than the saved one planned
                grow = functools.partial(
                    replay_lib.resize, rows=self.rows, online=self.settings.online
                )
                replay = self.carry.replay
                self.carry = self.carry._replace(
                    replay=grow(replay)
                    if self.n_seeds == 1
                    else _per_seed(grow, replay, self.n_seeds)
                )
            self.counters.update(meta["counters"])
            self.run_id = meta["wandb_run_id"]
            print(f"resumed from checkpoint at env step {self.env_steps}", file=sys.stderr)
            # Rows the interrupted run logged after this checkpoint come again from here.
            for path in [self.logdir / "metrics.jsonl", *self.logdir.glob("seed*/metrics.jsonl")]:
                drop_rows_after(path, self.env_steps)
        self.carry = unshared(self.carry)
        self.state = self.acting = self.carry.state

    # --- the loop --------------------------------------------------------------------------

    @property
    def env_steps(self) -> int:
        return self.counters["agent_steps"] * self.repeat

    def run(self) -> dict[str, Any]:
        run, c = self.cfg.run, self.counters
        while self.env_steps < run.steps and self.stop.signum is None:
            before = self.env_steps
            self.carry, steps = self.chunk(self.carry)
            self.state = self.acting = self.carry.state
            steps = jax.device_get(steps)
            c["agent_steps"] += self.chunk_steps * self.n
            c["updates"] = int(np.max(jax.device_get(self.carry.updates)))
            c["next_eval"] = int(np.max(jax.device_get(self.carry.next_eval)))
            self._log_episodes(steps, before)
            self._log_evaluations(steps, before)
            self._log_metrics()
            self._report()
            if self.env_steps >= c["next_save"] or self.env_steps >= run.steps:
                while c["next_save"] <= self.env_steps:
                    c["next_save"] += run.save_every
                self.save()
        self.save()  # stopped by a signal between chunks: the state where it stopped
        self.ckpt.wait()
        return self.summary()

    def _log_episodes(self, steps: dict, before: int) -> None:
        """The episode rows of a chunk: at each agent step where episodes ended, per seed."""
        last, ret, length = steps["is_last"], steps["return"], steps["length"]
        if self.n_seeds == 1:
            last, ret, length = last[None], ret[None], length[None]
        for k in range(self.n_seeds):
            for t in np.flatnonzero(last[k].any(-1)):
                ended = np.flatnonzero(last[k, t])
                self.counters["episodes"] += len(ended)
                count = self.counters["episodes"]
                if self.n_seeds > 1:  # each seed counts its own, as the host runner's rows
                    per_seed = self.counters.setdefault("seed_episodes", [0] * self.n_seeds)
                    per_seed[k] += len(ended)
                    count = per_seed[k]
                row = {
                    "episode/return": float(np.mean(ret[k, t, ended])),
                    "episode/length": float(np.mean(length[k, t, ended])) * self.repeat,
                    "episode/count": count,
                }
                step = before + (t + 1) * self.n * self.repeat
                self.logger.scalars(step, row, **({"seed": k} if self.n_seeds > 1 else {}))

    def _log_evaluations(self, steps: dict, before: int) -> None:
        """``eval/return`` at each agent step of the chunk where an evaluation ran, per seed."""
        if "eval_return" not in steps:
            return
        returns = np.asarray(steps["eval_return"]).reshape(self.n_seeds, -1)
        evaluated = np.asarray(steps["evaluated"]).reshape(self.n_seeds, -1)
        for k in range(self.n_seeds):
            for t in np.flatnonzero(evaluated[k]):
                step = before + (t + 1) * self.n * self.repeat
                to_seed = {"seed": k} if self.n_seeds > 1 else {}
                self.logger.scalars(step, {"eval/return": float(returns[k, t])}, **to_seed)

    def _log_metrics(self) -> None:
        """The updates' mean metrics since the last log (then zeroed in the carry), replay's
        size, the update count and the throughput since the previous log."""
        sums, count = jax.device_get((self.carry.metric_sums, self.carry.metric_count))
        count = np.asarray(count)
        if np.any(count):
            means = {k: np.asarray(v) / np.maximum(count, 1) for k, v in sums.items()}
            if not all(np.all(np.isfinite(v)) for v in means.values()):
                raise NonFiniteLoss(self.counters["updates"], means)
            zero = jax.tree.map(jnp.zeros_like, self.carry.metric_sums)
            self.carry = self.carry._replace(
                metric_sums=zero, metric_count=jnp.zeros_like(self.carry.metric_count)
            )
        else:
            means = {}
        stored = int(np.max(jax.device_get(replay_lib.stored(self._first(self.carry.replay)))))
        now, env_steps, updates = time.time(), self.env_steps, self.counters["updates"]
        base = {"replay/steps": stored * self.n, "run/updates": updates}
        if self.last_log is not None:
            t0, steps0, updates0 = self.last_log
            base["run/env_steps_per_s"] = (env_steps - steps0) / max(now - t0, 1e-9)
            base["run/updates_per_s"] = (updates - updates0) / max(now - t0, 1e-9)
        self.last_log = (now, env_steps, updates)
        for k in range(self.n_seeds):
            row = {name: float(v if self.n_seeds == 1 else v[k]) for name, v in means.items()}
            row.update(base)
            self.logger.scalars(env_steps, row, **({"seed": k} if self.n_seeds > 1 else {}))
        self.progress_line()

    def _report(self) -> None:
        """The open-loop report (``Reports.log_openloop``) when run.report_every is due and
        replay holds a window: on B windows drawn uniformly from each seed's replay with a key
        of the env step (the host runner reports on the batch of the update at that step; the
        chunk keeps none)."""
        run, c = self.cfg.run, self.counters
        if not run.report_every or self.env_steps < c["next_report"]:
            return
        window = self.settings.batch_length + self.settings.context
        if int(np.min(jax.device_get(replay_lib.stored(self.carry.replay)))) < window:
            return  # no batch yet: the host runner's first report also follows an update
        while c["next_report"] <= self.env_steps:  # one report, however late
            c["next_report"] += run.report_every
        batch = self.report_batch(self.carry.replay, self.carry.sample_key, self.env_steps)
        self.log_openloop(jax.device_get(batch), self.env_steps)

    def _first(self, tree: Any) -> Any:
        return tree if self.n_seeds == 1 else jax.tree.map(lambda x: x[0], tree)

    def progress_line(self) -> None:
        print(
            f"{self.env_steps}/{self.cfg.run.steps} env steps | {self.counters['updates']} updates",
            file=sys.stderr,
        )

    def save(self) -> None:
        """A checkpoint of the whole carry at this env step (one per step)."""
        if self.ckpt.latest_step() == self.env_steps:
            return
        self.ckpt.wait()
        meta = {
            "config": self.cfg_dict,
            "counters": dict(self.counters),
            "replay": None,
            "processes": 1,
            "wandb_run_id": self.logger.run_id,
            "step_unit": "env_steps",
            "state_layout": STATE_LAYOUT,
            "loop": "device",
            "replay_rows": replay_lib.rows_per_stream(self._first(self.carry.replay)),
        }
        self.ckpt.save(self.env_steps, without_empty(self.carry), meta)

    def summary(self) -> dict[str, Any]:
        """The final counters, whether a signal stopped the run and a digest of the
        parameters (one per seed), as the host runner's summary."""
        state = jax.device_get(self.carry.state)
        digest = (
            params_digest(state)
            if self.n_seeds == 1
            else [params_digest(seeds_lib.take(state, k)) for k in range(self.n_seeds)]
        )
        return {
            "counters": dict(self.counters),
            "env_steps": self.env_steps,
            "interrupted": self.env_steps < self.cfg.run.steps,
            "loop": "device",
            "params_sha256": digest,
        }


def uses_device_loop(cfg: Any) -> bool:
    """run.loop 'device', or 'auto' on a JAX task (mjx:, gymnax:): their environments step
    inside the compiled program, so the device never waits on the host."""
    loop = cfg.run.loop
    return loop == "device" or (loop == "auto" and envs_lib.is_jax_task(cfg.env.task))


# Open-loop report batches draw with fold_in(fold_in(sample key, REPORT_DRAWS), env step):
# apart from the updates' draws, fold_in(sample key, update count).
REPORT_DRAWS = 2**31 - 1


def _report_batch(
    replay: replay_lib.DeviceReplay, key: jax.Array, env_steps: Any, settings: dp.Settings
) -> dict:
    """B uniform windows of T steps ([B, T, ...], with their context) for an open-loop
    report; the online queue is left as it is."""
    key = jax.random.fold_in(jax.random.fold_in(key, REPORT_DRAWS), env_steps)
    s = settings
    return replay_lib.sample(replay, key, s.batch_size, s.batch_length, s.context)[1].batch


def _per_seed(fn: Any, tree: Any, seeds: int) -> Any:
    """``fn`` on each seed's part of ``tree`` (leading axis K), stacked again."""
    parts = [fn(jax.tree.map(lambda x, k=k: x[k], tree)) for k in range(seeds)]
    return jax.tree.map(lambda *x: jnp.stack(x), *parts)


def train_on_device(cfg: Any, logdir: str | Path, run_id: str | None = None) -> dict[str, Any]:
    """Run (or resume) ``cfg`` on the device loop in ``logdir``; returns the summary."""
    with contextlib.closing(DeviceRunner(cfg, logdir, run_id)) as runner:
        return runner.run()
