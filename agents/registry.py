"""Every agent by name: ``make(name, ...)`` builds one from its config sections.

The runner (``experiments``) and anything else that builds agents from a configuration go
through here, so each agent's construction lives with the agents, once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agents.baselines import RandomAgent
from agents.contract import Agent, ObsShapes
from agents.dreamer import Dreamer
from agents.dreamer_config import DreamerConfig
from agents.optim import OptimConfig
from agents.planet import PlanetAgent, PlanetConfig
from agents.sac import SAC, SacConfig
from agents.wm_config import WorldModelConfig


def _dreamer(
    c: dict[str, Any], obs_shapes: ObsShapes, action_dim: int, discrete: bool, batch_size: int
) -> Agent:
    return Dreamer(c["model"], c["dreamer"], obs_shapes, action_dim, c["opt"], batch_size, discrete)


def _planet(
    c: dict[str, Any], obs_shapes: ObsShapes, action_dim: int, discrete: bool, batch_size: int
) -> Agent:
    return PlanetAgent(
        c["model"], c["planet"], obs_shapes, action_dim, c["opt"], batch_size, discrete
    )


def _random(
    c: dict[str, Any], obs_shapes: ObsShapes, action_dim: int, discrete: bool, batch_size: int
) -> Agent:
    return RandomAgent(c["model"], obs_shapes, action_dim, c["opt"], batch_size, discrete)


def _sac(
    c: dict[str, Any], obs_shapes: ObsShapes, action_dim: int, discrete: bool, batch_size: int
) -> Agent:
    return SAC(c["sac"], obs_shapes, action_dim, discrete)


AGENTS: dict[str, Callable[..., Agent]] = {
    "dreamer": _dreamer,
    "planet": _planet,
    "random": _random,
    "sac": _sac,
}


def make(
    name: str,
    obs_shapes: ObsShapes,
    action_dim: int,
    *,
    discrete: bool = False,
    batch_size: int = 16,
    model: WorldModelConfig | None = None,
    dreamer: DreamerConfig | None = None,
    planet: PlanetConfig | None = None,
    sac: SacConfig | None = None,
    opt: OptimConfig | None = None,
) -> Agent:
    """The agent ``name`` ('dreamer', 'planet', 'random' or 'sac') for observations
    ``obs_shapes`` and ``action_dim`` actions (one-hot over ``action_dim`` classes if
    ``discrete``); config sections it does not use are ignored, missing ones take defaults."""
    if name not in AGENTS:
        raise ValueError(f"agent={name!r} is not available; expected one of {sorted(AGENTS)}")
    sections = {
        "model": model or WorldModelConfig(),
        "dreamer": dreamer or DreamerConfig(),
        "planet": planet or PlanetConfig(),
        "sac": sac or SacConfig(),
        "opt": opt or OptimConfig(),
    }
    return AGENTS[name](sections, obs_shapes, action_dim, discrete, batch_size)
