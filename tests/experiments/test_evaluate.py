"""Load a trained run and act: the Python API and the evaluate command."""

import json

import numpy as np
import pytest
from PIL import Image

from experiments import config as config_lib
from experiments.evaluate import LoadedPolicy, evaluate, main
from experiments.run.loop import train


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("run")
    cfg, _ = config_lib.parse_args(
        ["--logdir", str(path), "--steps", "1200", "--run.eval_every", "0"]
    )
    train(cfg, path)
    return path


def test_loaded_policy_acts_step_by_step_with_recurrent_state(logdir):
    policy = LoadedPolicy(logdir)
    assert policy.cfg.run.steps == 1200 and policy.step == 150  # 1200 env steps / repeat 8
    with policy.make_env(seed=5) as env:
        obs = first_obs = env.reset()
        policy.reset()
        a0 = policy.act(obs)
        assert a0.shape == (env.act_dim,) and np.all(np.abs(a0) <= 1)
        deter_after_first = np.asarray(policy.carry["state"]["deter"])
        obs = env.step(a0)
        policy.act(obs)
        assert not np.allclose(policy.carry["state"]["deter"], deter_after_first)
        # A new episode (is_first) resets the recurrent state. The first step's h is computed from
        # the reset state (h_0, s_0) and a zero action alone, before the observation enters (it
        # shapes only the posterior s), so a different first observation (the second reset draws
        # another start state) and another key give the first episode's h again.
        first = env.reset()
        assert not np.allclose(first["vector"], first_obs["vector"])
        policy.act(first)
        np.testing.assert_allclose(policy.carry["state"]["deter"], deter_after_first, atol=1e-6)
    batch = {"vector": np.zeros((3, 5), np.float32), "is_first": np.ones(3, bool)}
    policy.reset(3)
    assert policy.act(batch).shape == (3, 1)


@pytest.mark.slow
def test_evaluate_returns_and_video(logdir, capsys):
    result = evaluate(logdir, episodes=2, video=True)
    assert result["episodes"] == 2 and len(result["returns"]) == 2
    assert all(0.0 <= r <= 1000.0 for r in result["returns"])
    assert result["env_steps"] == 1200
    with Image.open(result["video"]) as im:
        assert im.size == (128, 128) and im.n_frames > 1
    assert main(["--logdir", str(logdir), "--episodes", "1"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["episodes"] == 1
    assert main(["--logdir", str(logdir / "missing")]) == 2
