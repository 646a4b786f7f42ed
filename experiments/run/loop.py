"""The training loop: collect -> replay -> train by ratio -> periodic log, eval, save, video.

``Runner(cfg, logdir)`` builds a run (or restores it from the logdir's last checkpoint: the
training state, counters and replay come back exactly); ``run()`` steps it to ``run.steps``:

    while not done:
        action = collect()         the policy acts on o_t; replay stores o_t
        train_owed()               the updates run.train_ratio owes by now
        step_environments(action)  o_{t+1}, episode returns
        periodic()                 log, evaluate, save when each is due

Counting: an *agent step* is one policy decision of one environment; an *environment step* is
one physics control step, so env_steps = agent_steps x action_repeat (the x axis of published
dm-control curves). ``run.train_ratio`` is replayed steps per agent step (DreamerV3), i.e. one
update of B x T replayed steps every B x T / train_ratio agent steps.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from agents.contract import STATE_LAYOUT
from agents.world_model import CONTEXT_KEYS
from experiments import envs as envs_lib
from experiments.config.validate import PREFILL_CHUNK
from experiments.run import pause
from experiments.run import seeds as seeds_lib
from experiments.run.checkpoint import STORAGE_ERRNOS, StorageError
from experiments.run.episodes import EpisodeLogs, without_logs
from experiments.run.eval import policy_obs
from experiments.run.metrics import MetricMeans, NonFiniteLoss, finite
from experiments.run.progress import Progress, process_start
from experiments.run.reports import Reports
from experiments.run.setup import RunSetup

# Saved with every checkpoint. 'credit' is the fractional number of updates owed under
# run.train_ratio (the ratio schedule's state); the 'next_*' fields are when each periodic
# action is due next, so a resumed run keeps the same rhythm. 'agent_steps' counts the
# environments of every process; 'episodes' (and 'seed_episodes' with many seeds) and
# 'stored_steps' count those of process 0, the one that logs them. 'prefilled' (0 or 1) is
# whether the random prefill of run.prefill_to_batch has ended.
COUNTERS = (
    "agent_steps",
    "prefilled",
    "updates",
    "episodes",
    "stored_steps",
    "credit",
    "next_log",
    "next_eval",
    "next_save",
    "next_report",
)


def record(obs: dict[str, np.ndarray], action: np.ndarray) -> dict[str, np.ndarray]:
    """What replay stores per env step: o_t, a_{t-1} (zeros at a reset), r_t and the flags (not
    the env's ``log_*`` keys, which only the episode rows read)."""
    rec = {k: v for k, v in without_logs(obs).items() if k != "reward"}
    first = obs["is_first"].astype(bool)
    rec["action"] = np.where(first[:, None], 0.0, action).astype(np.float32)
    rec["reward"] = obs["reward"].astype(np.float32)
    return rec


# Several processes agree whether to stop (a collective) every STOP_CHECK_EVERY iterations,
# not every step: a signal is acted on within that many iterations.
STOP_CHECK_EVERY = 64


class ContextWriteBack:
    """Holds an update's refreshed per-step states until they are written back into replay.

    Writing back before the next sample (not right after the update) lets the update run while
    the host steps the environments; the result is the same at every later sample and save.
    """

    def __init__(self, replay: Any, topo: Any):
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


class Runner(RunSetup, Reports):
    """One training run in ``logdir`` (built by ``RunSetup``), stepped by ``run()``."""

    def __init__(self, cfg: Any, logdir: str | Path, run_id: str | None = None):
        super().__init__(cfg, logdir, COUNTERS, run_id)
        run = cfg.run
        self.writeback = ContextWriteBack(self.replay, self.topo)
        self.means = MetricMeans(self.topo, self.n_seeds)
        if self.meta is not None:  # the metrics summed since the last log, as they were
            self.means.load(self.meta.get("metric_sums"))
        # Agent steps per update: one update of B x T replayed steps per B x T / train_ratio.
        self.per_update = run.batch_size * run.batch_length / run.train_ratio
        self.ctx_steps = cfg.model.replay_context
        self.preflight()
        # With run.exact_resume a resumed run starts where the uninterrupted one went on after
        # this checkpoint: from environments re-seeded at its step (cut_episodes).
        resumed = self.meta is not None and cfg.run.exact_resume
        self.obs = self.vec.reset(self.cut_seeds(self.env_steps) if resumed else None)
        self.carry = self.agent.init_carry(self.vec.num_envs)
        self.prev_action = np.zeros((self.vec.num_envs, self.vec.act_dim), np.float32)
        self.ep_return = np.zeros(self.vec.num_envs)
        self.ep_length = np.zeros(self.vec.num_envs, np.int64)
        self.ep_logs = EpisodeLogs(self.vec.num_envs, self.n_seeds, self.counters)
        if self.n_seeds > 1:
            self.counters.setdefault("seed_episodes", [0] * self.n_seeds)
        self.acting = self.topo.local_view(self.state)  # the policy's replica; None: stale
        self.pending_loss = None  # the last update's total loss, checked before acting next
        self.ready = False  # replay holds a batch's worth of data in every process
        self.logged_at = -1
        self.last_log: tuple[float, int, int] | None = None  # (time, env steps, updates)
        self.first_update: float | None = None
        self.eval_envs: dict[int, Any] = {}
        self.cameras: dict[int, Any] = {}  # each seed's evaluation camera (run.eval_video)
        self.progress = Progress(run.steps, self.env_steps, self.counters["updates"], not self.lead)

    @property
    def process_tag(self) -> str:
        return f".{self.proc}" if self.procs > 1 else ""

    @property
    def env_steps(self) -> int:
        return self.counters["agent_steps"] * self.repeat

    # --- the loop --------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Steps the run until ``run.steps`` env steps or a stop signal; the final checkpoint is
        written on the way out (unless the loss went non-finite). Returns the summary."""
        healthy = True
        try:
            while self.env_steps < self.cfg.run.steps and not self.stopping():
                t = self.counters["agent_steps"]
                action = self.collect(t)
                if self.cfg.run.overlap:
                    # The updates owed now sample only what is stored (up to o_t), so they can
                    # be dispatched before the environments step: the device computes them
                    # while the host steps, with the same results as in the order below.
                    self.train_owed(t)
                self.step_environments(action)
                if not self.cfg.run.overlap:
                    self.train_owed(t)
                self.periodic()
                if pause.wanted("env_step", self.env_steps):  # tests: a known moment
                    self.ckpt.wait()
                    stopped = lambda: self.stop.signum is not None
                    pause.point("env_step", self.env_steps, stopped, self.process_tag)
            self.check_loss()
            if self.logged_at != self.env_steps:  # the run's last metrics
                self.log_metrics()
        except NonFiniteLoss as err:
            healthy = False
            raise err.explained(self.ckpt.latest_step(), self.topo) from None
        except KeyboardInterrupt:
            healthy = False  # a second signal: stop at once, from the last periodic checkpoint
            raise
        except StorageError:
            healthy = False  # a final save would fail the same way
            raise
        except OSError as err:
            if err.errno not in STORAGE_ERRNOS:
                raise
            healthy = False
            raise StorageError(
                f"writing to {self.logdir} failed: {err}. The complete checkpoints "
                f"{self.ckpt.all_steps()} are unchanged; free disk space (or raise the quota) "
                "and re-run the same command to resume from the latest"
            ) from err
        except BaseException:
            # The final save is a collective with several processes: one that failed alone
            # would wait in it for the others forever. The last complete checkpoint stays.
            if self.procs > 1:
                healthy = False
            raise
        finally:
            if healthy:
                with self.stop.hold():  # a signal now waits for the checkpoint to complete
                    self.save(final=True)
                    pause.point("final_save", until=lambda: self.stop.count >= 2)
                    self.ckpt.wait()
            self.progress.show(self.env_steps, self.counters["updates"], force=True)
            if self.progress.tty:
                print(file=sys.stderr)
        return self.summary()

    def collect(self, t: int) -> np.ndarray:
        """The policy acts on o_t and replay stores it (``act_and_store``); ``[N, A]``."""
        self.check_loss()
        return self.act_and_store(self.obs, seeds_lib.fold_in(self.policy_key, t))

    def act_and_store(self, obs: dict[str, np.ndarray], key: jax.Array) -> np.ndarray:
        """The policy acts on ``obs`` (uniformly at random during prefill, through the agent so
        that its recurrent state follows the executed actions); replay stores the observation
        with the posterior after it as context. Returns the actions ``[N, A]``."""
        if self.acting is None:
            self.acting = self.topo.local_view(self.state)
        prefill = self.prefilling(self.counters["agent_steps"])
        inputs = policy_obs(obs, self.obs_keys)
        action, self.carry = self.agent.policy(
            self.acting, self.carry, inputs, key, "random" if prefill else "explore"
        )
        context = None
        if self.cfg.model.replay_context:
            context = {k: np.asarray(self.carry["state"][k]) for k in CONTEXT_KEYS}
        self.replay.add_batch(record(obs, self.prev_action), context=context)
        self.counters["stored_steps"] += self.n  # per seed
        return np.asarray(action, np.float32)

    def step_environments(self, action: np.ndarray) -> None:
        """o_{t+1} of every environment (auto-reset at episode ends); logs ended episodes."""
        self.obs = self.vec.step(action)
        self.prev_action = action
        self.counters["agent_steps"] += self.n * self.procs  # every process steps n envs
        self.ep_return += self.obs["reward"]
        self.ep_length += 1
        for i in np.flatnonzero(self.obs["is_first"]):
            self.ep_return[i], self.ep_length[i] = 0.0, 0  # auto-reset: a new episode began
        self.ep_logs.add(self.obs)  # the sums of the env's log_* keys
        self.log_episodes(np.flatnonzero(self.obs["is_last"]))

    def prefilling(self, t: int) -> bool:
        """Whether the policy acts uniformly at random at agent step t: before run.prefill
        environment steps and, with run.prefill_to_batch, until replay holds a batch. The 2023
        code steps its random policy PREFILL_CHUNK transitions at a time (ceil(100 / envs)
        steps of every environment) and checks its replay after each chunk, so the check here
        comes at the same steps."""
        run = self.cfg.run
        if t * self.repeat < run.prefill:
            return True
        if not run.prefill_to_batch or self.counters["prefilled"]:
            return False
        if (t // (self.n * self.procs)) % math.ceil(PREFILL_CHUNK / self.n) == 0:
            self.counters["prefilled"] = int(self.replay_ready())
        return not self.counters["prefilled"]

    def train_owed(self, t: int) -> None:
        """The updates owed after agent step t: once prefill is over and replay holds a
        batch's worth of windows, one per ``per_update`` agent steps (``run.train_ratio``)."""
        run = self.cfg.run
        if self.prefilling(t) or not self.replay_ready():
            return
        self.counters["credit"] += self.n * self.procs / self.per_update
        while self.counters["credit"] >= 1.0:
            batch = self.update()
            self.counters["credit"] -= 1.0
            env_steps = (t + self.n * self.procs) * self.repeat
            if run.report_every and env_steps >= self.counters["next_report"]:
                while self.counters["next_report"] <= env_steps:  # one report, however late
                    self.counters["next_report"] += run.report_every
                self.log_openloop(batch, env_steps)

    def update(self) -> dict[str, np.ndarray]:
        """One update on a fresh batch; returns this process's share of the batch."""
        self.writeback.flush()
        batch, rows, stamps = self.replay.sample_sequences(
            self.local_batch, self.cfg.run.batch_length, self.ctx_steps
        )
        self.check_loss()
        self.state, metrics, new_context = self.train_fn(self.state, self.topo.global_batch(batch))
        self.means.add(metrics)  # summed on the device: no transfer per update
        self.acting = None  # refreshed before the policy next reads it
        self.writeback.hold(rows, stamps, new_context)
        self.pending_loss = metrics
        self.counters["updates"] += 1
        if self.first_update is None:
            jax.block_until_ready(metrics)
            self.first_update = time.time()
            print(
                f"first update done {self.first_update - process_start():.1f} s after process "
                "start",
                file=sys.stderr,
            )
        return batch

    def periodic(self) -> None:
        """Whatever is due at this env step: the metrics' log, an evaluation, a checkpoint."""
        run, c, env_steps = self.cfg.run, self.counters, self.env_steps
        if env_steps >= c["next_log"]:
            c["next_log"] += run.log_every
            self.log_metrics()
        if run.eval_every and env_steps >= c["next_eval"]:
            c["next_eval"] += run.eval_every
            if self.acting is None:  # every process: it may gather (FSDP)
                self.acting = self.topo.local_view(self.state)
            if self.lead:
                self.evaluate()
        if env_steps >= c["next_save"]:
            c["next_save"] += run.save_every
            self.save()
        self.progress.show(env_steps, c["updates"])

    # --- the parts -------------------------------------------------------------------------

    def check_loss(self) -> None:
        """Raises NonFiniteLoss if the last update's loss is not finite. Called before the
        policy reads fresh parameters (it waits for the update anyway), so the check costs no
        extra synchronization."""
        if self.pending_loss is not None:
            metrics, self.pending_loss = self.pending_loss, None
            if not finite(metrics, self.topo):
                raise NonFiniteLoss(self.counters["updates"], metrics)

    def replay_ready(self) -> bool:
        """Whether replay holds a batch's worth of windows in every process: this process's
        share of B x T windows of T + context steps, as DreamerV3 waits for ``len(replay) >=
        batch_size * batch_length`` (its replay holds one item per window; 2024
        ``embodied/run/train.py``). Once true it stays true, so the processes agree on it (a
        collective) only until then."""
        if not self.ready:
            length = self.cfg.run.batch_length
            windows = self.replay.windows(length + self.ctx_steps)
            self.ready = not self.topo.any(windows < self.local_batch * length)
        return self.ready

    def stopping(self) -> bool:
        """A signal asked to stop; several processes agree on it every 64 iterations."""
        if self.procs == 1:
            return self.stop.signum is not None
        if (self.counters["agent_steps"] // (self.n * self.procs)) % STOP_CHECK_EVERY:
            return False
        return self.topo.any(self.stop.signum is not None)

    def save(self, final: bool = False) -> None:
        """A checkpoint numbered in env steps (the unit of --steps, save_every and the logs):
        the state, the counters, every process's replay state and the wandb run id."""
        if final and self.ckpt.latest_step() == self.env_steps:
            return
        # The previous checkpoint must be complete (or its failure raised) before replay's save
        # lets go of the files the checkpoint before that one needs.
        self.ckpt.wait()
        if self.cfg.run.exact_resume:
            self.cut_episodes()
        self.writeback.flush()
        replay_state = self.replay.save()
        if self.procs > 1:  # every process's replay state, in the one meta file process 0 writes
            gathered = self.topo.gather_json(json.dumps(replay_state))
            replay_state = [json.loads(x) for x in gathered]
        meta = {
            "config": self.cfg_dict,
            "counters": dict(self.counters),
            "replay": replay_state,
            "processes": self.procs,
            "wandb_run_id": self.logger.run_id,
            "metric_sums": self.means.state(),
            "step_unit": "env_steps",
            "state_layout": STATE_LAYOUT,
        }
        self.ckpt.save(self.env_steps, self.state, meta)
        if self.cfg.logging.artifacts and self.lead:
            self.ckpt.wait()  # the artifact holds the committed files
            self.logger.artifact(Path(self.ckpt.directory) / str(self.env_steps), self.env_steps)

    def cut_seeds(self, env_steps: int) -> list[int]:
        """The seeds environments restart from after a cut at ``env_steps``: environment i of
        process p and seed k gets env_seed(run.seed + k, p * n + i, env_steps)."""
        return envs_lib.env_seeds(self.cfg.run.seed, self.n, self.n_seeds, self.proc, env_steps)

    def cut_episodes(self) -> None:
        """run.exact_resume: every episode ends here, before the checkpoint. The current
        observation o_t is stored as its episode's last step (is_last, not terminal: the episode
        was truncated) with the posterior after it as context, and the environments restart
        from seeds fixed by the seed and the step. A run resumed from this checkpoint starts
        from the same observations, so it goes on exactly as this one does."""
        t = self.counters["agent_steps"]
        key = seeds_lib.fold_in(seeds_lib.fold_in(self.policy_key, t), 1)  # not collect's key
        self.act_and_store(dict(self.obs, is_last=np.ones_like(self.obs["is_last"])), key)
        self.obs = self.vec.reset(self.cut_seeds(self.env_steps))
        self.prev_action = np.zeros_like(self.prev_action)
        self.ep_return[:], self.ep_length[:] = 0.0, 0
        self.ep_logs.clear()


def train(cfg: Any, logdir: str | Path, run_id: str | None = None) -> dict[str, Any]:
    """Run (or resume) an experiment in ``logdir``; returns the final counters and returns.
    ``run_id``: the wandb id of a new run (a resumed one keeps its own). ``run.loop`` picks
    the device loop (``device_loop``) or this host runner."""
    from experiments.run.device_loop import train_on_device, uses_device_loop

    if uses_device_loop(cfg):
        return train_on_device(cfg, logdir, run_id)
    with contextlib.closing(Runner(cfg, logdir, run_id)) as runner:
        return runner.run()
