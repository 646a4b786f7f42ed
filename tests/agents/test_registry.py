"""Agents by name (agents/registry.py); the evaluator builds them without the runner."""

import subprocess
import sys
from pathlib import Path

import pytest

from agents import registry
from agents.baselines import RandomAgent
from agents.dreamer import Dreamer, DreamerConfig
from agents.planet import PlanetAgent
from agents.sac import SAC

ROOT = Path(__file__).resolve().parents[2]


def test_every_agent_by_name():
    shapes = (("vector", (3,)),)
    kinds = {"dreamer": Dreamer, "planet": PlanetAgent, "random": RandomAgent, "sac": SAC}
    assert set(registry.AGENTS) == set(kinds)
    for name, kind in kinds.items():
        agent = registry.make(name, shapes, 2)
        assert type(agent) is kind and agent.action_dim == 2
    # Its own section reaches the agent; the others are ignored.
    agent = registry.make("dreamer", shapes, 2, dreamer=DreamerConfig(horizon=7), batch_size=4)
    assert agent.cfg.horizon == 7 and agent.batch_size == 4
    with pytest.raises(ValueError, match=r"agent='ppo' is not available.*'sac'"):
        registry.make("ppo", shapes, 2)


def test_the_evaluator_does_not_import_the_runner():
    code = "import sys, experiments.evaluate; print('experiments.train' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"
