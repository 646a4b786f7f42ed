"""Atari 2600 games through the Arcade Learning Environment (ale-py), with DreamerV3's wrapper
semantics (``embodied/envs/atari.py`` of danijar/dreamerv3 at f8817c4, with e3f0224's fix of the
frame pool on reset).

`AtariEnv` keeps the ``contract.Env`` protocol and returns its step dicts, plus ``log_score``
(float32): the step's unclipped reward, which the runner sums over an episode as its score.

Conventions (the reference's, except where marked *differs*):

- Games are ale-py's ROM ids (``'pong'``, ``'ms_pacman'``, ``'jamesbond'``; ``'james_bond'`` is
  an alias); `atari_games` lists them.
- One agent step repeats the action ``repeat`` (4) emulator frames and sums their rewards. The
  frames of the last ``pooling`` (2) repeats are kept and the observation is their pixelwise max
  (or mean), resized with Pillow (bilinear) to ``size = (H, W)`` and made gray with the ITU-R 601
  weights (``images.resize``, ``images.to_gray``). After a reset every kept frame is the reset
  frame (e3f0224; f8817c4 copied the buffers the wrong way round and pooled stale frames).
- *differs*: a step that ends (game over, a life lost under 'discount'/'reset', the length cap)
  before its pooled repeats keeps the frame it ended on, pooled with the latest frames kept
  before it (the previous step's last); the reference returned the previous step's frames alone,
  so its last observation of an episode did not show how the episode ended.
- A reset starts the game and acts NOOP a uniform number of times in {0, ..., noops}.
  ``autostart`` then presses FIRE and UP where the action set has FIRE. *differs*: the
  reference tests ``1 in actionset`` on ale-py's ``Action`` enums, which never compare equal to
  ints, so its autostart never fires (checked with ale-py 0.12.1).
- ``sticky``: ALE's sticky actions (each frame repeats the previous action with probability
  0.25, Machado et al. 2018). *differs*: ALE reads ``repeat_action_probability`` when the ROM
  loads; the reference sets it after ``loadROM``, where it has no effect, so its
  ``sticky=False`` ran with ALE's default 0.25. Here it is set before ``loadROM``.
- Episode ends: game over sets ``is_last`` and ``is_terminal``; ``length`` (frames, 108000 = 30
  minutes at 60 Hz) sets ``is_last`` only; a lost life sets ``is_terminal`` under 'discount'
  (the episode goes on) and both under 'reset'. *differs*: the reference returns
  ``is_terminal = is_last``; ``terminal_on_last=True`` restores that.
- Seeding: a numpy Generator seeded with ``seed`` draws ALE's ``random_seed`` (sticky actions)
  and then the no-op counts; ``reset(seed)`` re-seeds both, so a seed fixes the episode.
"""

from __future__ import annotations

import difflib
import math
import os
import threading
from typing import Any

import numpy as np

from experiments.envs.contract import Spec, check_int
from experiments.envs.images import resize, to_gray

# The 26 games of the Atari 100k benchmark (Kaiser et al. 2019, SimPLe), as ale-py ROM ids.
ATARI100K_GAMES: tuple[str, ...] = (
    "alien", "amidar", "assault", "asterix", "bank_heist", "battle_zone", "boxing", "breakout",
    "chopper_command", "crazy_climber", "demon_attack", "freeway", "frostbite", "gopher",
    "hero", "jamesbond", "kangaroo", "krull", "kung_fu_master", "ms_pacman", "pong",
    "private_eye", "qbert", "road_runner", "seaquest", "up_n_down",
)  # fmt: skip
GAME_ALIASES: dict[str, str] = {"james_bond": "jamesbond"}  # DreamerV3's name -> ROM id
LIVES = ("unused", "discount", "reset")
ACTIONS = ("needed", "all")  # ALE's minimal action set | all 18 legal actions
AGGREGATES = ("max", "mean")
STICKY_PROBABILITY = 0.25  # Machado et al. 2018; ALE's default
DEFAULT_LENGTH = 108000  # frames: 30 minutes of play at 60 frames per second
# DreamerV3's settings of its 'atari100k' runs (dreamerv3/configs.yaml at f8817c4).
DREAMERV3_ATARI100K: dict[str, Any] = dict(
    size=(64, 64), repeat=4, sticky=False, gray=False, actions="needed", noops=30
)

# Guards ROM loading and game resets, as the reference does, for envs stepped in threads.
_LOCK = threading.Lock()


def _ale_py() -> Any:
    try:
        import ale_py
    except ImportError as err:
        raise ImportError(
            f"Atari games need ale-py (`pip install ale-py`, which ships the ROMs): {err}"
        ) from err
    return ale_py


def atari_games() -> tuple[str, ...]:
    """Every game ale-py has a ROM for (its ids, e.g. 'pong'), then the aliases."""
    return tuple(_ale_py().roms.get_all_rom_ids()) + tuple(GAME_ALIASES)


def parse_game(name: str) -> str:
    """The ROM id of ``name`` (aliases resolved); ValueError naming close matches otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"game must be a str like 'pong', got {type(name).__name__}")
    name = GAME_ALIASES.get(name, name)
    games = atari_games()
    if name in games:
        return name
    close = difflib.get_close_matches(name.lower().replace("-", "_"), games, n=3, cutoff=0.6)
    if close:
        quoted = [repr(c) for c in close]
        hint = f"did you mean {' or '.join(quoted)}?"
    else:
        hint = f"the Atari 100k games are {', '.join(ATARI100K_GAMES)}"
    raise ValueError(
        f"unknown Atari game {name!r}; {hint} (experiments.envs.atari.atari_games() lists all "
        f"{len(games)} that ale-py has ROMs for)"
    )


def _choice(name: str, value: Any, valid: tuple[str, ...]) -> str:
    if value not in valid:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, valid))}; got {value!r}")
    return value


class AtariEnv:
    """One Atari game with DreamerV3's wrapper semantics (see the module doc).

    Args:
        game: ROM id such as ``'pong'`` (see `atari_games`).
        repeat: emulator frames per agent step (frame skip).
        size: ``(H, W)`` of observed images.
        gray: observe ``[H, W, 1]`` gray images, else ``[H, W, 3]`` colour.
        noops: a reset acts NOOP a uniform number of times in {0, ..., noops}.
        lives: 'unused' (a lost life is nothing), 'discount' (is_terminal, the episode goes on)
            or 'reset' (is_terminal and is_last).
        sticky: ALE's sticky actions with probability 0.25; False means exactly 0.
        actions: 'needed' (the game's minimal action set) or 'all' (the 18 legal actions).
        length: episode cap in emulator frames (is_last without is_terminal); None: no cap.
        pooling: the observation pools the last ``pooling`` frames of a step.
        aggregate: 'max' (pixelwise max, removing Atari's flicker) or 'mean' of those frames.
        autostart: after the no-ops, press FIRE then UP where the action set has FIRE.
        clip_reward: ``reward`` is sign(reward); ``log_score`` stays unclipped.
        seed: seeds the Generator that draws ALE's ``random_seed`` and the no-op counts.
        terminal_on_last: return ``is_terminal = is_last`` as the reference does (a time cap
            then counts as terminal and 'discount' sets no is_terminal); kept to reproduce runs
            made with its behaviour.
    """

    def __init__(
        self,
        game: str,
        repeat: int = 4,
        size: tuple[int, int] = (96, 96),
        gray: bool = True,
        noops: int = 30,
        lives: str = "unused",
        sticky: bool = True,
        actions: str = "all",
        length: int | None = DEFAULT_LENGTH,
        pooling: int = 2,
        aggregate: str = "max",
        autostart: bool = False,
        clip_reward: bool = False,
        seed: int = 0,
        terminal_on_last: bool = False,
    ) -> None:
        self.game = parse_game(game)
        self.task = f"atari:{self.game}"
        self.action_repeat = check_int("repeat", repeat, 1)
        if len(tuple(size)) != 2:
            raise ValueError(f"size must be (height, width), got {size!r}")
        self.size = tuple(check_int("size", s, 1) for s in size)
        self.gray = bool(gray)
        self.noops = check_int("noops", noops, 0)
        self.lives = _choice("lives", lives, LIVES)
        self.sticky = bool(sticky)
        self.actions = _choice("actions", actions, ACTIONS)
        self.length = None if length is None else check_int("length", length, 1, fix="or None")
        self.pooling = check_int("pooling", pooling, 1)
        self.aggregate = _choice("aggregate", aggregate, AGGREGATES)
        self.autostart = bool(autostart)
        self.clip_reward = bool(clip_reward)
        self.terminal_on_last = bool(terminal_on_last)
        self.seed = check_int("seed", seed, 0, 2**32)

        self._ale: Any = None
        self._load(self.seed)
        ale = self._ale
        actions = ale.getLegalActionSet() if self.actions == "all" else ale.getMinimalActionSet()
        self._actions = list(actions)
        self.act_dim, self.discrete = len(self._actions), True
        self._frames = np.zeros((self.pooling, *ale.getScreenDims(), 3), np.uint8)  # [P,210,160,3]
        self._slot = 0  # where the next emulated frame is kept (a ring over `pooling` slots)
        channels = 1 if self.gray else 3
        self.obs_spec: Spec = {"image": ((*self.size, channels), np.dtype(np.uint8))}
        self._needs_reset = True
        self._elapsed = 0  # emulator frames since the reset (no-ops not counted)
        self._prev_lives = 0

    @property
    def max_agent_steps(self) -> int | None:
        """Agent steps of an episode that reaches the cap: ceil(length / repeat)."""
        return None if self.length is None else math.ceil(self.length / self.action_repeat)

    @property
    def ale(self) -> Any:
        """The wrapped ``ale_py.ALEInterface``."""
        return self._ale

    def _load(self, seed: int) -> None:
        """Seed the Generator, draw ALE's seed from it and load the ROM with it and the sticky
        probability (ALE reads both settings in ``loadROM``, not later)."""
        ale_py = _ale_py()
        self._rng = np.random.default_rng(seed)
        if self._ale is None:
            self._ale = ale_py.ALEInterface()
            self._ale.setLoggerMode(ale_py.LoggerMode.Error)
        self._ale.setInt("random_seed", int(self._rng.integers(0, 2**31)))
        # Before loadROM: set after it, ALE keeps the probability it loaded with (0.25 by
        # default); the reference does that, so its sticky=False was sticky.
        self._ale.setFloat("repeat_action_probability", STICKY_PROBABILITY if self.sticky else 0.0)
        folder = os.environ.get("ALE_ROM_PATH")  # the reference's override of ale-py's ROMs
        path = (
            os.path.join(folder, f"{self.game}.bin")
            if folder
            else ale_py.roms.get_rom_path(self.game)
        )
        with _LOCK:
            self._ale.loadROM(path)

    def _act_alive(self, action: Any) -> None:
        """One start-up frame of ``action`` (a no-op or autostart press); a game that ends on it
        starts over, as in the reference."""
        self._ale.act(action)
        if self._ale.game_over():
            with _LOCK:
                self._ale.reset_game()

    def _keep_frame(self) -> None:
        """Copy the current screen into the next slot of the pool."""
        self._ale.getScreenRGB(self._frames[self._slot])
        self._slot = (self._slot + 1) % self.pooling

    def reset(self, seed: int | None = None) -> dict[str, Any]:
        """Start an episode (re-seeding ALE and the no-op draws with ``seed``, if given): the
        observation with reward 0 and is_first=True."""
        if self._ale is None:
            raise RuntimeError(f"{self.task}: reset() after close()")
        if seed is not None:
            self._load(check_int("seed", seed, 0, 2**32))
        with _LOCK:
            self._ale.reset_game()
        action = _ale_py().Action
        for _ in range(int(self._rng.integers(self.noops + 1))):
            self._act_alive(action.NOOP)
        if self.autostart and action.FIRE in self._actions:
            self._act_alive(action.FIRE)
            self._act_alive(action.UP)
        self._frames[:] = self._ale.getScreenRGB()  # every slot holds the reset frame (e3f0224)
        self._elapsed, self._prev_lives = 0, self._ale.lives()
        self._needs_reset = False
        return self._observe(0.0, is_first=True, is_last=False, is_terminal=False)

    def step(self, action: Any) -> dict[str, Any]:
        """Apply ``action`` (``[act_dim]``, one-hot or scores: its argmax is taken) for up to
        ``repeat`` frames; reward is their sum (sign of it with clip_reward)."""
        if self._needs_reset:
            raise RuntimeError(f"{self.task}: step() before reset() or after is_last")
        action = np.asarray(action, np.float64).ravel()
        if action.shape != (self.act_dim,) or not np.all(np.isfinite(action)):
            raise ValueError(
                f"{self.task}: action must be {self.act_dim} finite numbers (one-hot), got {action}"
            )
        act = self._actions[int(np.argmax(action))]
        reward, over, capped, life_lost = 0.0, False, False, False
        for k in range(self.action_repeat):
            reward += self._ale.act(act)
            self._elapsed += 1
            pooled = k >= self.action_repeat - self.pooling
            if pooled:
                self._keep_frame()
            over = self._ale.game_over()
            capped = self.length is not None and self._elapsed >= self.length
            lives = self._ale.lives()
            life_lost = 0 < lives < self._prev_lives
            self._prev_lives = lives
            if over or capped or (life_lost and self.lives != "unused"):
                if not pooled:  # *differs*: the last observation shows the end (module doc)
                    self._keep_frame()
                break
        terminal = over or (life_lost and self.lives != "unused")
        last = over or capped or (life_lost and self.lives == "reset")
        if self.terminal_on_last:
            terminal = last
        self._needs_reset = last
        return self._observe(reward, is_first=False, is_last=last, is_terminal=terminal)

    def _observe(self, score: float, **flags: bool) -> dict[str, Any]:
        """The step dict: the pooled frames ``[pooling, 210, 160, 3]`` -> ``image [H, W, C]``."""
        if self.aggregate == "max":
            image = self._frames.max(0)
        else:
            image = self._frames.mean(0).astype(np.uint8)
        image = resize(image, self.size)
        if self.gray:
            image = to_gray(image)
        reward = np.sign(score) if self.clip_reward else score
        out: dict[str, Any] = {"image": np.ascontiguousarray(image, np.uint8)}
        out.update(reward=np.float32(reward), log_score=np.float32(score))
        out.update({k: bool(v) for k, v in flags.items()})
        return out

    def render(self) -> np.ndarray:
        """The latest emulated frame in full colour, ``[210, 160, 3]`` uint8 (videos)."""
        if self._ale is None:
            raise RuntimeError(f"{self.task}: render() after close()")
        return self._ale.getScreenRGB()

    def close(self) -> None:
        self._ale = None
        self._needs_reset = True

    def __enter__(self) -> AtariEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
