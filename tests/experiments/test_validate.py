"""Bad input refused at the boundary: the exact exception, the field and its fix named, and
no logdir left behind."""

import numpy as np
import pytest

from experiments import config as config_lib
from experiments import evaluate as evaluate_lib
from experiments import train as train_lib
from experiments.config.validate import ConfigError, check_memory, replay_bytes
from experiments.envs import make_env
from experiments.replay import Replay
from experiments.run.loop import record
from experiments.run.progress import format_duration

# (extra arguments after --preset debug, exception type, fragment of its message)
BAD = [
    (["--task", "atari:pong"], ConfigError, "Atari tasks observe images only; set --env.obs"),
    (["--task", "atari:pongg", "--obs", "pixels"], ValueError, "did you mean 'pong'"),
    (["--task", "crafter:rewards", "--obs", "pixels"], ValueError, "use 'crafter:reward'"),
    (
        ["--task", "crafter:reward", "--obs", "pixels", "--env.action_repeat", "2"],
        ConfigError,
        "Crafter steps once per action",
    ),
    (["--env.atari_lives", "lost"], ConfigError, "env.atari_lives='lost'; expected 'unused'"),
    (["--env.atari_actions", "some"], ConfigError, "env.atari_actions='some'; expected"),
    (["--env.atari_noops", "-1"], ConfigError, "env.atari_noops=-1; use 0"),
    (["--run.train_ratio", "0"], ConfigError, "the run would never train"),
    (["--run.eval_every", "-1"], ConfigError, "run.eval_every=-1; must be >= 0"),
    (["--run.eval_episodes", "0"], ConfigError, "run.eval_episodes=0; must be >= 1"),
    (["--run.prefill", "8"], ConfigError, "run.prefill=8 environment steps gives each"),
    (["--run.replay_capacity", "10"], ConfigError, "replay could never hold the B x T windows"),
    # debug: B x T = 4 x 16 and 16 + 1 steps per window: 64 + 2 x 16 = 96 steps are needed.
    (
        ["--env.envs", "2", "--run.replay_capacity", "95"],
        ConfigError,
        "= 96 steps: replay could never hold",
    ),
    (
        # 100 streams of 17 steps need 1700 steps, the 64 windows only 64 + 100 x 16 = 1664.
        ["--env.envs", "100", "--run.replay_capacity", "1690"],
        ConfigError,
        "streams share replay",
    ),
    (["--run.steps", "0"], ConfigError, "run.steps=0; must be positive"),
    (["--run.seeds", "0"], ConfigError, "run.seeds=0; must be >= 1"),
    (["--run.batch_length", "1"], ConfigError, "need >= 1 and >= 2"),
    (["--run.batch_size", "0"], ConfigError, "need >= 1 and >= 2"),
    (["--run.log_every", "0"], ConfigError, "run.log_every=0; must be a positive"),
    (["--run.save_every", "-5"], ConfigError, "run.save_every=-5; must be a positive"),
    (
        ["--run.report_every", "-1"],
        ConfigError,
        "run.report_every=-1; must be >= 0 environment steps",
    ),
    (["--run.keep_checkpoints", "0"], ConfigError, "run.keep_checkpoints=0"),
    (["--run.gap_particles", "-1"], ConfigError, "run.gap_particles=-1"),
    (["--run.context_dtype", "bfloat16"], ConfigError, "run.context_dtype='bfloat16'"),
    (["--run.seed", "-1"], ConfigError, "run.seed=-1; must lie in [0, 2^31)"),
    (["--run.replay_chunk", "0"], ConfigError, "run.replay_chunk=0"),
    (["--env.envs", "0"], ConfigError, "env.envs=0; need at least 1"),
    (["--env.action_repeat", "-1"], ConfigError, "env.action_repeat=-1"),
    (["--env.obs", "depth"], ConfigError, "env.obs='depth'; expected 'proprio' or 'pixels'"),
    (["--env.time_limit", "-1"], ConfigError, "env.time_limit=-1"),
    (["--obs", "pixels", "--env.size", "32"], ConfigError, "env.size=32"),
    (
        ["--obs", "pixels", "--env.size", "100,100"],
        ConfigError,
        "env.size=100,100: image size 100x100 does not fit 4 stages",
    ),
    (["--obs", "pixels", "--env.size", "40,64"], ConfigError, "set --env.size to one of them"),
    (
        ["--obs", "pixels", "--env.size", "96,96", "--model.mults", "1,2"],
        ConfigError,
        "(model.mults has 2 stages)",
    ),
    (["--env.size", "0,64"], ConfigError, "env.size=0,64; expected a positive height and width"),
    (["--task", "gym:CartPole-v1", "--obs", "pixels"], ConfigError, "leave env.obs at"),
    (["--logging.wandb", "sometimes"], ConfigError, "logging.wandb='sometimes'"),
    (["--wandb", "offline", "--logging.project", ""], ConfigError, "logging.project is empty"),
    (["--agent", "sac", "--obs", "pixels"], ConfigError, "agent sac learns from states"),
    (
        ["--agent", "sac", "--model.replay_context", "1"],
        ConfigError,
        "set --model.replay_context 0",
    ),
    (
        ["--agent", "sac", "--model.replay_context", "0", "--run.gap_particles", "4"],
        ConfigError,
        "agent sac has no world model",
    ),
    (["--model.deter", "30", "--model.blocks", "4"], ValueError, "not divisible by model.blocks"),
    (["--model.act", "swish2"], ValueError, "model.act='swish2'"),
    (["--model.norm", "batch"], ValueError, "model.norm='batch'"),
    (["--model.vector_dist", "laplace"], ValueError, "model.vector_dist='laplace'"),
    (["--model.carry_state", "false"], ValueError, "unknown config field 'model.carry_state'"),
    (["--dreamer.actor_unimix", "1.0"], ValueError, "dreamer.actor_unimix=1.0; must lie in"),
    (["--opt.lr", "0"], ValueError, "opt.lr=0.0; must be positive"),
    (["--opt.beta1", "1.0"], ValueError, "opt.beta1=1.0; must lie in [0, 1)"),
    (["--dreamer.horizon", "0"], ValueError, "dreamer.horizon=0"),
    (["--run.nonexistent", "3"], ValueError, "unknown config field 'run.nonexistent'"),
    (["--run.steps", "abc"], ValueError, "cannot parse 'abc' as int"),
    (["--task", "nope-nope"], ValueError, "unknown dm-control task 'nope-nope'"),
    (["--preset", "nope"], ValueError, "unknown --preset 'nope'"),
]


def _argv(tmp_path, extra):
    return ["--preset", "debug", "--logdir", str(tmp_path / "run"), *extra]


@pytest.mark.parametrize(("extra", "kind", "fragment"), BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_config_is_refused_before_anything_starts(tmp_path, capsys, extra, kind, fragment):
    with pytest.raises(ValueError) as info:
        config_lib.parse_args(_argv(tmp_path, extra))
    assert type(info.value) is kind
    assert fragment in str(info.value)
    # The command: exit status 2, the same message, and no logdir created.
    assert train_lib.main(_argv(tmp_path, extra)) == 2
    assert fragment in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_replay_larger_than_the_machine_is_refused(tmp_path, capsys):
    argv = _argv(tmp_path, ["--obs", "pixels", "--run.replay_capacity", str(10**9)])
    cfg, _ = config_lib.parse_args(argv)  # a valid config, on a machine with the memory
    with pytest.raises(ConfigError, match=r"GiB of replay at capacity, more than 90% of"):
        check_memory(cfg)
    assert train_lib.main(argv) == 2
    assert "lower --run.replay_capacity" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_unusable_logdir_is_refused_and_left_as_it_was(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    for logdir, fragment in (
        (afile, "is a file, not a directory"),
        (afile / "run", "is not usable: Not a directory"),
    ):
        argv = ["--preset", "debug", "--logdir", str(logdir), "--run.eval_every", "0"]
        assert train_lib.main(argv) == 2
        assert fragment in capsys.readouterr().err
    assert afile.read_text() == "keep me"


def test_evaluate_refuses_zero_episodes(capsys):
    assert evaluate_lib.main(["--logdir", "nowhere", "--episodes", "0"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and "--episodes 0: evaluate at least 1 episode" in out.err


def test_replay_memory_figure_is_what_replay_holds():
    """The pre-flight line's and the memory check's figure (validate.replay_bytes) against the
    bytes two seeds' replays actually allocate once filled past capacity, for dreamerv3 on a
    proprio task: its stored RSSM states (float16 deter 512 + 32 x 4 latents = 1,280 B) dwarf
    the step data (cartpole: 5 + 1 floats, a reward and 3 flags = 31 B)."""
    cfg = config_lib.replace(
        config_lib.dreamerv3(),
        {"env.task": "cartpole-balance", "run.replay_capacity": 3000, "run.seeds": 2},
    )
    with make_env("cartpole-balance") as env:
        obs = env.reset(seed=0)
        obs_spec, act_dim = env.obs_spec, env.act_dim
    per_step, total = replay_bytes(cfg, obs_spec, act_dim)
    assert per_step == 31 + 1280 + 8 + 4 + 16  # + stamp, owner and the stream's row index
    n = 4
    stacked = {k: np.stack([np.asarray(obs[k])] * n) for k in obs}
    context = {
        "deter": np.zeros((n, cfg.model.deter), np.float32),
        "stoch": np.zeros((n, cfg.model.make_latent().flat_size), np.float32),
    }
    replays = [Replay(3000, context_dtype=cfg.run.context_dtype) for _ in range(2)]
    for _ in range(1000):  # 4000 steps into 3000 places each
        for replay in replays:
            replay.add_batch(record(stacked, np.zeros((n, act_dim), np.float32)), context)
    actual = sum(r.nbytes() for r in replays)
    assert len(replays[0]) == 3000
    assert abs(total - actual) <= 0.05 * actual, (total, actual)


IMAGES_MODULE = '''
import gymnasium
import numpy as np


class Images32(gymnasium.Env):
    """32x32 RGB frames, which the world model's encoder takes only resized."""

    observation_space = gymnasium.spaces.Box(0, 255, (32, 32, 3), np.uint8)
    action_space = gymnasium.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros((32, 32, 3), np.uint8), {}

    def step(self, action):
        return np.zeros((32, 32, 3), np.uint8), 0.0, False, False, {}


gymnasium.register(id="Images32-v0", entry_point=f"{__name__}:Images32", max_episode_steps=50)
'''

# Refused once the run starts (an env or an agent that cannot be built) or by the command line
# (values no config check reached before): (extra arguments, fragment of the message).
REFUSED_AT_START = [
    (["--run.train_ratio", "inf"], "run.train_ratio=inf; must be finite"),
    (["--steps", "1e20"], "run.steps=1e+20 is more than 1e+15 environment steps"),
    # debug: prefill 800 env steps, so the first update comes at env step 800.
    (["--steps", "800"], "ends before the first update, at env step 800"),
    (["--task", "gym:CarRacing-v3"], 'pip install "gymnasium[box2d]"'),
    (["--task", "gym:rssm_no_such_module:Foo-v0"], "module 'rssm_no_such_module'"),
    # Gymnasium images are resized to env.size, checked once the env exists.
    (
        ["--task", "gym:rssm_test_images:Images32-v0", "--env.size", "40,40"],
        "observation 'image' has shape (40, 40, 3): image size 40x40 does not fit",
    ),
    (
        ["--agent", "sac", "--task", "gym:CartPole-v1", "--model.replay_context", "0"],
        "sac on gym:CartPole-v1: agent sac has a tanh-Gaussian policy",
    ),
]


@pytest.mark.parametrize(
    ("extra", "fragment"), REFUSED_AT_START, ids=[" ".join(c[0]) for c in REFUSED_AT_START]
)
def test_a_run_that_cannot_start_says_why_and_leaves_nothing(
    tmp_path, capsys, monkeypatch, extra, fragment
):
    (tmp_path / "rssm_test_images.py").write_text(IMAGES_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert train_lib.main(_argv(tmp_path, extra)) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err, err[-2000:]
    assert not (tmp_path / "run").exists()


def test_an_empty_logdir_is_refused(capsys):
    assert train_lib.main(["--preset", "debug", "--logdir", ""]) == 2
    assert "--logdir is empty" in capsys.readouterr().err


def test_a_task_a_module_registers_is_found_through_it(tmp_path, monkeypatch):
    (tmp_path / "rssm_test_images.py").write_text(IMAGES_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    task = "gym:rssm_test_images:Images32-v0"
    cfg, _ = config_lib.parse_args(["--logdir", "x", "--task", task])
    with make_env(cfg.env.task, seed=3) as env:
        assert env.obs_spec["image"] == ((32, 32, 3), np.dtype(np.uint8))
        assert env.reset()["image"].shape == (32, 32, 3)


def test_an_unusable_compile_cache_warns_and_compiles_without_it(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("")
    assert train_lib.use_compile_cache(afile / "xla") is False
    assert "compiling without it" in capsys.readouterr().err


def test_an_eta_past_a_day_counts_days():
    assert format_duration(59) == "00:00:59"
    assert format_duration(3 * 86_400 + 4 * 3600 + 5 * 60 + 6) == "3d 04:05:06"
    assert format_duration(float("inf")) == "?" and "d " in format_duration(1e20)  # no OSError


def test_replay_bytes_count_the_channels_a_run_stores():
    # Before the env exists, pixels are env.size x (3, or 1 with env.gray) uint8 bytes a step.
    base = config_lib.replace(config_lib.debug(), {"env.obs": "pixels"})
    sizes = {}
    for size, gray in (((64, 64), False), ((96, 96), False), ((96, 96), True)):
        cfg = config_lib.replace(base, {"env.size": size, "env.gray": gray})
        sizes[size, gray] = replay_bytes(cfg)[0]
    assert sizes[(96, 96), False] - sizes[(64, 64), False] == (96 * 96 - 64 * 64) * 3
    assert sizes[(96, 96), False] - sizes[(96, 96), True] == 96 * 96 * 2
