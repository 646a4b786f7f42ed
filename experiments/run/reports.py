"""What a run reports: its metrics and episodes, evaluations (with a video of the agent), the
world model's open-loop reports, the pre-flight line before the first step and the summary
after the last (``Reports``, a part of ``Runner``
over the state ``RunSetup`` builds)."""

from __future__ import annotations

import contextlib
import functools
import math
import sys
import time
from typing import Any

import jax
import numpy as np

from experiments import envs as envs_lib
from experiments.config.validate import first_update_iteration, replay_bytes
from experiments.run import openloop as openloop_lib
from experiments.run import seeds as seeds_lib
from experiments.run.eval import EVAL_SEED_OFFSET, Camera, evaluate, heldout_gap
from experiments.run.metrics import params_digest

# Open-loop videos show the first VIDEO_ROWS sequences of a batch (one GIF row each).
VIDEO_ROWS = 4
# Evaluation videos play at EVAL_FPS agent steps per second.
EVAL_FPS = 20


def format_bytes(n: int) -> str:
    """``n`` bytes in binary units: '512 B', '3.2 MiB', '1.25 GiB'."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.{2 if unit == 'GiB' else 1}f} {unit}"
    return f"{n} B"


class Reports:
    """Logging, evaluation and the run's summary; mixed into ``Runner``, whose attributes
    (``cfg``, ``counters``, ``logger``, ``replay``, ``state``, ...) it reads."""

    def log_metrics(self) -> None:
        """The mean of each metric over the updates since the last log, replay's size, the
        update count and the throughput since the previous log (wall clock)."""
        scalars = self.means.pop(self.counters["updates"])
        scalars.update({"replay/steps": len(self.replay), "run/updates": self.counters["updates"]})
        now, env_steps, updates = time.time(), self.env_steps, self.counters["updates"]
        if self.last_log is not None:
            t0, steps0, updates0 = self.last_log
            scalars["run/env_steps_per_s"] = (env_steps - steps0) / max(now - t0, 1e-9)
            scalars["run/updates_per_s"] = (updates - updates0) / max(now - t0, 1e-9)
        self.last_log = (now, env_steps, updates)
        self.logger.scalars(env_steps, scalars)
        self.logged_at = env_steps

    def log_episodes(self, ended: np.ndarray) -> None:
        """Mean return and length of the episodes that just ended, per seed, and the fields of
        the env's ``log_*`` keys (``EpisodeLogs.fields``: episode/<name>, achievements/<name>)."""
        for k in range(self.n_seeds):
            mine = ended[ended // self.n == k]
            if not len(mine):
                continue
            self.counters["episodes"] += len(mine)
            if self.n_seeds == 1:
                count = self.counters["episodes"]
            else:
                self.counters["seed_episodes"][k] += len(mine)
                count = self.counters["seed_episodes"][k]
            row = {
                "episode/return": float(np.mean(self.ep_return[mine])),
                "episode/length": float(np.mean(self.ep_length[mine])) * self.repeat,
                "episode/count": count,
                **self.ep_logs.fields(mine, k),
            }
            self.logger.scalars(self.env_steps, row, **({"seed": k} if self.n_seeds > 1 else {}))

    def evaluate(self) -> None:
        """Evaluation episodes (and the held-out gap on the first) of every seed's agent, each
        in its own evaluation environment, on this process."""
        run, env_steps = self.cfg.run, self.env_steps
        for k in range(self.n_seeds):
            if k not in self.eval_envs:
                # closing(): the Env protocol promises close(), not a context manager.
                env = self.make_eval_env(k)
                self.eval_envs[k] = self.stack.enter_context(contextlib.closing(env))
                if run.eval_video:
                    self.cameras[k] = Camera(self.eval_envs[k])
            one = self.seed_slice(k)
            to_seed = {} if self.n_seeds == 1 else {"seed": k}
            state_k = one(self.acting)
            ret, episode, frames = evaluate(
                self.single,
                state_k,
                self.cfg,
                self.eval_envs[k],
                jax.random.fold_in(one(self.eval_key), env_steps),
                self.obs_keys,
                record=run.gap_particles > 0,
                # Its own seed per evaluation: the returns do not depend on a resume.
                seed=envs_lib.env_seed(run.seed + k + EVAL_SEED_OFFSET, 0, env_steps),
                camera=self.cameras.get(k),
            )
            self.logger.scalars(env_steps, {"eval/return": ret}, **to_seed)
            if frames is not None:
                self.logger.video(env_steps, "eval/video", frames, EVAL_FPS, **to_seed)
            if episode is not None:
                gap_key = jax.random.fold_in(one(self.gap_key), env_steps)
                gap = heldout_gap(self.single, state_k, episode, run, gap_key, self.heldout_fn)
                self.logger.scalars(env_steps, gap, **to_seed)

    def seed_slice(self, k: int):
        """The function that takes seed k's part of a tree with a seed axis (or the tree)."""
        if self.n_seeds == 1:
            return lambda x: x
        return functools.partial(seeds_lib.take, k=k)

    def log_openloop(self, batch: dict[str, np.ndarray], step: int) -> None:
        """The open-loop report (experiments/run/openloop.py) of every seed's world model on
        this process's share of a training batch: errors by horizon, the curves' picture and,
        for images, the video."""
        view = self.topo.local_view(self.state)  # on every process: it may gather (FSDP)
        if not self.lead or self.single.openloop is None:
            return
        key = seeds_lib.fold_in(self.video_key, self.counters["updates"])
        for k in range(self.n_seeds):
            one, to_seed = self.seed_slice(k), ({} if self.n_seeds == 1 else {"seed": k})
            sub = {name: v for name, v in one(batch).items() if name != "context"}
            pred = jax.device_get(self.single.openloop(one(view), sub, one(key)))
            truth = openloop_lib.targets(sub, getattr(self.single.wm, "cont_target", 1.0))
            self.logger.scalars(step, openloop_lib.openloop_errors(truth, pred), **to_seed)
            picture = openloop_lib.openloop_figure(truth, pred)
            self.logger.image(step, "openloop/curves", picture, **to_seed)
            if "image" in truth:
                rows = slice(0, VIDEO_ROWS)
                frames = openloop_lib.openloop_grid(truth["image"][rows], pred["image"][rows])
                self.logger.video(step, "openloop/video", frames, **to_seed)

    def preflight(self) -> None:
        """One line before the first step: sizes, counts and the planned number of updates."""
        run, vec = self.cfg.run, self.vec
        params = sum(x.size for x in jax.tree.leaves(self.state.params)) // self.n_seeds
        step_bytes, total = replay_bytes(self.cfg, vec.obs_spec, vec.act_dim)
        per_iteration = self.n * self.procs  # agent steps
        iterations = math.ceil(run.steps / (self.repeat * per_iteration))
        first = first_update_iteration(
            run, self.ctx_steps, self.repeat, self.n, self.procs, self.local_batch
        )
        planned = int(max(0, iterations - first) * per_iteration / self.per_update)
        print(
            f"pre-flight: {params:,} parameters | replay at capacity {run.replay_capacity:,} "
            f"steps x {self.n_seeds} seed(s) x {step_bytes:,} B = {format_bytes(total)} | "
            f"{run.steps:,} env steps = {iterations * per_iteration:,} agent steps "
            f"(repeat {self.repeat}, {self.n} envs x {self.procs} process(es)) | "
            f"{self.topo.size} device(s), {self.local_batch} of {run.batch_size} sequences per "
            f"update from this process | first update at env step "
            f"{first * per_iteration * self.repeat:,} | ~{planned:,} updates planned",
            file=sys.stderr,
        )

    def summary(self) -> dict[str, Any]:
        """The final counters, replay's size, whether a signal stopped the run, and a digest of
        the parameters (one per seed)."""
        view = self.topo.local_view(self.state)
        return {
            "counters": dict(self.counters),
            "replay_steps": len(self.replay),
            "env_steps": self.env_steps,
            "interrupted": self.env_steps < self.cfg.run.steps,  # stopped by a signal
            "process": self.proc,
            "devices": self.topo.size,
            "params_sha256": (
                params_digest(view)
                if self.n_seeds == 1
                else [params_digest(seeds_lib.take(view, k)) for k in range(self.n_seeds)]
            ),
        }
