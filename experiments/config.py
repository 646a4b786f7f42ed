"""Run configuration: frozen dataclasses, named presets, command-line overrides, validation.

Every field has a default and a one-line comment. Presets are functions returning a ``Config``;
the command line overrides any field by its dotted name (``--model.deter 512``), and a few
common ones have short forms (``--task``, ``--steps``, ``--seed``, ``--envs``, ``--agent``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import rssm
from agents.dreamer import DreamerConfig
from agents.optim import OptimConfig
from agents.planet import PlanetConfig
from agents.sac import SacConfig
from agents.world_model import WorldModelConfig
from experiments.validate import AGENTS, validate


@dataclasses.dataclass(frozen=True)
class EnvConfig:
    task: str = "cartpole-balance"  # dm-control 'domain-task', or 'gym:<id>' (Gymnasium)
    obs: str = "proprio"  # 'proprio' (state vector) or 'pixels' (64x64x3 uint8)
    action_repeat: int = 0  # 0: the task's default (PlaNet's table, else 2; Gymnasium 1)
    envs: int = 1  # environments stepped together
    parallel: bool = False  # one process per environment
    size: int = 64  # image height and width
    camera: int = -1  # -1: the task's default camera
    fast_render: bool = False  # 64x64 buffer, no shadows or MSAA (faster, different pixels)
    # Episode length in environment steps; 0: the task's own (dm-control: 1000, the suite's
    # convention; Gymnasium: the limit the env is registered with, e.g. BipedalWalker's 1600,
    # or 1000 where it has none). A positive limit only shortens a Gymnasium env's own.
    time_limit: int = 0


@dataclasses.dataclass(frozen=True)
class RunConfig:
    seed: int = 0  # the one seed everything derives from
    # Independent agents trained together in this process (vmap over their states); agent k is
    # the run with seed run.seed + k, with its own envs, replay and logs under seed{k}/.
    seeds: int = 1
    steps: int = 100_000  # environment steps (agent steps x action repeat) to run
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
    overlap: bool = True  # dispatch updates before stepping the envs (same results, faster)
    eval_every: int = 10_000  # environment steps between evaluations (0: never)
    eval_episodes: int = 1  # episodes per evaluation (policy mode 'eval')
    # IWAE particles K for the held-out ELBO gap, computed at each evaluation on windows of the
    # evaluation episode (never trained on); 0: off. Needs density heads (see the README).
    gap_particles: int = 0
    gap_sequences: int = 8  # windows of batch_length steps the held-out gap averages over
    log_every: int = 1000  # environment steps between scalar logs
    video_every: int = 0  # updates between open-loop videos (0: never)
    save_every: int = 10_000  # environment steps between checkpoints
    keep_checkpoints: int = 3  # checkpoints kept on disk
    # Split parameters of >= 65,536 elements (and their optimizer state) over the devices
    # instead of replicating them (FSDP): less memory per device, one gather per use.
    fsdp: bool = False
    # End every episode at each checkpoint and re-seed the environments from the seed and the
    # step: a run resumed from a periodic checkpoint is then bit for bit the uninterrupted one
    # (on one device). Off: a resumed run restarts its episodes from fresh environments.
    exact_resume: bool = False


@dataclasses.dataclass(frozen=True)
class LoggingConfig:
    wandb: str = "disabled"  # 'online', 'offline' or 'disabled'
    project: str = "rssm-jax"  # wandb project
    entity: str = ""  # wandb entity ('' = default)
    group: str = ""  # wandb group
    name: str = ""  # wandb run name ('' = logdir name)
    tags: tuple[str, ...] = ()  # wandb tags
    tensorboard: bool = False  # also write TensorBoard event files to <logdir>/tb


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
    "run.video_every",
    "run.save_every",
    "logging",
    "env.parallel",
    "run.overlap",
    "run.fsdp",
    "model.unroll",
)


# --- presets ----------------------------------------------------------------------------------
#
# A preset carries one published configuration and nothing else; where a number differs from the
# reference it is named in the docstring with its reason. ``tests/experiments/test_presets.py``
# holds every field against the reference values with their source files.


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
        dreamer=DreamerConfig(layers=1, units=32, value_bins=31),
        # No warmup: a smoke run of a few hundred updates would otherwise barely move.
        opt=OptimConfig(warmup=0, lr=1e-3, actor_lr=1e-3, critic_lr=1e-3),
    )


def dreamerv3() -> Config:
    """DreamerV3, 2024 release, on dm-control states (danijar/dreamerv3 configs.yaml:
    ``defaults`` + ``dmc_proprio``): size1m, 16 envs, action repeat 1, train ratio 1024,
    batch 16 x 64 with one step of replay context, replay 5e6 with the online queue (every fresh
    window trained on once before uniform draws), the AGC/RMS/momentum optimizer
    at 4e-5 with 1000 warmup updates, KL 1.0 / 0.1 / free 1, replay-value loss 0.3.

    Not reproduced: the reference computes in bfloat16 on GPUs (``--model.dtype bfloat16``).
    """
    return Config(
        env=EnvConfig(task="walker-walk", obs="proprio", action_repeat=1, envs=16),
        run=RunConfig(
            steps=1_100_000,
            prefill=0,
            train_ratio=1024.0,
            batch_size=16,
            batch_length=64,
            replay_capacity=5_000_000,
            replay_online=True,
        ),
        model=WorldModelConfig(),
        dreamer=DreamerConfig(),
        opt=OptimConfig(),
    )


def dreamerv3_vision() -> Config:
    """DreamerV3, 2024 release, on 64x64 dm-control pixels (``dmc_vision``: train ratio 256)
    at size12m. The reference's dmc_vision runs its default size200m; size12m keeps its
    architecture (the same layer counts, kernels and block-spatial decoder) at a width that
    trains on one GPU and runs on a CPU."""
    cfg = dreamerv3()
    deter, hidden, classes = rssm.DREAMER_SIZES["size12m"]
    depth, units = rssm.DREAMER_WIDTHS["size12m"]
    return dataclasses.replace(
        cfg,
        env=dataclasses.replace(cfg.env, obs="pixels"),
        run=dataclasses.replace(cfg.run, train_ratio=256.0),
        model=WorldModelConfig(
            deter=deter, hidden=hidden, classes=classes, depth=depth, units=units
        ),
        dreamer=DreamerConfig(units=units),
    )


def dreamerv3_cpu() -> Config:
    """``dreamerv3`` at a CPU budget: action repeat 2 and train ratio 128 (16x fewer updates
    per environment step than the reference's repeat 1 at ratio 1024), one environment; every
    other setting is the 2024 release's. Not a published configuration."""
    cfg = dreamerv3()
    return dataclasses.replace(
        cfg,
        env=dataclasses.replace(cfg.env, task="cartpole-swingup", action_repeat=2, envs=1),
        run=dataclasses.replace(cfg.run, steps=50_000, train_ratio=128.0),
    )


def dreamerv3_2023() -> Config:
    """DreamerV3 as in arXiv v1 (2023) and its code (danijar/dreamerv3 at 8fa35f8, configs.yaml
    ``defaults`` + ``dmc_proprio``), the configuration behind the published DMC proprio scores.

    RSSM: dense GRU (deter 512) on a 512-unit embedding of (s, a), 32 x 32 categoricals, learned
    h_0, LayerNorm without biases, fan-avg init. The ``dmc_proprio`` overrides ``.*\\.layers: 2``
    and ``.*\\.units: 512`` reach the RSSM and the reward, continue, actor and critic MLPs, but
    not the encoder and decoder, whose keys are ``mlp_layers`` / ``mlp_units``: those stay 5 x 1024.
    Training: the world model is updated first, imagination uses the updated one; the actor
    backpropagates through the dynamics (continuous actions; discrete ones are a one-hot head
    mixed with 1% uniform); continues are the head's mode with c_0 from the data and an
    explicit discount 1 - 1/333; the slow critic copies the critic at the first update, then
    follows it at rate 0.02; Adam 1e-4 / 3e-5 / 3e-5, clip 1000 / 100; 4 envs, action repeat
    2, train ratio 512, replay 1e6.

    Sequences start from h_0: the reference carries the previous batch's last posterior into
    the next update, but its replay marks every sampled window's first step ``is_first``
    (``embodied/replay/generic.py``), which replaces the carried state by h_0 and the carried
    action by zeros; replay here marks them the same way. Prefill: uniform random actions
    until replay holds B x T windows of T steps (``embodied/run/train.py``: ``len(replay) <
    max(batch_steps, train_fill)`` with train_fill 0, checked every 100 transitions), 2,600
    environment steps on walker-walk with 4 envs.

    Not reproduced: the reference computes in float16 on GPUs.
    """
    return Config(
        env=EnvConfig(task="walker-walk", obs="proprio", action_repeat=2, envs=4),
        run=RunConfig(
            steps=1_000_000,
            prefill=0,
            prefill_to_batch=True,
            train_ratio=512.0,
            batch_size=16,
            batch_length=64,
            replay_capacity=1_000_000,
        ),
        model=WorldModelConfig(
            classes=32,
            deter=512,
            hidden=512,
            core="gru",
            img_layers=1,
            initial="learned",
            units=1024,
            layers=5,
            head_layers=2,
            head_units=512,
            cnn="strided",
            depth=32,
            mults=(1, 2, 4, 8),
            kernel=4,
            norm="layer",
            bias=False,
            winit="fan_avg",
            reward_dist="symlog_twohot",
            beta_dyn=0.5,
            beta_rep=0.1,
            replay_context=0,
        ),
        dreamer=DreamerConfig(
            contdisc=False,
            imag_cont="mode",
            first_cont="data",
            estimator="dynamics",
            layers=2,
            units=512,
            outscale=1.0,
            actor_unimix=0.01,
            slow_copy_first=True,
            value_dist="symlog_twohot",
            repval=False,
            update="sequential",
        ),
        opt=OptimConfig(
            kind="adam",
            lr=1e-4,
            actor_lr=3e-5,
            critic_lr=3e-5,
            eps=1e-8,
            ac_eps=1e-5,
            clip=1000.0,
            ac_clip=100.0,
            warmup=0,
        ),
    )


def planet() -> Config:
    """PlaNet (Hafner et al. 2019): Gaussian latent 30 + GRU 200, free nats 3, batch 50 x 50,
    Adam 1e-3 (eps 1e-4), CEM planning (H 12, 1000 candidates, top 100, 10 iterations).

    PlaNet trains 100 updates of 50 x 50 steps per 1000 environment steps, i.e. 250 x action
    repeat replayed steps per agent step: 2000 for cartpole (repeat 8), the preset's task.
    Per-task action repeats are PlaNet's table (env.action_repeat = 0).

    PlaNet's likelihoods (google-research/planet scripts/configs.py, networks/, tools/): pixels
    reduced to 5 bits, dequantized with uniform noise and modelled by Normal(mu, 1); reward by
    Normal(mu, 1) at scale 10 from 2 ReLU layers of 100; no continue term; ReLU everywhere and
    no norms; Adam with a 10,000-update linear warm-up. With free nats 3 the objective is the
    ELBO of section "The ELBO, exactly" (every term a density: the runner logs wm/bound).
    Deviations, each for speed on accelerators and CPUs alike: the decoder upsamples by stride-1
    convolutions + depth-to-space instead of transposed convolutions (same 4 stages), and the
    encoder sees each 5-bit level's bin centre instead of a noisy sample of it.
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
            core="planet",
            initial="zeros",
            blocks=1,
            img_layers=1,
            dyn_layers=0,
            units=200,
            layers=2,
            head_layers=2,
            head_units=100,
            cnn="strided",
            depth=32,
            mults=(1, 2, 4, 8),
            kernel=4,
            norm="none",
            act="relu",
            image_dist="dequantized_normal",
            image_bits=5,
            image_std=1.0,
            vector_dist="normal",
            reward_dist="normal",
            reward_std=1.0,
            rew_scale=10.0,
            con_scale=0.0,
            free_nats=3.0,
            beta_dyn=1.0,
            beta_rep=1.0,
            replay_context=0,
        ),
        opt=OptimConfig(kind="adam", lr=1e-3, eps=1e-4, clip=1000.0, warmup=10_000),
    )


def sac() -> Config:
    """SAC on dm-control states: twin critics, tanh-Gaussian policy, automatic temperature
    (Haarnoja et al. 2018; the SAC papers' and jaxrl's DMC settings): one update of 256
    transitions per environment step (train ratio 512 = 256 x 2 replayed steps, pairs of
    steps), action repeat 1, 5,000 uniform prefill steps, 100,000 environment steps."""
    return Config(
        agent="sac",
        env=EnvConfig(task="walker-walk", obs="proprio", action_repeat=1, envs=1),
        run=RunConfig(
            steps=100_000,
            prefill=5000,
            train_ratio=512.0,
            batch_size=256,
            batch_length=2,
            replay_capacity=1_000_000,
            eval_every=10_000,
            eval_episodes=5,
            log_every=5000,
            save_every=20_000,
        ),
        model=WorldModelConfig(replay_context=0),
    )


PRESETS: dict[str, Callable[[], Config]] = {
    "debug": debug,
    "dreamerv3": dreamerv3,
    "dreamerv3-vision": dreamerv3_vision,
    "dreamerv3-cpu": dreamerv3_cpu,
    "dreamerv3-2023": dreamerv3_2023,
    "planet": planet,
    "sac": sac,
}
# Names of earlier versions: a clear error instead of a silently different configuration.
RENAMED = {"dmc-proprio": "dreamerv3", "dmc-vision": "dreamerv3-vision"}


def _size(name: str) -> Callable[[], dict[str, Any]]:
    def fields_of_size() -> dict[str, Any]:
        deter, hidden, classes = rssm.DREAMER_SIZES[name]
        depth, units = rssm.DREAMER_WIDTHS[name]
        return {
            "model.deter": deter,
            "model.hidden": hidden,
            "model.classes": classes,
            "model.depth": depth,
            "model.units": units,
            "dreamer.units": units,
        }

    fields_of_size.__doc__ = f"DreamerV3's {name}: RSSM, encoder, heads, actor-critic widths."
    return fields_of_size


# Partial presets: a few fields each, applied on top of the presets before them
# (``--preset dreamerv3,size12m``).
SIZES: dict[str, Callable[[], dict[str, Any]]] = {n: _size(n) for n in rssm.DREAMER_SIZES}


def diff(cfg: Config, base: Config | None = None) -> dict[str, Any]:
    """The dotted fields in which ``cfg`` differs from ``base`` (default: ``Config()``)."""
    base = Config() if base is None else base
    a, b = _flat(to_dict(cfg)), _flat(to_dict(base))
    return {k: v for k, v in a.items() if b.get(k) != v}


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = tuple(v) if isinstance(v, list) else v
    return out


def compose(names: str) -> Config:
    """``'a,b,...'``: preset a, then every field b sets differently from the defaults, and so
    on left to right; size presets (``size1m`` ... ``size400m``) set only the model widths."""
    cfg: Config | None = None
    for name in [n.strip() for n in names.split(",") if n.strip()]:
        if name in RENAMED:
            raise ValueError(
                f"--preset {name} was renamed: use --preset {RENAMED[name]} (the published "
                "DreamerV3 configuration; see the README's presets)"
            )
        if name in SIZES:
            cfg = replace(cfg or Config(), SIZES[name]())
        elif name in PRESETS:
            cfg = PRESETS[name]() if cfg is None else replace(cfg, diff(PRESETS[name]()))
        else:
            raise ValueError(
                f"unknown --preset {name!r}; expected one of {sorted(PRESETS)} or a size "
                f"{sorted(SIZES)}, several joined by commas"
            )
    if cfg is None:
        raise ValueError("--preset is empty; name one, e.g. --preset dreamerv3")
    return cfg


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


def fields_help() -> str:
    """Every config field with its default and comment, for ``--help``."""
    from experiments import fielddoc

    rows = fielddoc.describe(Config)
    width = max(len(name) + len(default) for name, default, _ in rows) + 6
    lines = ["config fields (--section.field VALUE; default, then meaning):"]
    for name, default, note in rows:
        head = f"  --{name} {default}"
        lines.append(f"{head:<{width}} {note}")
    return "\n".join(lines)


def make_agent(cfg: Config, obs_shapes, action_dim: int, discrete: bool = False):
    """The agent of ``cfg.agent`` (``agents.registry``) for these observations and
    ``action_dim`` actions (one-hot over ``action_dim`` classes if ``discrete``)."""
    from agents import registry

    return registry.make(
        cfg.agent,
        obs_shapes,
        action_dim,
        discrete=discrete,
        batch_size=cfg.run.batch_size,
        model=cfg.model,
        dreamer=cfg.dreamer,
        planet=cfg.planet,
        sac=cfg.sac,
        opt=cfg.opt,
    )


# --- conversion and command line --------------------------------------------------------------


def to_dict(cfg: Any) -> dict:
    """Nested plain dict (tuples become lists, so it equals its JSON round trip)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def canonical(data: dict) -> dict:
    """A config dict with equal settings spelled one way, for comparing a saved config with the
    current one. env.time_limit 1000 (the default before 0 meant 'the task's own') becomes 0
    where both give the same episodes: a dm-control task (its own limit is 1000) and a
    Gymnasium env registered with a limit of at most 1000 steps."""
    out = json.loads(json.dumps(data))
    env = out.get("env", {})
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
# holds it reads as if it did not), and why the field went.
RETIRED: dict[str, tuple[Any, str]] = {
    "model.carry_state": (
        False,
        "the 2023 code's carried training state never reached its loss (its replay marks every "
        "window's first step is_first, which resets the state to h_0, as replay here does now)",
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
        if value != neutral:
            raise ValueError(
                f"{name}={json.dumps(value)} is no longer a setting: {why}. Drop the field (the "
                "run then starts each sequence from h_0), or resume or repeat that run with "
                "the rssm-jax that wrote it"
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


def coerce(name: str, typ: Any, value: Any) -> Any:
    """``value`` as a value of the field ``name`` of type ``typ``, by the same rules from the
    command line and from a config file: a string is parsed as the command line parses it
    ('false', '1e4', '2,3,4'); any other JSON value must already be of the type (an int for an
    int field, or an integral float such as 1e4; a list for a tuple field). ValueError names
    the field, the value and the type."""
    if isinstance(value, str) and typ is not str:
        return _parse_value(name, typ, value)
    origin = typing.get_origin(typ)
    if typ is bool and isinstance(value, bool):
        return value
    if typ is int and not isinstance(value, bool):
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    if typ is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if typ is str and isinstance(value, str):
        return value
    if origin is tuple and isinstance(value, list | tuple):
        (element, *_) = typing.get_args(typ)
        return tuple(coerce(f"{name}[{i}]", element, v) for i, v in enumerate(value))
    kind = {int: "an int", float: "a number", bool: "true or false", str: "a string"}.get(
        typ, "a list" if origin is tuple else str(typ)
    )
    raise ValueError(f"{name}: {json.dumps(value)} is not {kind}")


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
            try:
                return int(text)
            except ValueError:
                number = float(text)  # '1e4' and '2.0' are ints; '2.5' is not
                if not number.is_integer():
                    raise
                return int(number)
        if typ is float:
            return float(text)
        if typing.get_origin(typ) is tuple:
            (element, *_) = typing.get_args(typ)
            return tuple(_parse_value(name, element, t) for t in text.split(",") if t)
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
        description="Train a world-model agent on a dm-control or Gymnasium task. Any config "
        "field can be overridden as --section.field VALUE (e.g. --model.deter 512).",
        epilog=fields_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--preset",
        default=None,
        help=f"one of {sorted(PRESETS)}, or several joined by commas, later ones overriding "
        f"(sizes {', '.join(SIZES)} set the model widths only: --preset dreamerv3,size12m); "
        "default: debug",
    )
    parser.add_argument(
        "--config",
        default=None,
        help="start from this JSON config instead of a preset (a run's logdir/config.json "
        "repeats that run); overrides still apply",
    )
    parser.add_argument("--logdir", required=True, help="run directory; reused to resume")
    parser.add_argument("--agent", default=None, choices=AGENTS)
    parser.add_argument(
        "--compile-cache",
        default=os.environ.get("RSSM_JAX_CACHE", str(Path.home() / ".cache" / "rssm-jax" / "xla")),
        help="directory of JAX's persistent compilation cache (a second launch of the same "
        "command loads its compiled programs instead of compiling); env RSSM_JAX_CACHE",
    )
    dist = parser.add_argument_group(
        "several processes (hosts)",
        "one run over several processes: every process gets the same command with its own "
        "--process-id (defaults: JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID)",
    )
    dist.add_argument("--coordinator", default=None, help="host:port of process 0")
    dist.add_argument("--num-processes", type=int, default=None, help="processes in the run")
    dist.add_argument("--process-id", type=int, default=None, help="this process, from 0")
    dist.add_argument(
        "--distributed",
        choices=("auto",),
        default=None,
        help="'auto': let JAX find the cluster (TPU pods, SLURM, Open MPI)",
    )
    parser.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="compile everything afresh, without the persistent cache",
    )
    for short, full in SHORTCUTS.items():
        parser.add_argument(
            f"--{short}", dest=f"short_{short}", default=None, help=f"same as --{full}"
        )
    args, rest = parser.parse_known_args(argv)
    if args.config is not None and args.preset is not None:
        raise ValueError(
            "--config and --preset both give the starting config: use one (overrides apply to "
            "either)"
        )
    base = load(args.config) if args.config is not None else compose(args.preset or "debug")
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
    cfg = replace(base, overrides)
    return validate(cfg), args
