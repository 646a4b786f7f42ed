"""The compiled collect-and-train chunk (experiments/run/device_program.py) on gymnax's
CartPole with the debug agent: the updates fall where the host runner's counting puts them,
replay holds exactly the transitions the environments produced under the stored actions, the
episode outputs are the stored rewards' sums, and evaluations (experiments/run/device_eval.py)
play the host loop's episodes when they are due."""

from __future__ import annotations

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("gymnax")

from experiments import config as config_lib
from experiments.envs import jax_envs
from experiments.replay import device as replay_lib
from experiments.run import device_program as dp
from experiments.run.device_eval import make_evaluate
from experiments.run.eval import EPISODE_KEYS

N, STEPS, PREFILL = 2, 60, 40


def _debug_setup():
    """The debug agent on CartPole, and the chunk's settings: B x T = 4 x 16 at ratio 32, so
    per_update = 2 agent steps and 2 environments owe 1 update per iteration once prefill is
    over and replay holds 64 windows of 17 steps; 2 evaluation episodes every 40 env steps."""
    cfg = config_lib.parse_args(
        ["--preset", "debug", "--task", "gymnax:CartPole-v1", "--logdir", "x"]
    )[0]
    env = jax_envs.make_jax_env("gymnax:CartPole-v1", 1, 0)
    agent = config_lib.make_agent(cfg, (("vector", (4,)),), env.act_dim, env.discrete)
    settings = dp.Settings(N, 4, 16, 32.0, PREFILL, 1, 1, 0, eval_every=40, eval_episodes=2)
    return env, agent, settings


@pytest.fixture(scope="module")
def run():
    env, agent, settings = _debug_setup()
    keys = tuple(jax.random.split(jax.random.key(0), 5))
    env_keys = jnp.stack([jax_envs.seed_key(i) for i in range(N)])
    carry = dp.init_carry(agent, env, settings, 1000, keys, env_keys)
    first_obs, first_state = carry.obs, carry.state
    carry, out = jax.jit(dp.make_chunk(agent, env, settings, STEPS))(carry)
    return SimpleNamespace(
        env=env, agent=agent, keys=keys, env_keys=env_keys, first_obs=first_obs,
        first_state=jax.device_get(first_state), carry=jax.device_get(carry),
        out=jax.device_get(out),
    )  # fmt: skip


@pytest.mark.slow
def test_updates_fall_where_the_host_counting_puts_them(run):
    carry = run.carry
    # Iteration i (0-based) has agent_steps = 2 i before it: prefill is over from i = 20; 64
    # windows of 17 steps over 2 streams need 48 stored steps each, stored after i = 47.
    # Iterations 47..59 owe one update each.
    assert int(carry.agent_steps) == N * STEPS and int(carry.replay.count) == STEPS
    assert int(carry.updates) == int(carry.metric_count) == STEPS - 47
    assert float(carry.credit) == 0.0
    assert int(carry.state.updates) == STEPS - 47
    assert all(np.isfinite(v) for v in carry.metric_sums.values())


@pytest.mark.slow
def test_replay_holds_the_environments_transitions_under_the_stored_actions(run):
    env, env_keys, first_obs, carry, out = run.env, run.env_keys, run.first_obs, run.carry, run.out
    data = carry.replay.data
    step = jax.jit(env.step)
    for i in range(N):
        state, obs = env.init(env_keys[i])
        np.testing.assert_array_equal(first_obs["vector"][i], obs["vector"])
        for t in range(STEPS):
            np.testing.assert_array_equal(data["vector"][i, t], obs["vector"])
            assert bool(data["is_first"][i, t]) == bool(obs["is_first"])
            assert float(data["reward"][i, t]) == float(obs["reward"])
            if t + 1 < STEPS:  # the action stored with step t + 1 is the one taken at t
                action = data["action"][i, t + 1]
                if obs["is_last"]:
                    assert not action.any()  # a reset step stores a zero previous action
                    action = np.eye(2, dtype=np.float32)[0]
                else:
                    assert action.sum() == 1.0  # one-hot
                state, obs = step(state, action)
    assert out["is_last"].shape == (STEPS, N)
    # Each ended episode's return is the sum of its stored rewards (1 per step for CartPole).
    ended = np.argwhere(out["is_last"])
    assert len(ended)
    for t, i in ended:
        assert out["return"][t, i] == out["length"][t, i] > 0


def _host_episode(agent, state, env, env_key, policy_key, e: int) -> tuple[float, int]:
    """Evaluation episode e as a host loop plays it: the environment from fold_in(env_key, e),
    one jitted policy call (batch 1, key fold_in(policy_key, e * EPISODE_KEYS + t)) and one
    jitted env step per agent step, until is_last."""
    init, step = jax.jit(env.init), jax.jit(env.step)
    env_state, obs = init(jax.random.fold_in(env_key, e))
    carry, total, t = agent.init_carry(1), 0.0, 0
    while not bool(obs["is_last"]):
        batch = {k: obs[k][None] for k in ("vector", "is_first")}
        key = jax.random.fold_in(policy_key, e * EPISODE_KEYS + t)
        action, carry = agent.policy(state, carry, batch, key, "eval")
        env_state, obs = step(env_state, jnp.asarray(action[0], jnp.float32))
        total += float(obs["reward"])
        t += 1
    return total, t


@pytest.mark.slow
def test_evaluation_episodes_side_by_side_equal_the_host_loops_episodes():
    env, agent, _ = _debug_setup()
    state = agent.init(jax.random.key(1))
    policy_key, env_key = jax.random.key(2), jax.random.key(3)
    returns, lengths = jax.jit(make_evaluate(agent, env, 3))(state, policy_key, env_key)
    host = [_host_episode(agent, state, env, env_key, policy_key, e) for e in range(3)]
    # CartPole pays 1 per step: return == length; each episode has its own keys.
    np.testing.assert_array_equal(lengths, [n for _, n in host])
    np.testing.assert_array_equal(returns, [r for r, _ in host])
    assert len(set(lengths.tolist())) > 1


@pytest.mark.slow
def test_evaluations_run_when_due_with_the_agent_of_that_step(run):
    """eval_every 40 env steps, 2 environments: agent step i ends at env step 2 (i + 1), so
    evaluations follow steps 19, 39 and 59; the first sees the initial agent (no update yet),
    the last the final one (after that step's update); keys are folded with the env step."""
    out, carry = run.out, run.carry
    assert np.flatnonzero(out["evaluated"]).tolist() == [19, 39, 59]
    assert int(carry.next_eval) == 160
    for i, state in ((19, run.first_state), (59, carry.state)):
        steps = 2 * (i + 1)
        policy_key, env_key = (jax.random.fold_in(k, steps) for k in run.keys[3:])
        host = [_host_episode(run.agent, state, run.env, env_key, policy_key, e) for e in (0, 1)]
        assert float(out["eval_return"][i]) == np.mean([r for r, _ in host])


def test_replay_spec_and_record_keep_the_host_layout():
    env = jax_envs.make_jax_env("gymnax:CartPole-v1", 1, 0)
    spec = dp.replay_spec(env, 2)
    assert set(spec) == {"vector", "action", "reward", "is_first", "is_last", "is_terminal"}
    obs = {
        "vector": jnp.ones((2, 4)),
        "reward": jnp.array([1.0, 0.0]),
        "is_first": jnp.array([False, True]),
        "is_last": jnp.array([True, False]),
        "is_terminal": jnp.array([False, False]),
    }
    rec = dp.record(obs, jnp.array([[0.0, 1.0], [1.0, 0.0]]), ("vector",))
    np.testing.assert_array_equal(rec["action"], [[0.0, 1.0], [0.0, 0.0]])  # zero at a reset
    assert rec["reward"].dtype == jnp.float32 and rec["is_last"].tolist() == [True, False]
    assert replay_lib.nbytes(spec, 10) == 10 * (16 + 8 + 4 + 3)


@pytest.mark.slow
def test_the_host_runner_and_the_chunk_run_the_same_training(tmp_path):
    """The host runner (``experiments.run.loop``, with the keyed replay sampler) and the
    compiled chunk, from the same config, seeds and keys: the same transitions stored, the same
    number of updates at the same steps, and the same parameters bit for bit (one CPU device:
    the update compiled inside the scan computes what the runner's jitted update does)."""
    import contextlib

    from experiments import envs as envs_lib
    from experiments.run.loop import Runner

    args = ["--preset", "debug", "--task", "gymnax:CartPole-v1", "--envs", str(N)]
    args += ["--steps", str(N * STEPS), "--run.prefill", str(PREFILL), "--run.train_ratio", "32"]
    args += ["--run.replay_sampler", "keyed", "--run.eval_every", "0", "--run.report_every", "0"]
    args += ["--run.batch_size", "4", "--run.batch_length", "16", "--logdir", str(tmp_path)]
    cfg = config_lib.parse_args(args)[0]
    with contextlib.closing(Runner(cfg, tmp_path)) as runner:
        runner.run()
        env = jax_envs.make_jax_env(cfg.env.task, 1, 0)
        settings = dp.Settings(N, 4, 16, 32.0, PREFILL, 1, cfg.model.replay_context, 0)
        keys = (runner.init_key, runner.policy_key, runner.sample_key, runner.eval_key)
        keys += (jax_envs.seed_key(0),)
        seeds = envs_lib.env_seeds(cfg.run.seed, N, 1, 0)
        env_keys = jnp.stack([jax_envs.seed_key(s) for s in seeds])
        carry = dp.init_carry(runner.single, env, settings, cfg.run.replay_capacity, keys, env_keys)
        carry, _ = jax.jit(dp.make_chunk(runner.single, env, settings, STEPS))(carry)
        host_steps = [runner.replay.stream_steps(i) for i in range(N)]
        host_updates, host_state = runner.counters["updates"], jax.device_get(runner.state)
    carry = jax.device_get(carry)
    assert int(carry.updates) == host_updates == STEPS - 47
    for i in range(N):
        for k, v in host_steps[i].items():
            np.testing.assert_array_equal(carry.replay.data[k][i, :STEPS], v, err_msg=k)
    host_leaves = jax.tree.leaves(host_state.params)
    device_leaves = jax.tree.leaves(carry.state.params)
    for h, d in zip(host_leaves, device_leaves, strict=True):
        np.testing.assert_array_equal(d, h)


@pytest.mark.slow
def test_seeds_vmapped_in_one_program_equal_each_seed_alone():
    """K = 2 carries stacked and the chunk vmapped over them: each seed's replay, update
    count and evaluation steps are those of its chunk run alone, its parameters too up to
    float rounding (vmap batches each matrix product over the seeds, which may sum in another
    order: after 13 updates a few elements differ by ~1e-6)."""
    env, agent, settings = _debug_setup()

    def carry_of(seed: int) -> dp.Carry:
        keys = tuple(jax.random.split(jax.random.key(seed), 5))
        env_keys = jnp.stack([jax_envs.seed_key(100 * seed + i) for i in range(N)])
        return dp.init_carry(agent, env, settings, 1000, keys, env_keys)

    chunk = dp.make_chunk(agent, env, settings, STEPS)
    runs = [jax.device_get(jax.jit(chunk)(carry_of(k))) for k in range(2)]
    alone, alone_out = [r[0] for r in runs], [r[1] for r in runs]
    stacked = jax.tree.map(lambda *x: jnp.stack(x), carry_of(0), carry_of(1))
    both, both_out = jax.device_get(jax.jit(jax.vmap(chunk))(stacked))
    for k in range(2):
        mine = jax.tree.map(lambda x, k=k: x[k], both)
        # Evaluations (gated by a while_loop, not a cond) at the same steps: 40, 80, 120.
        assert np.flatnonzero(both_out["evaluated"][k]).tolist() == [19, 39, 59]
        assert np.array_equal(both_out["evaluated"][k], alone_out[k]["evaluated"])
        assert int(mine.updates) == int(alone[k].updates) == STEPS - 47
        for key in alone[k].replay.data:
            np.testing.assert_array_equal(mine.replay.data[key], alone[k].replay.data[key])
        for a, b in zip(
            jax.tree.leaves(mine.state.params), jax.tree.leaves(alone[k].state.params), strict=True
        ):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
