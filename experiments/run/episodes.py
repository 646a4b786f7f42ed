"""Per-episode task metrics from the ``log_<name>`` keys of the environments' step dicts.

An environment may add float scalars ``log_<name>`` to its step dicts (the Atari wrapper's
``log_score``, the unclipped return; Crafter's ``log_reward`` and ``log_achievement_<name>``).
They are no observations: ``without_logs`` keeps them out of replay and the policy's inputs.
``EpisodeLogs`` sums each over every environment's episode and, when episodes end, gives the
fields of the runner's episode row:

- ``episode/<name>``: the mean over the ended episodes of sum_t log_<name>_t;
- ``achievements/<name>`` for each ``log_achievement_<name>``: the success rate in percent,
  100 x (episodes with sum_t log_achievement_<name>_t >= 1) / episodes, over every episode of
  that seed since the run began (its counts live in the runner's checkpointed counters, so a
  resumed run goes on with them);
- ``achievements/crafter_score``: the Crafter score of those rates (``crafter_score``).

An environment without log keys adds no field and changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

LOG_PREFIX = "log_"
# Log keys whose fields the episode row already has (its return, length and count).
RESERVED = ("log_return", "log_length", "log_count")
ACHIEVEMENT_PREFIX = "log_achievement_"
# The counters' key of the achievement counts: one dict per seed, {"episodes": int,
# "unlocked": {name: episodes in which it was unlocked}}; JSON, saved with every checkpoint.
COUNTS_KEY = "achievements"


def is_log_key(key: str) -> bool:
    return key.startswith(LOG_PREFIX)


def without_logs(obs: Mapping[str, Any]) -> dict[str, Any]:
    """``obs`` without its ``log_*`` keys (what replay and the policy may see)."""
    return {k: v for k, v in obs.items() if not is_log_key(k)}


def crafter_score(rates: Any) -> float:
    """The Crafter score of success rates ``s_i`` in percent, ``[A]``: the geometric mean
    offset by one, exp(1/A sum_i ln(1 + s_i)) - 1, in [0, 100].

    Hafner, "Benchmarking the Spectrum of Agent Capabilities" (ICLR 2022), the benchmark's
    evaluation protocol, S = exp(1/N sum_i ln(1 + s_i)) - 1 over the N = 22 achievements;
    computed as in danijar/crafter ``analysis/common.py`` ``compute_scores`` (success rates
    from ``compute_success_rates``: 100 x mean over episodes of [count >= 1]):
    ``np.exp(np.nanmean(np.log(1 + percents), -1)) - 1``. E.g. rates [100, 0] give
    sqrt(101 x 1) - 1.
    """
    s = np.asarray(rates, np.float64)
    if s.ndim != 1 or not len(s):
        raise ValueError(f"crafter_score takes a non-empty vector of rates, got shape {s.shape}")
    if np.any((s < 0) | (s > 100)):
        raise ValueError(f"success rates must be percentages in [0, 100], got {s.tolist()}")
    return float(np.exp(np.mean(np.log1p(s))) - 1.0)


class EpisodeLogs:
    """The ``log_*`` sums of ``num_envs`` environments (seed-major: environment i belongs to
    seed i // (num_envs / seeds)) and each seed's achievement counts.

    Args:
      num_envs: N, the environments stepped together.
      seeds: K, the agents the environments are split between (N / K each).
      counters: the runner's checkpointed counters; the counts live under ``COUNTS_KEY`` once
        an achievement key has been seen (a restored dict goes on counting).
    """

    def __init__(self, num_envs: int, seeds: int, counters: dict[str, Any]) -> None:
        if num_envs % seeds:
            raise ValueError(f"{num_envs} environments do not split between {seeds} seeds")
        self.num_envs, self.seeds, self.counters = num_envs, seeds, counters
        self.sums: dict[str, np.ndarray] = {}  # log key -> [N] float64, this episode's sum

    def add(self, obs: Mapping[str, Any]) -> None:
        """Adds step ``obs`` (``[N]`` per key) to the sums; an environment whose step is a
        reset (``is_first``) starts its sums at 0, as its return does."""
        keys = [k for k in obs if is_log_key(k)]
        if not keys:
            return
        first = np.asarray(obs["is_first"], bool)
        for k in keys:
            total = self.sums.get(k)
            if total is None:
                if k in RESERVED:
                    raise ValueError(
                        f"the env's log key {k!r} would replace the runner's own "
                        f"episode/{k[len(LOG_PREFIX) :]}; rename it (not one of {RESERVED})"
                    )
                total = self.sums[k] = np.zeros(self.num_envs)
            total += np.asarray(obs[k], np.float64).reshape(self.num_envs)
            total[first] = 0.0

    def clear(self) -> None:
        """Every episode ends uncounted (the runner's cut before an exact-resume checkpoint)."""
        for total in self.sums.values():
            total[:] = 0.0

    def fields(self, ended: np.ndarray, seed: int = 0) -> dict[str, float]:
        """The row fields of episodes ``ended`` (indices into N, all of ``seed``), which just
        ended with their sums complete; counts them into the seed's achievement counts."""
        ended = np.asarray(ended, np.int64)
        if not len(ended) or not self.sums:
            return {}
        row: dict[str, float] = {}
        unlocked: dict[str, int] = {}
        for k, total in self.sums.items():
            if k.startswith(ACHIEVEMENT_PREFIX):
                unlocked[k[len(ACHIEVEMENT_PREFIX) :]] = int(np.sum(total[ended] >= 1.0))
            else:
                row[f"episode/{k[len(LOG_PREFIX) :]}"] = float(np.mean(total[ended]))
        if unlocked:
            row.update(self._count(unlocked, len(ended), seed))
        return row

    def _count(self, unlocked: dict[str, int], episodes: int, seed: int) -> dict[str, float]:
        """Adds ``episodes`` episodes, of which ``unlocked[name]`` unlocked each achievement,
        to the seed's counts; returns the success rates (percent) and the Crafter score."""
        fresh = [{"episodes": 0, "unlocked": {}} for _ in range(self.seeds)]
        counts = self.counters.setdefault(COUNTS_KEY, fresh)[seed]
        counts["episodes"] += episodes
        for name, n in unlocked.items():
            counts["unlocked"][name] = counts["unlocked"].get(name, 0) + n
        rates = {
            name: 100.0 * n / counts["episodes"] for name, n in sorted(counts["unlocked"].items())
        }
        row = {f"achievements/{name}": rate for name, rate in rates.items()}
        row["achievements/crafter_score"] = crafter_score(list(rates.values()))
        return row
