"""Run configuration: frozen dataclasses, named presets, command-line overrides, validation.

Every field has a default and a one-line comment. Presets are functions returning a ``Config``;
the command line overrides any field by its dotted name (``--model.deter 512``), and a few
common ones have short forms (``--task``, ``--steps``, ``--seed``, ``--envs``, ``--agent``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

from agents.dreamer import DreamerConfig
from agents.planet import PlanetConfig
from agents.world_model import WorldModelConfig


@dataclasses.dataclass(frozen=True)
class EnvConfig:
    task: str = "cartpole-balance"  # dm-control 'domain-task'
    obs: str = "proprio"  # 'proprio' (state vector) or 'pixels' (64x64x3 uint8)
    action_repeat: int = 0  # 0: the task's default (PlaNet's table, else 2)
    envs: int = 1  # environments stepped together
    parallel: bool = False  # one process per environment
    size: int = 64  # image height and width
    camera: int = -1  # -1: the task's default camera
    fast_render: bool = False  # 64x64 buffer, no shadows or MSAA (faster, different pixels)
    time_limit: int = 1000  # episode length in environment steps


@dataclasses.dataclass(frozen=True)
class RunConfig:
    seed: int = 0  # the one seed everything derives from
    steps: int = 100_000  # environment steps (agent steps x action repeat) to run
    prefill: int = 2500  # environment steps of uniform random actions before training
    train_ratio: float = 512.0  # replayed steps per policy step (DreamerV3's definition)
    batch_size: int = 16  # sequences per update
    batch_length: int = 64  # steps per sequence
    replay_capacity: int = 1_000_000  # replay size in steps (FIFO)
    replay_chunk: int = 1024  # steps per replay file on disk
    eval_every: int = 10_000  # environment steps between evaluations (0: never)
    eval_episodes: int = 1  # episodes per evaluation, deterministic policy
    log_every: int = 1000  # environment steps between scalar logs
    video_every: int = 0  # updates between open-loop videos (0: never)
    save_every: int = 10_000  # environment steps between checkpoints
    keep_checkpoints: int = 3  # checkpoints kept on disk


@dataclasses.dataclass(frozen=True)
class LoggingConfig:
    wandb: str = "disabled"  # 'online', 'offline' or 'disabled'
    project: str = "rssm-jax"  # wandb project
    entity: str = ""  # wandb entity ('' = default)
    group: str = ""  # wandb group
    name: str = ""  # wandb run name ('' = logdir name)
    tags: tuple[str, ...] = ()  # wandb tags


@dataclasses.dataclass(frozen=True)
class Config:
    agent: str = "dreamer"  # 'dreamer', 'planet' (CEM planning) or 'random' (uniform actions)
    env: EnvConfig = dataclasses.field(default_factory=EnvConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    model: WorldModelConfig = dataclasses.field(default_factory=WorldModelConfig)
    dreamer: DreamerConfig = dataclasses.field(default_factory=DreamerConfig)
    planet: PlanetConfig = dataclasses.field(default_factory=PlanetConfig)
    logging: LoggingConfig = dataclasses.field(default_factory=LoggingConfig)


AGENTS = ("dreamer", "planet", "random")

# Fields that may change when a run resumes: how long to run and where to log.
RESUMABLE_FIELDS = (
    "run.steps",
    "run.eval_every",
    "run.eval_episodes",
    "run.log_every",
    "run.video_every",
    "run.save_every",
    "logging",
    "env.parallel",
)


# --- presets ----------------------------------------------------------------------------------


def debug() -> Config:
    """Tiny model and short run for CPU smoke tests (seconds to compile, seconds to run)."""
    return Config(
        env=EnvConfig(task="cartpole-balance"),
        run=RunConfig(
            steps=4000,
            prefill=800,
            train_ratio=64.0,
            batch_size=4,
            batch_length=16,
            replay_capacity=100_000,
            replay_chunk=128,
            eval_every=2000,
            log_every=500,
            save_every=1000,
            video_every=0,
        ),
        model=WorldModelConfig(
            deter=32,
            hidden=16,
            blocks=2,
            units=32,
            layers=1,
            groups=4,
            classes=4,
            depth=2,
            reward_bins=31,
        ),
    )


def dmc_proprio() -> Config:
    """DreamerV3 on dm-control states: the 2023 paper's settings (Adam 1e-4 / 3e-5, KL weights
    0.5 / 0.1, free nats 1, train ratio 512, action repeat 2) with the 2024 release's size1m
    model, which its dmc_proprio config uses (that config trains at ratio 1024, repeat 1)."""
    return Config(
        env=EnvConfig(task="walker-walk", obs="proprio", action_repeat=2),
        run=RunConfig(steps=500_000, train_ratio=512.0),
    )


def dmc_vision() -> Config:
    """DreamerV3 on dm-control 64x64 pixels: the 2023 paper's settings as ``dmc_proprio``, with
    the size12m model. The 2024 dmc_vision config uses its 200m default (ratio 256), far beyond
    a CPU or a single-GPU budget; size12m is the largest that trains at interactive speed."""
    return Config(
        env=EnvConfig(task="walker-walk", obs="pixels", action_repeat=2),
        run=RunConfig(steps=1_000_000, train_ratio=512.0),
        model=WorldModelConfig(deter=2048, hidden=256, classes=16, units=256, depth=16),
        dreamer=DreamerConfig(units=256),
    )


def planet() -> Config:
    """PlaNet (Hafner et al. 2019): Gaussian latent 30 + GRU 200, free nats 3, batch 50 x 50,
    Adam 1e-3 (eps 1e-4), CEM planning (H 12, 1000 candidates, top 100, 10 iterations).

    PlaNet trains 100 updates of 50 x 50 steps per 1000 environment steps, i.e. 250 x action
    repeat replayed steps per agent step: 2000 for cartpole (repeat 8), the preset's task.
    Per-task action repeats are PlaNet's table (env.action_repeat = 0).
    """
    return Config(
        agent="planet",
        env=EnvConfig(task="cartpole-swingup", obs="pixels"),
        run=RunConfig(
            steps=1_000_000, prefill=5000, train_ratio=2000.0, batch_size=50, batch_length=50
        ),
        model=WorldModelConfig(
            latent="gaussian",
            stoch=30,
            min_std=0.1,
            deter=200,
            hidden=200,
            blocks=1,
            img_layers=1,
            dyn_layers=0,
            units=200,
            layers=2,
            head_layers=2,
            depth=32,
            norm="layer",
            act="elu",
            vector_dist="normal",
            free_nats=3.0,
            beta_dyn=1.0,
            beta_rep=1.0,
            lr=1e-3,
            eps=1e-4,
            clip=1000.0,
        ),
    )


PRESETS: dict[str, Callable[[], Config]] = {
    "debug": debug,
    "dmc-proprio": dmc_proprio,
    "dmc-vision": dmc_vision,
    "planet": planet,
}


# --- validation -------------------------------------------------------------------------------


def validate(cfg: Config) -> Config:
    """Check values that would otherwise fail late or silently; raise ValueError with the fix."""
    from experiments import envs  # local: keeps config importable without dm-control loaded

    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise ValueError(msg)

    need(cfg.agent in AGENTS, f"agent={cfg.agent!r}; expected one of {AGENTS}")
    envs.parse_task(cfg.env.task)  # raises with the list of valid tasks
    need(
        cfg.env.obs in ("proprio", "pixels"),
        f"env.obs={cfg.env.obs!r}; expected 'proprio' or 'pixels'",
    )
    need(cfg.env.envs >= 1, f"env.envs={cfg.env.envs}; need at least 1")
    need(
        cfg.env.action_repeat >= 0,
        f"env.action_repeat={cfg.env.action_repeat}; use 0 for "
        "the task default or a positive repeat",
    )
    need(
        cfg.env.obs != "pixels" or cfg.env.size == 64,
        f"env.size={cfg.env.size}; the convolutional encoder expects 64x64 images",
    )
    r = cfg.run
    need(r.steps > 0, f"run.steps={r.steps}; must be positive")
    need(
        r.batch_size >= 1 and r.batch_length >= 2,
        f"run.batch_size={r.batch_size}, run.batch_length={r.batch_length}; need >= 1 and >= 2",
    )
    need(r.train_ratio >= 0, f"run.train_ratio={r.train_ratio}; must be >= 0")
    need(
        r.replay_capacity >= r.batch_length,
        f"run.replay_capacity={r.replay_capacity} < run.batch_length={r.batch_length}",
    )
    need(r.save_every > 0, f"run.save_every={r.save_every}; must be positive")
    need(r.log_every > 0, f"run.log_every={r.log_every}; must be positive")
    need(
        cfg.logging.wandb in ("online", "offline", "disabled"),
        f"logging.wandb={cfg.logging.wandb!r}; expected 'online', 'offline' or 'disabled'",
    )
    cfg.dreamer.validate()
    cfg.planet.validate()
    cfg.model.make_latent()
    _ = cfg.model.compute_dtype
    return cfg


# --- conversion and command line --------------------------------------------------------------


def to_dict(cfg: Any) -> dict:
    """Nested plain dict (tuples become lists, so it equals its JSON round trip)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(data: dict, cls: type | None = None) -> Any:
    """Inverse of ``to_dict``: nested dict -> frozen dataclasses (lists become tuples)."""
    cls = cls or Config
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value, typ = data[f.name], hints[f.name]
        if dataclasses.is_dataclass(typ):
            value = from_dict(value, typ)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
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


def _parse_value(name: str, typ: Any, text: str) -> Any:
    try:
        if typ is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if typ is int:
            return int(float(text)) if "e" in text.lower() else int(text)
        if typ is float:
            return float(text)
        if typing.get_origin(typ) is tuple:
            return tuple(t for t in text.split(",") if t)
        if typ is str or isinstance(typ, types.UnionType):
            return text
    except ValueError:
        raise ValueError(
            f"--{name}: cannot parse {text!r} as {getattr(typ, '__name__', typ)}"
        ) from None
    return text


def replace(cfg: Config, overrides: dict[str, Any]) -> Config:
    """Set dotted fields, e.g. {'model.deter': 512}; unknown names list the valid ones."""
    valid = fields(Config)
    for name in overrides:
        if name not in valid:
            close = [v for v in valid if v.split(".")[-1] == name.split(".")[-1]]
            hint = f" Did you mean {close}?" if close else ""
            raise ValueError(
                f"unknown config field {name!r}.{hint} Valid fields: {', '.join(sorted(valid))}"
            )
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


SHORTCUTS = {
    "task": "env.task",
    "steps": "run.steps",
    "seed": "run.seed",
    "envs": "env.envs",
    "obs": "env.obs",
    "wandb": "logging.wandb",
}


def parse_args(argv: Sequence[str] | None = None) -> tuple[Config, argparse.Namespace]:
    """``--preset NAME --logdir DIR [--field value ...]`` -> (validated Config, namespace)."""
    parser = argparse.ArgumentParser(
        prog="python -m experiments.train",
        description="Train a world-model agent on a dm-control task. Any config field can be "
        "overridden as --section.field VALUE (e.g. --model.deter 512).",
    )
    parser.add_argument("--preset", default="debug", choices=sorted(PRESETS))
    parser.add_argument("--logdir", required=True, help="run directory; reused to resume")
    parser.add_argument("--agent", default=None, choices=AGENTS)
    for short, full in SHORTCUTS.items():
        parser.add_argument(
            f"--{short}", dest=f"short_{short}", default=None, help=f"same as --{full}"
        )
    args, rest = parser.parse_known_args(argv)
    valid = fields(Config)
    overrides: dict[str, Any] = {}
    if args.agent is not None:
        overrides["agent"] = args.agent
    for short, full in SHORTCUTS.items():
        value = getattr(args, f"short_{short}")
        if value is not None:
            overrides[full] = _parse_value(full, valid[full][0], value)
    i = 0
    while i < len(rest):
        token = rest[i]
        if not token.startswith("--"):
            raise ValueError(
                f"unexpected argument {token!r}; overrides look like --model.deter 512"
            )
        name, eq, value = token[2:].partition("=")
        if not eq:
            if i + 1 >= len(rest):
                raise ValueError(f"--{name} needs a value")
            value = rest[i + 1]
            i += 1
        i += 1
        if name not in valid:
            replace(Config(), {name: None})  # raises with the list of fields
        overrides[name] = _parse_value(name, valid[name][0], value)
    cfg = replace(PRESETS[args.preset](), overrides)
    return validate(cfg), args
