"""Named presets: published configurations, each value with its source, and the size presets
that compose with them (``--preset dreamerv3,size12m``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import rssm
from agents.dreamer import DreamerConfig
from agents.optim import OptimConfig
from agents.world_model import WorldModelConfig
from experiments.config.dreamerv3_2023 import dreamerv3_2023
from experiments.config.schema import (
    Config,
    EnvConfig,
    RunConfig,
    close_matches,
    did_you_mean,
    diff,
    replace,
)

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
            report_every=1000,  # every kind of media within the default 4000 steps
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
    return replace(
        dreamerv3(), {"env.obs": "pixels", "run.train_ratio": 256.0, **SIZES["size12m"]()}
    )


def dreamerv3_atari100k() -> Config:
    """DreamerV3, 2024 release, on Atari 100k (configs.yaml ``atari100k`` and
    ``env.atari100k``): 64x64 colour frames, action repeat 4, no sticky actions, the game's
    minimal action set, up to 30 no-ops, lives unused, unclipped rewards; 1 env, train ratio
    256, 110k agent steps (440,000 frames: the benchmark's 400k and 10% more, as the
    reference runs). At size12m, as ``dreamerv3-vision``; the reference runs its default
    size200m (``--preset dreamerv3-atari100k,size200m``). Replay holds the 110k steps the run
    stores (the reference allocates 5e6, never filled: the same FIFO in 1.4 GiB; a longer
    ``--steps`` needs a larger ``--run.replay_capacity`` to match the reference).

    Sticky actions really are off here: the reference sets ALE's ``repeat_action_probability``
    after loading the ROM, where it has no effect, so its own atari100k runs were sticky
    (experiments/envs/atari.py)."""
    return replace(
        dreamerv3_vision(),
        {
            "env.task": "atari:pong",
            "env.action_repeat": 4,
            "env.envs": 1,
            "env.size": (64, 64),
            "env.gray": False,
            "env.atari_sticky": False,
            "env.atari_actions": "needed",
            "run.steps": 440_000,
            "run.train_ratio": 256.0,
            # The reference's 5e6 steps, capped at the 110k steps the run stores: the same
            # FIFO (it never fills), allocated at 1.4 GiB instead of 63 GiB.
            "run.replay_capacity": 110_000,
        },
    )


def dreamerv3_atari() -> Config:
    """DreamerV3, 2024 release, on Atari with sticky actions (configs.yaml ``atari`` and
    ``env.atari``): 96x96 gray frames, action repeat 4, sticky actions (0.25), all 18 actions,
    up to 30 no-ops, lives unused, unclipped rewards; 16 envs, train ratio 32, 51M agent steps
    (204M frames: the 200M-frame benchmark). At size12m; the reference runs size200m. Its replay
    of 5e6 96x96 gray steps takes about 46 GiB: the pre-flight check refuses it on a smaller
    machine, naming ``--run.replay_capacity``."""
    return replace(
        dreamerv3_vision(),
        {
            "env.task": "atari:pong",
            "env.action_repeat": 4,
            "env.size": (96, 96),
            "env.gray": True,
            "run.steps": 204_000_000,
            "run.train_ratio": 32.0,
        },
    )


def dreamerv3_crafter() -> Config:
    """DreamerV3, 2024 release, on Crafter (configs.yaml ``crafter`` and ``env.crafter``):
    64x64 colour frames of ``crafter:reward``, 1 env, train ratio 512, 1.1M steps (the
    benchmark's 1M and 10%). At size12m; the reference runs size200m. Replay holds the 1.1M
    steps the run stores (the reference's 5e6 is never filled: the same FIFO in 14 GiB)."""
    return replace(
        dreamerv3_vision(),
        {
            "env.task": "crafter:reward",
            "env.action_repeat": 1,
            "env.envs": 1,
            "run.steps": 1_100_000,
            "run.train_ratio": 512.0,
            # The reference's 5e6 steps, capped at the 1.1M steps the run stores (never full).
            "run.replay_capacity": 1_100_000,
        },
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
    "dreamerv3-atari100k": dreamerv3_atari100k,
    "dreamerv3-atari": dreamerv3_atari,
    "dreamerv3-crafter": dreamerv3_crafter,
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
            raise ValueError(unknown_preset(name))
    if cfg is None:
        raise ValueError("--preset is empty; name one, e.g. --preset dreamerv3")
    return cfg


def unknown_preset(name: str) -> str:
    """The message for a preset ``name`` that does not exist: the closest names (every size,
    for a size that does not exist)."""
    if name.startswith("size"):
        hint = f"; the sizes are {', '.join(SIZES)}"
    else:
        hint = did_you_mean(close_matches(name, [*PRESETS, *SIZES]))
    return (
        f"unknown --preset {name!r}{hint} (--help lists the presets; several join with commas, "
        "e.g. --preset dreamerv3,size12m)"
    )
