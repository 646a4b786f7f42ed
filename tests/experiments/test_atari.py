"""Atari games (experiments/envs/atari.py) against ale-py itself, and the reference scores."""

from __future__ import annotations

import numpy as np
import pytest

ale_py = pytest.importorskip("ale_py")

from experiments.envs.atari import ATARI100K_GAMES, AtariEnv, parse_game  # noqa: E402
from experiments.envs.atari_scores import (  # noqa: E402
    SCORES,
    human_normalized,
    normalized_summary,
)
from experiments.envs.images import resize, to_gray  # noqa: E402

Action = ale_py.Action
# Raw frames: no resize, colour, no no-ops, no sticky actions.
RAW = dict(size=(210, 160), gray=False, noops=0, sticky=False)


def raw_ale(game: str, sticky: float = 0.0, seed: int = 0) -> ale_py.ALEInterface:
    """A bare ALE with ``repeat_action_probability`` set before the ROM loads."""
    ale = ale_py.ALEInterface()
    ale.setLoggerMode(ale_py.LoggerMode.Error)
    ale.setInt("random_seed", seed)
    ale.setFloat("repeat_action_probability", sticky)
    ale.loadROM(ale_py.roms.get_rom_path(game))
    return ale


def one_hot(i: int, n: int) -> np.ndarray:
    return np.eye(n, dtype=np.float32)[i]


def stuck_fraction(ale: ale_py.ALEInterface, trials: int = 600) -> float:
    """How often a frame of UP right after a frame of NOOP acts as NOOP in freeway (where the
    two differ in RAM after one frame): ALE's sticky-action probability. The effect of each
    frame is told apart by replaying it from a cloned state on a non-sticky ALE; trials whose
    NOOP frame itself stuck are skipped."""
    ref = raw_ale("freeway")
    stuck = counted = 0
    for _ in range(trials):
        before = ale.cloneState()
        ale.act(Action.NOOP)
        ref.restoreState(before)
        ref.act(Action.NOOP)
        if not np.array_equal(ale.getRAM(), ref.getRAM()):
            continue  # the NOOP frame repeated the UP before it
        state = ale.cloneState()
        ale.act(Action.UP)
        got = ale.getRAM().copy()
        ref.restoreState(state)
        ref.act(Action.NOOP)
        if np.array_equal(got, ref.getRAM()):
            stuck += 1
        counted += 1
    assert counted > trials // 2
    return stuck / counted


def test_ale_reads_sticky_probability_when_the_rom_loads():
    # Why AtariEnv sets it before loadROM: set after (as the reference does), the getter
    # reports 0 while the emulator keeps its default 0.25.
    late = ale_py.ALEInterface()
    late.setLoggerMode(ale_py.LoggerMode.Error)
    late.loadROM(ale_py.roms.get_rom_path("freeway"))
    late.setFloat("repeat_action_probability", 0.0)
    assert late.getFloat("repeat_action_probability") == 0.0
    assert 0.17 < stuck_fraction(late) < 0.33


@pytest.mark.parametrize("sticky", [False, True])
def test_sticky_probability(sticky):
    env = AtariEnv("freeway", noops=0, sticky=sticky)
    env.reset()
    assert env.ale.getFloat("repeat_action_probability") == (0.25 if sticky else 0.0)
    fraction = stuck_fraction(env.ale)
    if sticky:
        assert 0.19 < fraction < 0.31
    else:
        assert fraction == 0.0


def test_sticky_actions_diverge_across_seeds_only_when_sticky():
    actions = np.random.default_rng(0).integers(0, 6, 150)

    def frames(seed: int, sticky: bool) -> np.ndarray:
        env = AtariEnv("pong", actions="needed", **{**RAW, "sticky": sticky}, seed=seed)
        env.reset()
        return np.stack([env.step(one_hot(a, 6))["image"] for a in actions])

    assert np.array_equal(frames(0, False), frames(1, False))
    assert not np.array_equal(frames(0, True), frames(1, True))


def test_observation_pools_the_last_two_frames_of_the_repeat():
    env = AtariEnv("pong", actions="needed", **RAW)  # repeat 4, pooling 2, max
    small = AtariEnv("pong", actions="needed", size=(64, 48), noops=0, sticky=False)
    ale = raw_ale("pong")
    ale.reset_game()
    acts = ale.getMinimalActionSet()
    first, first_small = env.reset(), small.reset()
    assert np.array_equal(first["image"], ale.getScreenRGB())  # every slot is the reset frame
    assert np.array_equal(first_small["image"], to_gray(resize(ale.getScreenRGB(), (64, 48))))
    pooled_differs = False
    for i in np.random.default_rng(1).integers(0, len(acts), 40):
        frames = []
        for _ in range(4):
            ale.act(acts[i])
            frames.append(ale.getScreenRGB())
        expected = np.maximum(frames[-2], frames[-1])
        out, out_small = env.step(one_hot(i, 6)), small.step(one_hot(i, 6))
        assert np.array_equal(out["image"], expected)
        assert np.array_equal(env.render(), frames[-1])
        assert out_small["image"].shape == (64, 48, 1)
        assert np.array_equal(out_small["image"], to_gray(resize(expected, (64, 48))))
        pooled_differs |= not np.array_equal(expected, frames[-1])
    assert pooled_differs  # the max did something: the test can tell pooling from none
    ale.reset_game()  # a second episode pools no frame of the first (f8817c4 did)
    assert np.array_equal(env.reset()["image"], ale.getScreenRGB())


def test_an_early_end_observes_the_frame_it_ended_on():
    # length 42 = 10 steps of 4 frames + 2: the last step ends before its pooled repeats.
    env = AtariEnv("alien", **RAW, length=42)
    ale = raw_ale("alien")
    ale.reset_game()
    env.reset()
    frames = []
    for i in np.random.default_rng(3).integers(0, 18, 11):
        out = env.step(one_hot(i, 18))
        for _ in range(4 if len(frames) < 40 else 2):
            ale.act(ale.getLegalActionSet()[i])
            frames.append(ale.getScreenRGB())
    assert out["is_last"] and len(frames) == 42
    stale = np.maximum(frames[38], frames[39])  # what the reference observes
    assert not np.array_equal(stale, frames[41])
    assert np.array_equal(out["image"], np.maximum(frames[39], frames[41]))


def test_autostart_presses_fire_where_the_game_has_it():
    for game, frames in [("breakout", 2), ("freeway", 0)]:  # freeway's actions have no FIRE
        env = AtariEnv(game, actions="needed", noops=0, autostart=True)
        env.reset()
        assert env.ale.getEpisodeFrameNumber() == frames


def test_noop_starts():
    seed, noops = 7, 5
    env = AtariEnv("pong", noops=noops, sticky=False, seed=seed)
    rng = np.random.default_rng(seed)
    rng.integers(0, 2**31)  # the first draw seeds ALE; then one count per reset
    expected = [int(rng.integers(noops + 1)) for _ in range(90)]
    counts = []
    for _ in expected:
        env.reset()
        counts.append(env.ale.getEpisodeFrameNumber())
    assert counts == expected
    histogram = np.bincount(counts, minlength=noops + 1)
    assert len(histogram) == noops + 1 and histogram.min() >= 7  # ~15 each: uniform on 0..5

    start = raw_ale("pong")
    start.reset_game()
    resets = [AtariEnv("pong", **RAW, seed=s).reset()["image"] for s in range(3)]
    assert all(np.array_equal(r, start.getScreenRGB()) for r in resets)  # noops=0: one start
    # Alien's screen changes during the first frames (pong's stays still for a while).
    varied = [AtariEnv("alien", **{**RAW, "noops": 30}, seed=s).reset()["image"] for s in range(3)]
    assert not np.array_equal(varied[0], varied[1]) and not np.array_equal(varied[1], varied[2])


def play_breakout(lives: str, steps: int = 400, **kwargs) -> list[dict]:
    """Random play (seeded) until is_last or ``steps``; the step dicts."""
    env = AtariEnv("breakout", lives=lives, actions="needed", **RAW, **kwargs)
    env.reset()
    out = []
    for a in np.random.default_rng(0).integers(0, env.act_dim, steps):
        out.append(env.step(one_hot(a, env.act_dim)) | {"lives": env.ale.lives()})
        if out[-1]["is_last"]:
            break
    return out


def test_life_loss():
    discount = play_breakout("discount")
    lost = [t for t, o in enumerate(discount) if o["is_terminal"]]
    assert len(lost) == 5 and discount[-1]["is_last"] and discount[-1]["lives"] == 0
    t = lost[0]
    assert not discount[t]["is_last"] and discount[t]["lives"] == 4
    assert not any(o["is_last"] for o in discount[:-1])  # the episode went on after losses

    reset = play_breakout("reset")
    assert len(reset) == t + 1 and reset[t]["is_terminal"] and reset[t]["is_last"]

    unused = play_breakout("unused")
    assert unused[t]["lives"] == 4 and not unused[t]["is_terminal"] and not unused[t]["is_last"]
    assert unused[-1]["is_last"] and unused[-1]["is_terminal"] and unused[-1]["lives"] == 0
    assert sum(o["is_terminal"] for o in unused) == 1  # only the game over

    # The reference's behaviour: is_terminal = is_last, so a lost life is not terminal.
    reference = play_breakout("discount", terminal_on_last=True)
    assert not reference[t]["is_terminal"] and reference[t]["lives"] == 4


def test_action_sets():
    assert AtariEnv("pong", actions="needed").act_dim == 6
    env = AtariEnv("pong", actions="all")
    assert env.act_dim == 18 and env.discrete


def test_reward_clipping_keeps_the_score():
    actions = np.random.default_rng(0).integers(0, 18, 300)
    clipped = AtariEnv("alien", **RAW, clip_reward=True)
    plain = AtariEnv("alien", **RAW)
    clipped.reset(), plain.reset()
    for a in actions:
        c, p = clipped.step(one_hot(a, 18)), plain.step(one_hot(a, 18))
        assert c["log_score"] == p["log_score"] == p["reward"]
        if p["log_score"] != 0:
            break
    assert p["log_score"] == 10.0 and c["reward"] == 1.0
    assert c["reward"].dtype == c["log_score"].dtype == np.float32


@pytest.mark.parametrize("terminal_on_last", [False, True])
def test_length_cap_is_last_not_terminal(terminal_on_last):
    env = AtariEnv("pong", **RAW, length=10, terminal_on_last=terminal_on_last)
    assert env.max_agent_steps == 3
    env.reset()
    outs = [env.step(one_hot(0, 18)) for _ in range(3)]
    assert [o["is_last"] for o in outs] == [False, False, True]
    assert outs[-1]["is_terminal"] == terminal_on_last  # the reference calls a cap terminal
    assert env.ale.getEpisodeFrameNumber() == 10  # the last step repeated 2 frames, not 4
    with pytest.raises(RuntimeError, match="after is_last"):
        env.step(one_hot(0, 18))
    assert env.reset()["is_first"]


def test_seeds_fix_the_episode():
    actions = np.random.default_rng(2).integers(0, 18, 30)

    def episode(env: AtariEnv, seed: int | None = None) -> np.ndarray:
        first = env.reset(seed=seed)["image"]
        return np.stack([first] + [env.step(one_hot(a, 18))["image"] for a in actions])

    same = episode(AtariEnv("pong", seed=3))  # sticky, 30 no-ops
    assert same.shape == (31, 96, 96, 1)
    assert np.array_equal(same, episode(AtariEnv("pong", seed=3)))
    assert not np.array_equal(same, episode(AtariEnv("pong", seed=4)))
    assert np.array_equal(same, episode(AtariEnv("pong", seed=4), seed=3))  # reset re-seeds


def test_step_dict_and_spec():
    env = AtariEnv("james_bond", size=(64, 80), gray=False)
    assert env.game == "jamesbond" and env.task == "atari:jamesbond"
    assert env.obs_spec == {"image": ((64, 80, 3), np.dtype(np.uint8))}
    assert env.action_repeat == 4 and env.max_agent_steps == 27000
    with pytest.raises(RuntimeError, match="before reset"):
        env.step(one_hot(0, env.act_dim))
    first = env.reset()
    assert first["image"].shape == (64, 80, 3) and first["image"].dtype == np.uint8
    assert first["is_first"] and not first["is_last"] and first["reward"] == 0.0
    out = env.step(np.arange(env.act_dim, dtype=np.float32))  # argmax of any vector
    assert set(out) == {"image", "reward", "log_score", "is_first", "is_last", "is_terminal"}
    assert all(type(out[k]) is bool for k in ("is_first", "is_last", "is_terminal"))
    with pytest.raises(ValueError, match="18 finite numbers"):
        env.step(np.zeros(3))
    assert env.render().shape == (210, 160, 3)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="did you mean 'pong'"):
        parse_game("pongg")
    with pytest.raises(ValueError, match="'unused', 'discount', 'reset'; got 'life'"):
        AtariEnv("pong", lives="life")
    with pytest.raises(ValueError, match="'needed', 'all'"):
        AtariEnv("pong", actions="minimal")
    with pytest.raises(ValueError, match="'max', 'mean'"):
        AtariEnv("pong", aggregate="min")
    with pytest.raises(ValueError, match="pooling must be >= 1"):
        AtariEnv("pong", pooling=0)
    with pytest.raises(TypeError, match="repeat must be an int"):
        AtariEnv("pong", repeat=True)
    with pytest.raises(ValueError, match="height, width"):
        AtariEnv("pong", size=(64,))
    assert all(parse_game(g) == g for g in ATARI100K_GAMES)  # each has an ale-py ROM


def test_human_normalized_scores():
    assert tuple(SCORES) == ATARI100K_GAMES and len(ATARI100K_GAMES) == 26
    assert human_normalized("pong", 14.6) == pytest.approx(1.0)
    assert human_normalized("pong", -20.7) == pytest.approx(0.0)
    assert human_normalized("breakout", 16.1) == pytest.approx(0.5)  # (16.1 - 1.7) / 28.8
    assert human_normalized("james_bond", 302.8) == pytest.approx(1.0)
    summary = normalized_summary({"pong": 14.6, "breakout": 1.7, "boxing": 36.1})  # 1, 0, 3
    assert summary == pytest.approx({"mean": 4 / 3, "median": 1.0, "games": 3})
    with pytest.raises(ValueError, match="Atari 100k games"):
        human_normalized("tetris", 1.0)
    with pytest.raises(ValueError, match="at least one game"):
        normalized_summary({})
