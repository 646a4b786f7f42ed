"""Learning curves read from a run's logs or a learning-benchmark result, and their
aggregation over seeds (``experiments.plot`` draws them).

A run directory holds ``metrics.jsonl`` (one JSON row per log call, the x axis in its ``step``
column: environment steps, agent steps x action repeat) and ``config.json``; a ``--run.seeds K``
run holds one ``seed<k>/metrics.jsonl`` per seed instead, beside the one ``config.json``. Each
metrics file is one seed (``Seed``), with one curve per metric of ``METRICS`` it logged.
``aggregate`` puts several seeds' curves on one grid of steps (linear interpolation) and returns
their mean and the mean ± their standard deviation (``Band``).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from experiments.run.logging import read_jsonl

__all__ = [
    "METRICS",
    "Band",
    "CurveError",
    "Seed",
    "aggregate",
    "curve",
    "cut",
    "read_logdir",
    "read_result",
]

# Metric name -> (its metrics.jsonl column, its axis label)
METRICS: dict[str, tuple[str, str]] = {
    "eval": ("eval/return", "evaluation return"),
    "train": ("episode/return", "training episode return"),
}
# The result JSON's field of each metric (benchmarks/learning.py).
RESULT_FIELDS = {"eval/return": "eval_return", "episode/return": "train_episode_return"}
MAX_POINTS = 250
_SEED_DIR = re.compile(r"seed(\d+)")


class CurveError(ValueError):
    """An input no curve can be read or drawn from; the message names it and the fix."""


@dataclasses.dataclass(frozen=True)
class Seed:
    """One seed of one run: its task, observation mode, line label, where it was read from,
    and per metric column its curve ``(steps, values)`` (steps ascending and distinct)."""

    task: str
    obs: str
    label: str
    source: str
    curves: dict[str, tuple[np.ndarray, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class Band:
    """Curves of several seeds on one grid: at each of ``steps`` their mean and the mean minus
    (``low``) and plus (``high``) their standard deviation; ``seeds`` curves went into it."""

    steps: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    seeds: int


def curve(steps: Iterable[float], values: Iterable[float]) -> tuple[np.ndarray, np.ndarray]:
    """Points as a curve: non-finite points dropped (a NaN return is no point of the curve),
    sorted by step, the values of points at one step averaged into one."""
    steps = np.asarray(list(steps), dtype=np.float64)
    values = np.asarray(list(values), dtype=np.float64)
    keep = np.isfinite(steps) & np.isfinite(values)
    unique, index = np.unique(steps[keep], return_inverse=True)
    sums = np.bincount(index, weights=values[keep], minlength=len(unique))
    return unique, sums / np.maximum(np.bincount(index, minlength=len(unique)), 1)


def aggregate(
    curves: Sequence[tuple[np.ndarray, np.ndarray]], max_points: int = MAX_POINTS
) -> Band:
    """Mean and spread of seeds' curves ``(steps, values)`` on one grid of steps.

    The grid covers only the steps every seed reached, from the latest first step to the
    earliest last step (nothing is extrapolated): it is the seeds' own steps in that range,
    merged, or ``max_points`` evenly spaced steps over it where they are more. Each seed is
    linearly interpolated onto the grid; at each step the band is the mean over seeds and the
    mean ± their standard deviation (population, ddof 0).
    """
    curves = [curve(s, v) for s, v in curves]
    if not curves or any(len(s) == 0 for s, _ in curves):
        raise CurveError("a curve without points cannot be aggregated")
    start, stop = max(s[0] for s, _ in curves), min(s[-1] for s, _ in curves)
    if start > stop:
        raise CurveError(
            f"the seeds share no steps: one starts at step {start:g}, after another ends at "
            f"{stop:g}"
        )
    grid = np.unique(np.concatenate([s[(s >= start) & (s <= stop)] for s, _ in curves]))
    if len(grid) > max_points:
        grid = np.linspace(start, stop, max_points)
    values = np.stack([np.interp(grid, s, v) for s, v in curves])
    mean, std = values.mean(axis=0), values.std(axis=0)
    return Band(grid, mean, mean - std, mean + std, len(curves))


def cut(band: Band, stop: float) -> Band | None:
    """The part of ``band`` up to step ``stop`` (interpolated at ``stop`` where the band goes
    on past it), or None where the band starts after ``stop``."""
    if band.steps[0] > stop:
        return None
    keep = band.steps < stop
    arrays = [band.steps[keep], band.mean[keep], band.low[keep], band.high[keep]]
    if band.steps[-1] >= stop:
        ends = [stop] + [np.interp(stop, band.steps, a) for a in (band.mean, band.low, band.high)]
        arrays = [np.append(a, end) for a, end in zip(arrays, ends, strict=True)]
    return Band(*arrays, band.seeds)


def _row_curves(rows: Sequence[dict]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The curve of each metric of ``METRICS`` found in ``metrics.jsonl`` rows."""
    curves = {}
    for key, _ in METRICS.values():
        points = [(row["step"], row[key]) for row in rows if key in row and "step" in row]
        steps, values = curve([p[0] for p in points], [p[1] for p in points])
        if len(steps):
            curves[key] = (steps, values)
    return curves


def _metric_files(logdir: Path) -> list[Path]:
    """``metrics.jsonl`` of a run, or each ``seed<k>/metrics.jsonl`` of a many-seed run."""
    single = logdir / "metrics.jsonl"
    if single.is_file():
        return [single]
    per_seed = [p for p in logdir.glob("seed*/metrics.jsonl") if _SEED_DIR.fullmatch(p.parent.name)]
    if not per_seed:
        raise CurveError(
            f"{logdir} holds no metrics.jsonl (nor seed<k>/metrics.jsonl, as a --run.seeds K "
            "run writes): pass the logdir of a run of experiments.train"
        )
    return sorted(per_seed, key=lambda p: int(p.parent.name[len("seed") :]))


def _read_config(logdir: Path) -> dict[str, Any]:
    """A run's ``config.json`` (a ``seed<k>/`` folder's is its parent's)."""
    path = logdir / "config.json"
    if not path.is_file() and _SEED_DIR.fullmatch(logdir.name):
        path = logdir.parent / "config.json"
    if not path.is_file():
        raise CurveError(
            f"{logdir} holds no config.json, which names the run's task and observations: "
            "pass the logdir of a run of experiments.train"
        )
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
        return {"task": cfg["env"]["task"], "obs": cfg["env"]["obs"], "agent": cfg["agent"]}
    except (json.JSONDecodeError, KeyError, TypeError):
        raise CurveError(
            f"{path} is not a run's config (JSON with env.task, env.obs and agent)"
        ) from None


def read_logdir(logdir: str | Path) -> list[Seed]:
    """The seeds of one run directory: one, or K for a ``--run.seeds K`` run."""
    logdir = Path(logdir)
    if not logdir.is_dir():
        raise CurveError(f"{logdir}: no such directory; pass a run's logdir")
    files = _metric_files(logdir)
    cfg = _read_config(logdir)
    seeds = []
    for file in files:
        try:
            rows = read_jsonl(file)
        except ValueError as err:
            raise CurveError(str(err)) from None
        seeds.append(Seed(cfg["task"], cfg["obs"], cfg["agent"], str(file), _row_curves(rows)))
    return seeds


def _result_obs(data: dict[str, Any], path: Path) -> str:
    """A learning result's observation mode: its override of ``env.obs`` (``--obs pixels``,
    ``env.obs=pixels``), else its preset's."""
    overrides = [str(item) for item in data.get("overrides", [])]
    for i, item in enumerate(overrides):
        name, eq, value = item.lstrip("-").partition("=")
        if name in ("obs", "env.obs"):
            if eq:
                return value
            if i + 1 < len(overrides):
                return overrides[i + 1]
    from experiments.config.presets import RENAMED, compose  # imports JAX: only when needed

    names = [RENAMED.get(n.strip(), n.strip()) for n in str(data.get("preset", "")).split(",")]
    try:
        return compose(",".join(names)).env.obs
    except ValueError as err:
        raise CurveError(f"{path}: its preset gives no observation mode ({err})") from None


def read_result(path: str | Path) -> Seed:
    """One seed from the JSON that ``benchmarks/learning.py`` prints, labelled 'agent (preset)'."""
    path = Path(path)
    if not path.is_file():
        raise CurveError(f"{path}: no such file; pass a result of benchmarks/learning.py")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CurveError(f"{path} is not JSON ({err.msg})") from None
    if not isinstance(data, dict) or data.get("benchmark") != "learning":
        raise CurveError(
            f"{path} is not a learning curve (the JSON of benchmarks/learning.py has "
            "'benchmark': 'learning')"
        )
    if not all(isinstance(data.get(field), str) for field in ("task", "agent")):
        raise CurveError(f"{path} names no task or agent: not a result of benchmarks/learning.py")
    curves = {}
    for key, field in RESULT_FIELDS.items():
        points = data.get(field) or []
        steps, values = curve([p["env_steps"] for p in points], [p["return"] for p in points])
        if len(steps):
            curves[key] = (steps, values)
    preset = data.get("preset")
    label = f"{data['agent']} ({preset})" if preset else data["agent"]
    return Seed(data["task"], _result_obs(data, path), label, str(path), curves)
