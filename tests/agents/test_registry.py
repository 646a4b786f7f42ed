"""Agents by name (agents/registry.py); the evaluator builds them without the runner."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from agents import registry
from agents.baselines import RandomAgent
from agents.contract import CARRY_KEYS, STATE_LAYOUT, AgentState, dummy_batch
from agents.dreamer import Dreamer
from agents.dreamer_config import DreamerConfig
from agents.planet import PlanetAgent
from agents.sac import SAC
from agents.wm_config import WorldModelConfig

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


def _same_structure(a, b) -> bool:
    shape = lambda t: jax.tree.map(lambda x: (x.shape, x.dtype), t)
    return jax.tree.structure(a) == jax.tree.structure(b) and shape(a) == shape(b)


@pytest.mark.parametrize("name", sorted(registry.AGENTS))
def test_every_agent_keeps_one_contract(name):
    """The same state fields and carry layout for every agent, and a policy step and an update
    that keep them (shapes only: traced, never compiled)."""
    shapes, n, a = (("vector", (3,)),), 2, 2
    tiny = WorldModelConfig(deter=16, hidden=16, blocks=1, units=16, layers=1, groups=2, classes=2)
    tiny = dataclasses.replace(tiny, replay_context=0)
    agent = registry.make(name, shapes, a, model=tiny, batch_size=2)
    state = jax.eval_shape(agent.init, jax.random.key(0))
    assert type(state) is AgentState
    # The fields of each state layout a checkpoint can record (agents/contract.py).
    layouts = {3: ("params", "opt_state", "aux", "key", "updates")}
    assert tuple(f.name for f in dataclasses.fields(state)) == layouts[STATE_LAYOUT]
    assert set(state.opt_state) == set(state.params)
    want = {"dreamer": {"wm", "actor", "critic"}, "sac": {"actor", "critic", "alpha"}}
    assert set(state.params) == want.get(name, {"wm"})
    carry = agent.init_carry(n)
    assert tuple(carry) == CARRY_KEYS and carry["action"].shape == (n, a)
    obs = {"vector": jnp.zeros((n, 3)), "is_first": jnp.ones(n, bool)}
    for mode in ("explore", "eval", "random"):
        action, new = jax.eval_shape(agent.policy, state, carry, obs, jax.random.key(1), mode)
        assert action.shape == (n, a) and _same_structure(new, carry)
    batch = dummy_batch(shapes, a, 2, 4)
    new_state, metrics, _ = jax.eval_shape(agent.update, state, batch)
    assert _same_structure(new_state, state) and metrics


def test_the_evaluator_does_not_import_the_runner():
    code = "import sys, experiments.evaluate; print('experiments.train' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"
