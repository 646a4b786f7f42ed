"""The run configuration: frozen dataclasses with a default and a comment per field, and their
conversions (to and from JSON dicts, dotted-name overrides, retired fields).

A ``Config`` holds the runner's sections (``env``, ``run``, ``logging``) and the agents' own
(``model``, ``dreamer``, ``opt``, ``planet``, ``sac``). Values from a file or the command line go
through ``coerce`` (``values.py``): the same parsing and type checks for both. The few fields
with a short flag (``--task`` for ``--env.task``) carry it in their annotation.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any

import tyro

from agents.dreamer import DreamerConfig
from agents.optim import OptimConfig
from agents.planet import PlanetConfig
from agents.sac import SacConfig
from agents.world_model import WorldModelConfig
from experiments.config.values import coerce


def _short(flag: str) -> Any:
    """A field's second, short flag: ``Annotated[str, _short("--task")]``."""
    return tyro.conf.arg(aliases=(flag,))


@dataclasses.dataclass(frozen=True)
class EnvConfig:
    # dm-control 'domain-task', 'gym:<id>' (Gymnasium), 'atari:<game>' or 'crafter:reward'
    task: Annotated[str, _short("--task")] = "cartpole-balance"
    # 'proprio' (state vector) or 'pixels' (env.size images, uint8: RGB, or gray with env.gray)
    obs: Annotated[str, _short("--obs")] = "proprio"
    action_repeat: int = 0  # 0: the task's default (PlaNet's table, else 2; Gymnasium 1)
    envs: Annotated[int, _short("--envs")] = 1  # environments stepped together
    parallel: bool = False  # one process per environment
    # Image (height, width): dm-control renders at it, Gymnasium images are resized to it.
    # Each side a multiple of 2**len(model.mults) (48, 64, 80, ..., 256 for 4 stages).
    size: tuple[int, int] = (64, 64)
    gray: bool = False  # images as one gray channel (ITU-R 601 luma) instead of RGB
    camera: int = -1  # -1: the task's default camera
    fast_render: bool = False  # env.size buffer, no shadows or MSAA (faster, different pixels)
    # Episode length in environment steps; 0: the task's own (dm-control: 1000, the suite's
    # convention; Gymnasium: the limit the env is registered with, e.g. BipedalWalker's 1600,
    # or 1000 where it has none; Atari: 108,000 frames; Crafter: 10,000). A positive limit only
    # shortens a Gymnasium env's own.
    time_limit: int = 0
    # Atari ('atari:<game>'; DreamerV3's env.atari defaults, configs.yaml f8817c4): sticky
    # actions (each frame repeats the previous action with probability 0.25), the action set
    # ('needed': the game's minimal set; 'all': 18), what a lost life does ('unused': nothing;
    # 'discount': a terminal step, the episode goes on; 'reset': the episode ends), up to this
    # many no-op actions after a reset, and rewards clipped to their sign (scores unclipped).
    atari_sticky: bool = True
    atari_actions: str = "all"
    atari_lives: str = "unused"
    atari_noops: int = 30
    atari_clip_reward: bool = False


@dataclasses.dataclass(frozen=True)
class RunConfig:
    seed: Annotated[int, _short("--seed")] = 0  # the one seed everything derives from
    # Independent agents trained together in this process (vmap over their states); agent k is
    # the run with seed run.seed + k, with its own envs, replay and logs under seed{k}/.
    seeds: int = 1
    # environment steps (agent steps x action repeat) to run
    steps: Annotated[int, _short("--steps")] = 100_000
    prefill: int = 2500  # environment steps of uniform random actions before training
    # Also act at random until replay holds a batch (B x T windows), checked every 100 env
    # transitions: the 2023 code's prefill loop (its train_fill is 0).
    prefill_to_batch: bool = False
    train_ratio: float = 512.0  # replayed steps per policy step (DreamerV3's definition)
    batch_size: int = 16  # sequences per update, global: split over every device of every host
    batch_length: int = 64  # steps per sequence
    replay_capacity: int = 1_000_000  # replay size in steps (FIFO)
    replay_chunk: int = 1024  # steps per replay file on disk
    context_dtype: str = "float16"  # float type replay stores each step's RSSM state in
    replay_online: bool = False  # train on each fresh window once, before uniform draws
    # 'numpy': a seeded generator draws sample positions; 'keyed': the device loop's draws,
    # randint(fold_in(sample key, update), [B]), so both loops sample the same windows.
    replay_sampler: str = "numpy"
    # 'device': collect and train in compiled chunks (experiments/run/device_loop.py; JAX tasks
    # only); 'host': the host runner; 'auto': device for mjx:/gymnax: tasks, host otherwise.
    loop: str = "auto"
    overlap: bool = True  # dispatch updates before stepping the envs (same results, faster)
    eval_every: int = 10_000  # environment steps between evaluations (0: never)
    eval_episodes: int = 1  # episodes per evaluation (policy mode 'eval')
    # IWAE particles K for the held-out ELBO gap, computed at each evaluation on windows of the
    # evaluation episode (never trained on); 0: off. Needs density heads (see the README).
    gap_particles: int = 0
    gap_sequences: int = 8  # windows of batch_length steps the held-out gap averages over
    log_every: int = 1000  # environment steps between scalar logs
    # Environment steps between open-loop reports (0: never): the world model observes 5 steps
    # of a training batch and imagines the rest from its actions; logged as a picture of the
    # predicted against the true vectors, reward and continue flag, a video of images, and the
    # squared error by horizon (experiments/run/openloop.py). Costs one forward pass of the
    # model over a batch, about an update's time without the gradient.
    report_every: int = 10_000
    eval_video: bool = True  # record each evaluation's first episode as a video
    save_every: int = 10_000  # environment steps between checkpoints
    keep_checkpoints: int = 3  # checkpoints kept on disk
    # Split parameters of >= 65,536 elements (and their optimizer state) over the devices
    # instead of replicating them (FSDP): less memory per device, one gather per use.
    fsdp: bool = False
    # End every episode at each checkpoint and re-seed the environments from the seed and the
    # step: a run resumed from a periodic checkpoint is then bit for bit the uninterrupted one,
    # on one device. Off: a resumed run restarts its episodes from fresh environments.
    exact_resume: bool = False


@dataclasses.dataclass(frozen=True)
class LoggingConfig:
    wandb: Annotated[str, _short("--wandb")] = "disabled"  # 'online', 'offline' or 'disabled'
    project: str = "rssm-jax"  # wandb project
    entity: str = ""  # wandb entity ('' = default)
    group: str = ""  # wandb group
    name: str = ""  # wandb run name ('' = logdir name)
    tags: tuple[str, ...] = ()  # wandb tags
    tensorboard: bool = False  # also write TensorBoard event files to <logdir>/tb
    # Upload each checkpoint (the agent's state and counters; replay stays in the logdir) as a
    # wandb artifact of type 'model', aliased 'step-<env steps>' and 'latest'.
    artifacts: bool = False


@dataclasses.dataclass(frozen=True)
class Config:
    agent: str = "dreamer"  # 'dreamer', 'planet' (CEM), 'random' (uniform actions) or 'sac'
    env: EnvConfig = dataclasses.field(default_factory=EnvConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    model: WorldModelConfig = dataclasses.field(default_factory=WorldModelConfig)
    dreamer: DreamerConfig = dataclasses.field(default_factory=DreamerConfig)
    opt: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    planet: PlanetConfig = dataclasses.field(default_factory=PlanetConfig)
    sac: SacConfig = dataclasses.field(default_factory=SacConfig)
    logging: LoggingConfig = dataclasses.field(default_factory=LoggingConfig)


# Fields that may change when a run resumes: how long to run, where to log, and how (not what)
# to compute.
RESUMABLE_FIELDS = (
    "run.steps",
    "run.eval_every",
    "run.eval_episodes",
    "run.gap_particles",
    "run.gap_sequences",
    "run.log_every",
    "run.report_every",
    "run.eval_video",
    "run.save_every",
    "logging",
    "env.parallel",
    "run.overlap",
    "run.fsdp",
    "model.unroll",
)


def to_dict(cfg: Any) -> dict:
    """Nested plain dict (tuples become lists, so it equals its JSON round trip)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def canonical(data: dict) -> dict:
    """A config dict with equal settings spelled one way, for comparing a saved config with the
    current one. env.time_limit 1000 (the default before 0 meant 'the task's own') becomes 0
    where both give the same episodes: a dm-control task (its own limit is 1000) and a
    Gymnasium env registered with a limit of at most 1000 steps. env.size n (one int, before
    it was (height, width)) becomes [n, n]."""
    out = json.loads(json.dumps(data))
    env = out.get("env", {})
    size = env.get("size")
    if isinstance(size, int) and not isinstance(size, bool):
        env["size"] = [size, size]
    task = str(env.get("task", ""))
    if env.get("time_limit") == 1000:
        if not task.startswith("gym:"):
            env["time_limit"] = 0
        else:
            try:
                import gymnasium

                own = gymnasium.spec(task[len("gym:") :]).max_episode_steps
            except Exception:  # not installed or not registered: the limits stay as written
                own = None
            if own is not None and own <= 1000:
                env["time_limit"] = 0
    return out


# Fields of earlier versions: the value that meant what the code does now (a saved config that
# holds it reads as if it did not; None: any value, for a field that never changed results), and
# why the field went.
RETIRED: dict[str, tuple[Any, str]] = {
    "run.video_every": (
        None,
        "open-loop reports are due every run.report_every environment steps (no longer a count "
        "of updates) and cover proprio runs too",
    ),
    "model.carry_state": (
        False,
        "the 2023 code's carried training state never reached its loss (its replay marks every "
        "window's first step is_first, which resets the state to h_0, as replay here does "
        "now); without it the run starts each sequence from h_0",
    ),
}


def _drop_retired(data: dict) -> dict:
    """``data`` without the RETIRED fields that hold their neutral value; any other value is
    refused with the reason the field went."""
    data = json.loads(json.dumps(data))
    for name, (neutral, why) in RETIRED.items():
        section, _, field = name.rpartition(".")
        values = data.get(section, {}) if section else data
        if not isinstance(values, dict) or field not in values:
            continue
        value = values.pop(field)
        if neutral is not None and value != neutral:
            raise ValueError(
                f"{name}={json.dumps(value)} is no longer a setting: {why}. Drop the field, or "
                "resume or repeat that run with the rssm-jax that wrote it"
            )
    return data


def from_dict(data: dict, cls: type | None = None, prefix: str = "") -> Any:
    """Inverse of ``to_dict``: nested dict -> frozen dataclasses, every value checked against
    its field's type as the command line's are (``coerce``)."""
    if cls is None:
        cls, data = Config, _drop_retired(data)
    if not isinstance(data, dict):
        raise ValueError(f"{prefix.rstrip('.') or 'the config'} must be an object of fields")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value, typ = data[f.name], hints[f.name]
        if dataclasses.is_dataclass(typ):
            kwargs[f.name] = from_dict(value, typ, f"{prefix}{f.name}.")
        else:
            kwargs[f.name] = coerce(f"{prefix}{f.name}", typ, value)
    unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"{cls.__name__} has no fields {sorted(unknown)}")
    return cls(**kwargs)


def fields(cls: type, prefix: str = "") -> dict[str, tuple[type, Any]]:
    """Dotted field name -> (type, default) for every leaf field of a config dataclass."""
    out = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        typ = hints[f.name]
        if dataclasses.is_dataclass(typ):
            out.update(fields(typ, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = (typ, f.default)
    return out


# How much less similar than the closest name (difflib's ratio, 0 to 1) another may be and
# still be offered: 'model.detr' gets 'model.deter' (0.95), not 'model.depth' (0.86).
SIMILAR = 0.05


def close_matches(name: str, names: Iterable[str], n: int = 3) -> list[str]:
    """Up to ``n`` of ``names`` that ``name`` was probably meant to be: those with the same last
    dotted part ('run.deter' -> 'model.deter'), then the most similar spelling and any about
    as similar ('model.detr' -> 'model.deter' alone, not 'model.depth')."""
    names = list(names)
    leaf = name.rpartition(".")[2]
    same_leaf = [v for v in names if v.rpartition(".")[2] == leaf and v != name]
    similar = difflib.get_close_matches(name, names, n=n, cutoff=0.6)
    ratio = {v: difflib.SequenceMatcher(None, name, v).ratio() for v in similar}
    similar = [v for v in similar if ratio[v] >= ratio[similar[0]] - SIMILAR]
    return list(dict.fromkeys(same_leaf + similar))[:n]


def did_you_mean(close: Sequence[str]) -> str:
    """'; did you mean 'a', 'b' or 'c'?' for a message, '' when nothing is close."""
    if not close:
        return ""
    quoted = [repr(c) for c in close]
    listed = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
    return f"; did you mean {listed}?"


def unknown_field(name: str, others: Iterable[str] = ()) -> str:
    """The message for a config field ``name`` that does not exist: the closest field names
    (and ``others``, e.g. the command's own options), or why a retired field went."""
    if name in RETIRED:
        return f"unknown config field {name!r}: it is no longer a setting ({RETIRED[name][1]})"
    close = close_matches(name, [*fields(Config), *others])
    return f"unknown config field {name!r}{did_you_mean(close)} (--help lists every field)"


def replace(cfg: Config, overrides: dict[str, Any]) -> Config:
    """Set dotted fields, e.g. {'model.deter': 512}; an unknown name is refused with the
    closest valid ones."""
    valid = fields(Config)
    for name in overrides:
        if name not in valid:
            raise ValueError(unknown_field(name))
    nested: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    for name, value in overrides.items():
        if "." in name:
            section, field = name.split(".", 1)
            nested.setdefault(section, {})[field] = value
        else:
            top[name] = value
    for section, values in nested.items():
        top[section] = dataclasses.replace(getattr(cfg, section), **values)
    return dataclasses.replace(cfg, **top)


def diff(cfg: Config, base: Config | None = None) -> dict[str, Any]:
    """The dotted fields in which ``cfg`` differs from ``base`` (default: ``Config()``)."""
    base = Config() if base is None else base
    a, b = _flat(to_dict(cfg)), _flat(to_dict(base))
    return {k: v for k, v in a.items() if b.get(k) != v}


def differences(cfg: Config, base: Config) -> list[str]:
    """One line per field in which ``cfg`` differs from ``base``, in the fields' order, as
    ``'model.deter: 512 -> 1024'`` (dotted name, ``base``'s value, ``cfg``'s value, each as
    the command line writes it)."""
    new, old = _flat(to_dict(cfg)), _flat(to_dict(base))
    return [f"{k}: {spell(old[k])} -> {spell(v)}" for k, v in new.items() if old.get(k) != v]


def spell(value: Any) -> str:
    """A field's value as the command line writes it: true/false, a,b,c for a tuple, '' for
    an empty string."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, tuple | list):
        text = ",".join(spell(v) for v in value)
    else:
        text = str(value)
    return text or "''"


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = tuple(v) if isinstance(v, list) else v
    return out


def load(path: str | os.PathLike) -> Config:
    """A config from a JSON file (a run's ``logdir/config.json`` repeats that run)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"--config {path}: cannot read a JSON config: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: expected a JSON object of config sections")
    try:
        return from_dict(data)
    except (TypeError, ValueError) as err:
        raise ValueError(f"--config {path}: {err}") from None
