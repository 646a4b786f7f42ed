"""Everything a training run holds, built (or restored from its logdir) before the first step.

``RunSetup(cfg, logdir, counters)`` builds in order: the device topology, the RNG keys, the
environments and the agent (both checked before anything is written: a task that cannot be
built or whose observations the agent cannot take is refused with its fix), then the logdir
and its lock (``experiments/logdir.py``: one run at a time), the checkpoint check against
``cfg``, replay, the compiled update, the training state (fresh, or restored with the counters
and replay) and the logger. A run that starts afresh keeps an earlier run's logs aside and
deletes only replay files it can name as its own. Every resource it opens is closed by
``close()``, also when building fails.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from agents.world_model import WorldModel, check_image_shape
from experiments import envs as envs_lib
from experiments.config import (
    RESUMABLE_FIELDS,
    Config,
    canonical,
    from_dict,
    make_agent,
    to_dict,
)
from experiments.config.validate import check_logdir, check_memory, validate
from experiments.envs import vec
from experiments.errors import ConfigError
from experiments.replay import Replay, discard_replay_files
from experiments.replay import device as device_replay
from experiments.run import identity
from experiments.run import seeds as seeds_lib
from experiments.run.checkpoint import Checkpointer, TargetMismatch
from experiments.run.compat import ConfigMismatch, check_config, check_layout, restore_state
from experiments.run.eval import EVAL_SEED_OFFSET
from experiments.run.logdir import LogdirLock, set_aside_earlier_logs
from experiments.run.logging import Logger, drop_rows_after
from experiments.run.scale import Topology
from experiments.run.signals import stop_on_signals

# The held-out gap's keys are fold_in(run key, GAP_KEY): a stream apart from the policy's,
# evaluation's and video's (split from the same key).
GAP_KEY = 1 << 30
SAMPLE_KEY = (1 << 30) + 1  # the keyed replay sampler's stream: fold_in(run key, SAMPLE_KEY)
# Replay k of process p samples with seed run.seed + k + p * REPLAY_SEEDS_PER_PROCESS: distinct
# for up to 2^20 seeds per process.
REPLAY_SEEDS_PER_PROCESS = 1 << 20


class NullLogger:
    """The logger of every process but the first: one run writes one set of logs."""

    run_id = None

    def scalars(self, step: int, metrics: Any, seed: int | None = None) -> None:
        pass

    def video(self, step: int, name: str, frames: Any, fps: int = 10, seed: int = 0) -> None:
        pass

    def image(self, step: int, name: str, image: Any, seed: int = 0) -> None:
        pass

    def artifact(self, directory: Any, step: int) -> None:
        pass

    def close(self) -> None:
        pass


class RunSetup:
    """The parts of a run (see the module doc); ``Runner`` steps them."""

    def __init__(
        self,
        cfg: Config,
        logdir: str | Path,
        counter_names: tuple[str, ...],
        run_id: str | None = None,
    ):
        if not str(logdir).strip():
            # Path("") is the current directory: a run would fill (and clean up in) it.
            raise ConfigError("--logdir is empty: name the run's directory, e.g. runs/walker")
        self.cfg, self.logdir = cfg, Path(logdir)
        self.given_run_id = run_id  # a new run's wandb id (the logdir's {run_id}), else None
        self.stack = contextlib.ExitStack()
        # Installed first: a signal while building stops the run before its first step.
        self.stop = self.stack.enter_context(stop_on_signals())
        try:
            self._build(counter_names)
        except BaseException:
            self.stack.close()
            raise

    def close(self) -> None:
        self.stack.close()

    def _build(self, counter_names: tuple[str, ...]) -> None:
        cfg, run = self.cfg, self.cfg.run
        # Refused before anything starts: a bad config, a replay too large for this machine.
        validate(cfg)
        check_memory(cfg)
        # Every device of every process; the batch is global and splits over them (scale.py).
        self.topo = Topology.create(fsdp=run.fsdp, lead=1 if run.seeds > 1 else 0)
        self.local_batch = self.topo.local_batch_size(run.batch_size)
        self.proc, self.procs = self.topo.process_index, self.topo.process_count
        self.lead = self.proc == 0  # the one process that logs, evaluates and records videos
        self.n_seeds = run.seeds
        self.n = cfg.env.envs  # environments per seed in this process
        self.cfg_dict = to_dict(cfg)
        self._make_keys()
        self._make_envs()
        self._make_agent()
        # Only now is anything written: the logdir, then its lock before any file in it.
        check_logdir(self.logdir)
        self.stack.callback(LogdirLock(self.logdir, self.proc).release)
        self.ckpt = Checkpointer(
            self.logdir / "checkpoints", keep=run.keep_checkpoints, async_save=True
        )
        self.stack.callback(self.ckpt.close)
        self.resume_step = self.ckpt.latest_step()
        self.meta = None if self.resume_step is None else self._check_resume()
        if self.lead:
            if self.meta is None:
                set_aside_earlier_logs(self.logdir)
            (self.logdir / "config.json").write_text(json.dumps(self.cfg_dict, indent=2))
        self._make_replay()
        self.counters: dict[str, Any] = dict.fromkeys(counter_names, 0)
        self.counters.update(
            next_log=run.log_every,
            next_eval=run.eval_every,
            next_save=run.save_every,
            next_report=run.report_every,
        )
        self._init_state()
        self._choose_run_id()
        self._make_logger()

    def _check_resume(self) -> dict[str, Any]:
        """The latest checkpoint's meta, if it was written under this config, code and
        process count; a checkpoint whose meta cannot be read is set aside (_set_aside)."""
        while True:
            try:
                meta, err = self.ckpt.restore_meta(self.resume_step), None
            except Exception as failed:  # any damage: fall back, keep the files
                meta, err = None, failed
            if self.procs > 1:  # one process's damage is everyone's: all fall back together
                err = self._agree_on_damage(err)
            if err is None:
                break
            self._set_aside(self.resume_step, err)
        try:
            # Fields added to the code after the checkpoint was written take their defaults.
            saved = canonical(to_dict(from_dict(meta["config"])))
            check_config(saved, canonical(self.cfg_dict), ignore=RESUMABLE_FIELDS)
        except ValueError as err:
            raise ConfigMismatch(f"{self.logdir}: {err}") from None
        self.layout = check_layout(meta, self.logdir)
        saved_procs = meta.get("processes", 1)
        if saved_procs != self.procs:
            raise ConfigMismatch(
                f"{self.logdir}: the checkpoint was written by {saved_procs} process(es), each "
                f"with its own replay; resume it with {saved_procs} process(es) (the number of "
                "devices per process may change)"
            )
        return meta

    def _agree_on_damage(self, err: BaseException | None) -> BaseException | None:
        """Whether any process failed to read the checkpoint's meta (every process reads it
        alone): this process's error, or one naming the process that failed."""
        from jax.experimental import multihost_utils

        failed = multihost_utils.process_allgather(np.asarray(err is not None))
        if err is None and failed.any():
            first = int(np.flatnonzero(failed)[0])
            err = RuntimeError(f"process {first} could not read its meta")
        return err

    def _set_aside(self, step: int, err: BaseException) -> None:
        """A committed checkpoint that does not restore: moved to ``checkpoints-damaged/`` with
        a warning (never deleted), and the run goes on from the one before it. With several
        processes (one logdir, as multi-process checkpoints need), all have agreed on the
        damage (_agree_on_damage); process 0 moves the step, and every process takes the step
        to resume from from process 0 once it has."""
        what = f"{type(err).__name__}: {str(err)[:300]}"
        older = [s for s in self.ckpt.all_steps() if s < step]
        if not older:
            raise ConfigMismatch(
                f"{self.logdir}: checkpoint {step}, the only one, does not restore ({what}). "
                "Nothing was changed; start a new logdir, or move checkpoints/ aside to start "
                "this one from scratch"
            ) from err
        where = self.logdir / "checkpoints-damaged"
        if self.procs == 1:
            dest = self.ckpt.set_aside(step, where)
            self.resume_step = self.ckpt.latest_step()
        else:
            from jax.experimental import multihost_utils

            dest = self.ckpt.set_aside(step, where) if self.proc == 0 else str(where)
            # Process 0's view of the directory decides (another host's listing may lag).
            latest = multihost_utils.broadcast_one_to_all(np.int64(self.ckpt.latest_step() or 0))
            self.ckpt.reload()
            self.resume_step = int(latest)
        print(
            f"warning: checkpoint {step} in {self.logdir} does not restore ({what}); moved it "
            f"to {dest} (kept) and resuming from env step {self.resume_step}",
            file=sys.stderr,
        )

    def _make_keys(self) -> None:
        """With run.seeds K, every key has a leading seed axis [K]: agent k's are those of the
        run with seed run.seed + k (seeds.py)."""
        run = self.cfg.run
        if self.n_seeds == 1:
            key = jax.random.key(run.seed)
            keys = jax.random.split(key, 4)
        else:
            key = jnp.stack([jax.random.key(run.seed + k) for k in range(self.n_seeds)])
            keys = jax.vmap(jax.random.split, (0, None))(key, 4).T
        self.init_key, self.policy_key, self.eval_key, self.video_key = keys
        if self.proc:  # each process explores with its own noise
            self.policy_key = seeds_lib.fold_in(self.policy_key, self.proc)
        self.gap_key = seeds_lib.fold_in(key, GAP_KEY)
        # Replay's sample draws with run.replay_sampler='keyed' (and the device loop's).
        self.sample_key = seeds_lib.fold_in(key, SAMPLE_KEY)
        if self.proc:
            self.sample_key = seeds_lib.fold_in(self.sample_key, self.proc)

    def _make_envs(self) -> None:
        """``n x seeds`` environments (seed-major). Environment i of process p is seeded
        env_seed(seed, p * n + i): one numbering over the run; agent k of many seeds has the
        environments of the run with seed run.seed + k."""
        cfg, run, n = self.cfg, self.cfg.run, self.n
        self.vec = vec.make_envs(
            cfg.env.task,
            cfg.env.obs,
            n * self.n_seeds,
            run.seed,
            cfg.env.parallel,
            seeds=envs_lib.env_seeds(run.seed, n, self.n_seeds, self.proc),
            **envs_lib.env_kwargs(cfg.env),
        )
        self.stack.enter_context(self.vec)
        self.repeat = self.vec.action_repeat
        self.obs_keys = tuple(self.vec.obs_spec)
        image = self.vec.obs_spec.get("image")
        if image is not None:  # [H, W, C] from env.size and env.gray; C 1 or 3 for the nets
            try:
                check_image_shape(image[0], len(cfg.model.mults))
            except ValueError as err:
                raise ConfigError(f"{cfg.env.task}: {err}") from None
        check_memory(cfg, self.vec.obs_spec)  # exact now that the observations are known

    def make_eval_env(self, k: int) -> Any:
        """Seed k's evaluation environment (its own seed, apart from the training ones)."""
        cfg = self.cfg
        seed = cfg.run.seed + k + EVAL_SEED_OFFSET
        kwargs = envs_lib.env_kwargs(cfg.env)
        return envs_lib.make_env(cfg.env.task, cfg.env.obs, seed, cfg.run.eval_video, **kwargs)

    def _make_agent(self) -> None:
        """One seed's agent (``single``), the agent over all seeds, its compiled update and
        the held-out bounds (run.gap_particles) as one compiled program."""
        run, vec = self.cfg.run, self.vec
        obs_shapes = tuple((k, tuple(vec.obs_spec[k][0])) for k in self.obs_keys)
        try:
            self.single = make_agent(self.cfg, obs_shapes, vec.act_dim, vec.discrete)
        except ValueError as err:  # what the agent cannot take of this task, with the fix
            raise ConfigError(f"{self.cfg.agent} on {self.cfg.env.task}: {err}") from None
        self.agent = (
            self.single if self.n_seeds == 1 else seeds_lib.SeedBatch(self.single, self.n_seeds)
        )
        wm, particles = getattr(self.single, "wm", None), run.gap_particles
        self.heldout_fn = jax.jit(
            lambda p, b, k: wm.apply(p, b, k, particles, method=WorldModel.heldout_bounds)
        )
        self.abstract = self.topo.abstract_state(self.agent.init, self.init_key)
        self.train_fn = self.topo.jit_train(self.agent.update, self.abstract)

    def _make_replay(self) -> None:
        """One replay per seed in ``replay/`` (``replay-process<p>/`` for process p > 0)."""
        cfg, run = self.cfg, self.cfg.run
        name = "replay" if self.proc == 0 else f"replay-process{self.proc}"
        replay_dir = self.logdir / name
        if self.meta is None and replay_dir.exists():
            # Chunks without any checkpoint come from a run killed before its first save (or
            # whose checkpoints were removed): nothing refers to them, and a fresh start
            # collects that data again. Only files named as replay writes them are deleted.
            dirs = [replay_dir, *replay_dir.glob("seed*")]
            removed = sum(discard_replay_files(d) for d in dirs if d.is_dir())
            if removed:
                print(
                    f"no checkpoint in {self.logdir}: deleted {removed} replay file(s) of an "
                    "unfinished earlier run",
                    file=sys.stderr,
                )
        # A resumed run whose replay directory was moved aside (a damaged file, see
        # ReplayDamaged) starts from an empty replay and refills it by collecting.
        self.replay_missing = self.meta is not None and not replay_dir.exists()
        online = run.batch_length + cfg.model.replay_context if run.replay_online else 0
        replays = [
            Replay(
                run.replay_capacity,
                replay_dir if self.n_seeds == 1 else replay_dir / f"seed{k}",
                run.replay_chunk,
                run.seed + k + self.proc * REPLAY_SEEDS_PER_PROCESS,
                context_dtype=run.context_dtype,
                online=online,
            )
            for k in range(self.n_seeds)
        ]
        if run.replay_sampler == "keyed":  # seed k's draws as the device loop makes them
            for k, replay in enumerate(replays):
                key = self.sample_key if self.n_seeds == 1 else self.sample_key[k]
                updates = lambda: self.counters["updates"]
                replay.draw = device_replay.host_draws(key, self.local_batch, updates)
        self.replay = replays[0] if self.n_seeds == 1 else seeds_lib.ReplaySet(replays)

    def _init_state(self) -> None:
        """A fresh state, or the checkpoint's restored into this run's shardings (whatever
        devices it came from) with its counters and replay."""
        self.run_id = None
        if self.meta is None:
            self.state = self.topo.init_state(self.agent.init, self.init_key)
            return
        while True:
            try:
                self.state, meta = restore_state(
                    self.ckpt, self.abstract, self.resume_step, self.layout
                )
                break
            except TargetMismatch as err:  # not damage: this code builds another state
                raise ConfigMismatch(f"{self.logdir}: {err}") from None
            except Exception as err:  # any damage: fall back, keep the files
                if self.procs > 1:
                    # The restore is a collective: a process that failed cannot tell whether the
                    # others did, so nothing is moved automatically.
                    raise ConfigMismatch(
                        f"{self.logdir}: checkpoint {self.resume_step} does not restore "
                        f"({type(err).__name__}: {str(err)[:300]}). Move "
                        f"{self.ckpt.directory}/{self.resume_step} out of checkpoints/ and start "
                        "the processes again to resume from the one before"
                    ) from err
                self._set_aside(self.resume_step, err)
                self.meta = self._check_resume()
        self.counters.update(meta["counters"])
        if self.replay_missing:
            print(
                f"warning: {self.logdir} has a checkpoint but no replay directory: resuming "
                "the agent with an empty replay (training waits until it holds a batch again)",
                file=sys.stderr,
            )
        else:
            self.replay.load(meta["replay"][self.proc] if self.procs > 1 else meta["replay"])
        self.run_id = meta["wandb_run_id"]
        resumed_at = self.counters["agent_steps"] * self.repeat
        print(f"resumed from checkpoint at env step {resumed_at}: {self.counters}", file=sys.stderr)
        if self.lead:  # logs written after that checkpoint by the run that was interrupted
            for path in [self.logdir / "metrics.jsonl", *self.logdir.glob("seed*/metrics.jsonl")]:
                drop_rows_after(path, resumed_at)

    def _choose_run_id(self) -> None:
        """The wandb run id(s) to continue: the checkpoint's, else those a run killed before its
        first checkpoint wrote to ``wandb.json``, else the one given (``{run_id}``) or a sweep
        agent's; None: a new id."""
        if self.run_id is None:
            self.run_id = identity.read_run_id(self.logdir)
        if self.run_id is None:
            self.run_id = self.given_run_id or identity.sweep_run_id()
        if self.n_seeds > 1 and isinstance(self.run_id, str):  # the given id is seed 0's
            self.run_id = [self.run_id] + [None] * (self.n_seeds - 1)
        elif self.n_seeds == 1 and isinstance(self.run_id, list):
            self.run_id = self.run_id[0]

    def _make_logger(self) -> None:
        """jsonl (+ wandb, TensorBoard) on process 0: one per seed with many seeds, grouped."""
        lg, logdir = self.cfg.logging, self.logdir
        git = identity.git_state() if self.lead else None
        config = self.cfg_dict if git is None else {**self.cfg_dict, "git": git}
        make_logger = functools.partial(
            Logger,
            wandb_mode=lg.wandb,
            project=lg.project,
            entity=lg.entity or None,
            tags=lg.tags,
            tensorboard=lg.tensorboard,
        )
        if not self.lead:
            self.logger = NullLogger()
        elif self.n_seeds == 1:
            self.logger = make_logger(
                logdir,
                config,
                group=lg.group or None,
                name=lg.name or logdir.name,
                run_id=self.run_id,
            )
        else:
            self.logger = seeds_lib.LoggerSet(
                logdir,
                config,
                self.n_seeds,
                self.cfg.run.seed,
                self.run_id,
                make_logger,
                lg.name or logdir.name,
                lg.group or logdir.name,
            )
        self.stack.callback(self.logger.close)
        if self.lead:
            identity.write_run_id(logdir, self.logger.run_id)
            identity.record_git_state(logdir, self.counters["agent_steps"] * self.repeat, git)
