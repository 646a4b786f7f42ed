"""Run configuration: the dataclasses and their conversions (``schema``), named presets
(``presets``), the command line (``args``) and the checks every config passes before anything
starts (``validate``).

Every field has a default and a one-line comment. Presets are functions returning a ``Config``;
the command line overrides any field by its dotted name (``--model.deter 512``), and a few common
ones have short forms (``--task``, ``--steps``, ``--seed``, ``--envs``, ``--obs``, ``--wandb``).
``differences(cfg, base)`` names the fields a run changed from the config it started from.
"""

from __future__ import annotations

from typing import Any

from agents import registry
from experiments.config.args import SHORTCUTS, parse_args
from experiments.config.presets import (
    PRESETS,
    RENAMED,
    SIZES,
    compose,
    debug,
    dreamerv3,
    dreamerv3_2023,
    dreamerv3_cpu,
    dreamerv3_vision,
    planet,
    sac,
)
from experiments.config.schema import (
    RESUMABLE_FIELDS,
    RETIRED,
    Config,
    EnvConfig,
    LoggingConfig,
    RunConfig,
    canonical,
    coerce,
    diff,
    differences,
    fields,
    from_dict,
    load,
    replace,
    to_dict,
)
from experiments.config.validate import check_memory, validate

__all__ = [
    "PRESETS",
    "RENAMED",
    "RESUMABLE_FIELDS",
    "RETIRED",
    "SHORTCUTS",
    "SIZES",
    "Config",
    "EnvConfig",
    "LoggingConfig",
    "RunConfig",
    "canonical",
    "check_memory",
    "coerce",
    "compose",
    "debug",
    "diff",
    "differences",
    "dreamerv3",
    "dreamerv3_2023",
    "dreamerv3_cpu",
    "dreamerv3_vision",
    "fields",
    "from_dict",
    "load",
    "make_agent",
    "parse_args",
    "planet",
    "replace",
    "sac",
    "to_dict",
    "validate",
]


def make_agent(cfg: Config, obs_shapes: Any, action_dim: int, discrete: bool = False) -> Any:
    """The agent of ``cfg.agent`` (``agents.registry``) for these observations and
    ``action_dim`` actions (one-hot over ``action_dim`` classes if ``discrete``)."""
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
