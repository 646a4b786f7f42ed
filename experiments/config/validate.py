"""Every bad config refused at the boundary, before any environment, process or file starts.

``validate(cfg)`` checks each field's range and every constraint between fields, and raises
``ValueError`` naming the field, its value, the constraint and a fix; ``check_memory(cfg)``
checks replay at capacity against this machine's memory. The agents' own sections
(``model``, ``dreamer``, ``planet``, ``sac``, ``opt``) check themselves with their
``validate()`` methods; this module checks the runner's sections and how they fit together.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from experiments import envs
from experiments.config.schema import Config
from experiments.envs import atari
from experiments.errors import ConfigError
from experiments.replay import step_bytes
from rssm.conv import image_grid

AGENTS = ("dreamer", "planet", "random", "sac")
# The share of the machine's memory replay may fill at capacity before a run is refused.
MEMORY_SHARE = 0.9
# Environment transitions the 2023 code's prefill loop steps between checks of its replay
# (8fa35f8 embodied/run/train.py: ``driver(random_agent.policy, steps=100)``).
PREFILL_CHUNK = 100

# The most environment steps a run may ask for: counts stay exact as floats (2^53 > 1e15).
MAX_STEPS = 10**15
# Floats a proprioceptive observation is assumed to hold before its env is built (dm-control's
# largest state vector is humanoid's 67).
PROPRIO_FLOATS = 256


def need(ok: bool, msg: str) -> None:
    if not ok:
        raise ConfigError(msg)


def check_logdir(path: Path) -> None:
    """Creates ``path`` (a directory, new or a run's) and proves it writable, or raises
    ``ConfigError`` naming the problem; writes nothing else."""
    if path.exists() and not path.is_dir():
        raise ConfigError(
            f"--logdir {path} is a file, not a directory: pass a new directory or the logdir "
            "of a run to resume"
        )
    probe = path / f".write-test-{os.getpid()}"  # one per process: several may share path
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ConfigError(
            f"--logdir {path} is not usable: {err.strerror or err} ({type(err).__name__}); pass "
            "a directory this user can create and write"
        ) from None


def validate(cfg: Config) -> Config:
    """Checks ``cfg`` (see the module doc); returns it unchanged."""

    need(cfg.agent in AGENTS, f"agent={cfg.agent!r}; expected one of {AGENTS}")
    envs.check_task(cfg.env.task)  # raises with the list of valid tasks
    _check_env(cfg)
    _check_run(cfg)
    _check_sections(cfg)
    _check_replay(cfg, action_repeat(cfg))
    _check_trains(cfg, action_repeat(cfg))
    _check_logging(cfg)
    return cfg


def action_repeat(cfg: Config) -> int:
    """The action repeat a run will use: env.action_repeat, else the task's default."""
    if cfg.env.action_repeat:
        return cfg.env.action_repeat
    return envs.task_action_repeat(cfg.env.task)


def _check_env(cfg: Config) -> None:
    e = cfg.env
    try:
        envs.check_obs(e.task, e.obs)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    modes = " or ".join(repr(m) for m in envs.OBS_MODES)
    need(e.obs in envs.OBS_MODES, f"env.obs={e.obs!r}; expected {modes}")
    need(e.envs >= 1, f"env.envs={e.envs}; need at least 1 environment")
    need(
        e.action_repeat >= 0,
        f"env.action_repeat={e.action_repeat}; use 0 for the task default or a positive repeat",
    )
    _check_size(cfg)
    need(
        e.time_limit >= 0,
        f"env.time_limit={e.time_limit}; use 0 for the task's own limit or a positive number of "
        "environment steps",
    )
    need(e.camera >= -1, f"env.camera={e.camera}; use -1 for the task's default camera")
    _check_atari(e)


def _check_atari(e: Any) -> None:
    """The Atari options (checked whatever the task, so a typo never waits for an Atari run),
    and Crafter's single action repeat."""
    for name, value, valid in (
        ("atari_actions", e.atari_actions, atari.ACTIONS),
        ("atari_lives", e.atari_lives, atari.LIVES),
    ):
        listed = " or ".join(repr(v) for v in valid)
        need(value in valid, f"env.{name}={value!r}; expected {listed}")
    need(e.atari_noops >= 0, f"env.atari_noops={e.atari_noops}; use 0 (no no-ops) or more")
    need(
        not e.task.startswith(envs.CRAFTER_PREFIX) or e.action_repeat in (0, 1),
        f"env.action_repeat={e.action_repeat} with {e.task}: Crafter steps once per action; "
        "use 0 or 1",
    )


def _check_size(cfg: Config) -> None:
    """env.size is (height, width), positive; with pixels, one the image networks take for
    len(model.mults) stages (``rssm.conv.image_grid``). A Gymnasium task's images are checked
    once its env exists (they are resized to env.size)."""
    e = cfg.env
    size = ",".join(map(str, e.size))
    need(
        len(e.size) == 2 and all(s >= 1 for s in e.size),
        f"env.size={size}; expected a positive height and width, e.g. --env.size 64,64",
    )
    if e.obs != "pixels":
        return
    try:
        image_grid(e.size, len(cfg.model.mults))
    except ValueError as err:
        raise ConfigError(
            f"env.size={size}: {err} (model.mults has {len(cfg.model.mults)} stages); set "
            "--env.size to one of them, e.g. --env.size 64,64 or --env.size 96,96"
        ) from None


def _check_run(cfg: Config) -> None:
    r = cfg.run
    need(0 <= r.seed < 2**31, f"run.seed={r.seed}; must lie in [0, 2^31)")
    need(r.steps > 0, f"run.steps={r.steps}; must be positive (environment steps to run)")
    need(
        r.steps <= MAX_STEPS,
        f"run.steps={r.steps:.3g} is more than {MAX_STEPS:.0e} environment steps (a thousand "
        "years at 30,000 steps/s): pass the number of environment steps to run",
    )
    need(r.seeds >= 1, f"run.seeds={r.seeds}; must be >= 1 (agents trained together)")
    need(
        r.batch_size >= 1 and r.batch_length >= 2,
        f"run.batch_size={r.batch_size}, run.batch_length={r.batch_length}; need >= 1 and >= 2",
    )
    need(
        r.train_ratio > 0,
        f"run.train_ratio={r.train_ratio}; must be > 0 (replayed steps per agent step): with 0 "
        "the run would never train",
    )
    need(
        math.isfinite(r.train_ratio),
        f"run.train_ratio={r.train_ratio}; must be finite (replayed steps per agent step, "
        "e.g. 512)",
    )
    need(r.prefill >= 0, f"run.prefill={r.prefill}; must be >= 0 environment steps")
    for name in ("log_every", "save_every"):
        value = getattr(r, name)
        need(value > 0, f"run.{name}={value}; must be a positive number of environment steps")
    for name, unit in (("eval_every", "environment steps"), ("report_every", "environment steps")):
        value = getattr(r, name)
        need(value >= 0, f"run.{name}={value}; must be >= 0 {unit} (0: never)")
    need(
        r.eval_episodes >= 1,
        f"run.eval_episodes={r.eval_episodes}; must be >= 1 (turn evaluation off with "
        "--run.eval_every 0)",
    )
    need(
        r.keep_checkpoints >= 1,
        f"run.keep_checkpoints={r.keep_checkpoints}; must be >= 1 (the latest resumes the run)",
    )
    need(
        r.gap_particles >= 0 and r.gap_sequences >= 1,
        f"run.gap_particles={r.gap_particles}, run.gap_sequences={r.gap_sequences}; need "
        ">= 0 (0: off) and >= 1",
    )
    need(
        r.context_dtype in ("float16", "float32"),
        f"run.context_dtype={r.context_dtype!r}; expected 'float16' or 'float32'",
    )
    if r.gap_particles:
        _check_gap(cfg)


def first_update_iteration(
    run: Any, context: int, repeat: int, envs: int, processes: int = 1, local_batch: int = 0
) -> int:
    """The loop iteration (every environment steps once per iteration, from 0) whose step is
    followed by the first update: the first at which prefill is over and this process's replay
    holds its share (``local_batch``, default run.batch_size) of B x T windows of T + context
    steps. After iteration i stores its observation, each of the ``envs`` streams holds i + 1
    steps, so replay holds envs (i + 1 - (T + context) + 1) windows (before it is full).

    ``run`` is the run section of the config (prefill, prefill_to_batch, batch size and
    length); ``repeat`` the action repeat; ``processes`` the processes stepping ``envs``
    environments each."""
    local_batch = local_batch or run.batch_size
    length = run.batch_length + context
    per_stream = length - 1 + math.ceil(local_batch * run.batch_length / envs)
    random_until = math.ceil(run.prefill / (repeat * envs * processes))
    # The iteration that stores each stream's per_stream-th step, once prefill is over.
    first = max(per_stream - 1, random_until)
    if run.prefill_to_batch:  # checked every `chunk` iterations, before that step's store
        chunk = math.ceil(PREFILL_CHUNK / envs)
        first = max(first, math.ceil(max(per_stream, random_until) / chunk) * chunk)
    return first


def _check_trains(cfg: Config, repeat: int) -> None:
    """A run must reach its first update (from one process; several reach it sooner)."""
    r, n = cfg.run, cfg.env.envs
    first = first_update_iteration(r, cfg.model.replay_context, repeat, n) * n * repeat
    need(
        r.steps > first,
        f"run.steps={r.steps} ends before the first update, at env step {first:,} (run.prefill "
        f"{r.prefill}{', prefill_to_batch' if r.prefill_to_batch else ''}, then replay holding "
        f"{r.batch_size} x {r.batch_length} windows from {n} environment(s)): the run would "
        f"train nothing; raise --steps above {first:,} or lower --run.prefill",
    )


def _check_gap(cfg: Config) -> None:
    m, r = cfg.model, cfg.run
    need(
        cfg.agent != "sac",
        f"run.gap_particles={r.gap_particles}: agent sac has no world model to bound; set "
        "--run.gap_particles 0",
    )
    obs_dist = m.vector_dist if cfg.env.obs == "proprio" else m.image_dist
    soft_cont = cfg.agent == "dreamer" and cfg.dreamer.contdisc
    need(
        obs_dist in ("normal", "discretized_normal")
        and m.reward_dist == "normal"
        and not soft_cont,
        f"run.gap_particles={r.gap_particles} needs every likelihood term to be a density "
        f"(observations {obs_dist!r}, reward {m.reward_dist!r}, continue targets "
        f"{'soft' if soft_cont else 'hard'}): set --model.vector_dist normal (proprio) or "
        "--model.image_dist discretized_normal (pixels), --model.reward_dist normal and "
        "--dreamer.contdisc false, or --run.gap_particles 0",
    )


def _check_sections(cfg: Config) -> None:
    """The agents' own sections, and what the chosen agent needs of the others."""
    cfg.model.validate()
    cfg.opt.validate()
    cfg.dreamer.validate()
    cfg.planet.validate()
    cfg.sac.validate()
    need(
        cfg.agent != "sac" or cfg.env.obs == "proprio",
        f"agent sac learns from states; env.obs={cfg.env.obs!r}: use --obs proprio",
    )
    need(
        cfg.agent != "sac" or not cfg.model.replay_context,
        "agent sac has no recurrent state to store in replay: set --model.replay_context 0",
    )


def _check_replay(cfg: Config, repeat: int) -> None:
    """Replay must hold a batch, and prefill must give each stream one training sequence."""
    r, n = cfg.run, cfg.env.envs
    window = r.batch_length + cfg.model.replay_context  # consecutive steps of one stream
    fits = r.batch_size * r.batch_length + n * (window - 1)
    need(
        r.replay_capacity >= fits,
        f"run.replay_capacity={r.replay_capacity} < run.batch_size x run.batch_length + "
        f"env.envs x (run.batch_length + model.replay_context - 1) = {fits} steps: replay "
        f"could never hold the B x T windows training starts with; raise --run.replay_capacity "
        f"to >= {fits}",
    )
    need(
        r.replay_capacity >= n * window,
        f"run.replay_capacity={r.replay_capacity} < env.envs x (run.batch_length + "
        f"model.replay_context) = {n} x {window}: the {n} environments' streams share replay, "
        f"and each must hold one training sequence; raise --run.replay_capacity to >= {n * window}",
    )
    need(
        r.loop in ("auto", "device", "host"),
        f"run.loop={r.loop!r}; expected 'auto', 'device' or 'host'",
    )
    need(
        r.loop != "device" or envs.is_jax_task(cfg.env.task),
        f"run.loop=device runs JAX tasks (mjx:<task>, gymnax:<id>), not {cfg.env.task!r}; use "
        "--run.loop host (or auto)",
    )
    need(
        r.replay_sampler in ("numpy", "keyed"),
        f"run.replay_sampler={r.replay_sampler!r}; expected 'numpy' or 'keyed'",
    )
    need(
        r.replay_chunk >= 1,
        f"run.replay_chunk={r.replay_chunk}; must be >= 1 step per replay file",
    )
    least = window * repeat * n
    need(
        r.prefill == 0 or r.prefill >= least,
        f"run.prefill={r.prefill} environment steps gives each of the {n} environment(s) "
        f"{r.prefill // (repeat * n)} agent steps (action repeat {repeat}), fewer than one "
        f"training sequence (run.batch_length + model.replay_context = {window}): set "
        f"--run.prefill >= {least}, or 0 to train as soon as replay holds a batch",
    )


# Action floats a step is assumed to hold before the env is built (more than any dm-control
# or Gymnasium Box task has).
MAX_ACTION_FLOATS = 64


def replay_bytes(
    cfg: Config, obs_spec: Mapping[str, Any] | None = None, act_dim: int | None = None
) -> tuple[int, int]:
    """(bytes per stored step, bytes of every seed's replay at capacity) =
    (``replay.step_bytes`` of one step, run.replay_capacity x run.seeds x that).

    A step is what the runner stores: the observations, a_{t-1} (``act_dim`` float32), the
    reward, the three flags and, with replay context, the RSSM state (deter + the latent's
    flat size, in run.context_dtype). ``obs_spec`` (an env's ``{key: (shape, dtype)}``) and
    ``act_dim`` make it exact; without them it is an upper estimate from the config (a
    Gymnasium task's observations are known only once its env exists)."""
    if obs_spec is None:
        e = cfg.env
        image = (*e.size, 1 if e.gray else 3)  # uint8 pixels, one byte per channel
        shape, dtype = (image, "uint8") if e.obs == "pixels" else ((PROPRIO_FLOATS,), "float32")
        obs_spec = {"obs": (shape, dtype)}
    spec = {
        **obs_spec,
        "action": ((act_dim if act_dim is not None else MAX_ACTION_FLOATS,), "float32"),
        "reward": ((), "float32"),
        **{flag: ((), "bool") for flag in ("is_first", "is_last", "is_terminal")},
    }
    context = None
    if cfg.model.replay_context:
        context = {"deter": (cfg.model.deter,), "stoch": (cfg.model.make_latent().flat_size,)}
    per_step = step_bytes(spec, context, cfg.run.context_dtype)
    return per_step, cfg.run.replay_capacity * cfg.run.seeds * per_step


def machine_memory() -> int | None:
    """Physical memory in bytes (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(cfg: Config, obs_spec: Mapping[str, Any] | None = None) -> None:
    """Refuses a replay that at capacity would not fit this machine's memory. Apart from
    ``validate`` (a property of the machine, not of the config): the runner calls both before it
    creates anything, and this one again with the environments' ``obs_spec`` once they exist
    (a Gymnasium task's image observations are not in the config)."""
    total = machine_memory()
    if total is None:
        return
    r = cfg.run
    per_step, need_bytes = replay_bytes(cfg, obs_spec)
    need(
        need_bytes <= MEMORY_SHARE * total,
        f"run.replay_capacity={r.replay_capacity:,} steps x {r.seeds} seed(s) x about "
        f"{per_step:,} B = {need_bytes / 2**30:.1f} GiB of replay at capacity, "
        f"more than {MEMORY_SHARE:.0%} of this machine's {total / 2**30:.1f} GiB: lower "
        "--run.replay_capacity",
    )


def _check_logging(cfg: Config) -> None:
    lg = cfg.logging
    need(
        lg.wandb in ("online", "offline", "disabled"),
        f"logging.wandb={lg.wandb!r}; expected 'online', 'offline' or 'disabled'",
    )
    need(
        lg.wandb == "disabled" or bool(lg.project.strip()),
        "logging.project is empty; wandb needs a project name: --logging.project NAME",
    )
