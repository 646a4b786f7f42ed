"""Random-agent and human reference scores of the Atari 100k games, and human-normalized scores.

human_normalized(game, score) = (score - random) / (human - random): 0 plays like a uniformly
random policy, 1 like the professional human game tester.

Source: the random-agent and human (professional game tester) scores of the DQN evaluations,
Mnih et al. 2015 (Nature, Extended Data Table 2), as later tables give them: Wang et al. 2016
(Dueling DQN) and Badia et al. 2020 (Agent57, whose appendix lists all 57 games); the Nature
table differs in places by rounding (Kung-Fu Master's human 22736.2 for 22736.3). The Atari
100k literature normalizes with these: Kaiser et al. 2019 (SimPLe), Hafner et al. 2023
(DreamerV3). Checked value by value against public tables: google-research/reincarnating_rl
(``reincarnating_rl/atari_scores.py``, random scores), an Atari 100k script of opendilab's
LightZero (random and human) and a 57-game table keyed by ``ALE/<Game>-v5`` ids.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from experiments.envs.atari import GAME_ALIASES

# game (ale-py ROM id) -> (random, human), the games of atari.ATARI100K_GAMES in its order
SCORES: dict[str, tuple[float, float]] = {
    "alien": (227.8, 7127.7),
    "amidar": (5.8, 1719.5),
    "assault": (222.4, 742.0),
    "asterix": (210.0, 8503.3),
    "bank_heist": (14.2, 753.1),
    "battle_zone": (2360.0, 37187.5),
    "boxing": (0.1, 12.1),
    "breakout": (1.7, 30.5),
    "chopper_command": (811.0, 7387.8),
    "crazy_climber": (10780.5, 35829.4),
    "demon_attack": (152.1, 1971.0),
    "freeway": (0.0, 29.6),
    "frostbite": (65.2, 4334.7),
    "gopher": (257.6, 2412.5),
    "hero": (1027.0, 30826.4),
    "jamesbond": (29.0, 302.8),
    "kangaroo": (52.0, 3035.0),
    "krull": (1598.0, 2665.5),
    "kung_fu_master": (258.5, 22736.3),
    "ms_pacman": (307.3, 6951.6),
    "pong": (-20.7, 14.6),
    "private_eye": (24.9, 69571.3),
    "qbert": (163.9, 13455.0),
    "road_runner": (11.5, 7845.0),
    "seaquest": (68.4, 42054.7),
    "up_n_down": (533.4, 11693.2),
}


def _scores(game: str) -> tuple[float, float]:
    """(random, human) of ``game`` (aliases such as 'james_bond' resolved)."""
    name = GAME_ALIASES.get(game, game)
    if name not in SCORES:
        raise ValueError(
            f"no reference scores for Atari game {game!r}; they exist for the Atari 100k games: "
            f"{', '.join(SCORES)}"
        )
    return SCORES[name]


def human_normalized(game: str, score: float) -> float:
    """(score - random) / (human - random) of ``game``."""
    random, human = _scores(game)
    return (float(score) - random) / (human - random)


def normalized_summary(scores: Mapping[str, float]) -> dict[str, float]:
    """Mean and median over games of the human-normalized scores of ``{game: score}``
    (the Atari 100k benchmark's two aggregates): ``{'mean': ..., 'median': ..., 'games': n}``."""
    if not scores:
        raise ValueError("normalized_summary needs the scores of at least one game, got none")
    values = np.array([human_normalized(g, s) for g, s in scores.items()])
    return {"mean": float(values.mean()), "median": float(np.median(values)), "games": len(values)}
