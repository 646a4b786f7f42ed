"""DreamerV3's published learning curves, to draw next to a run's (``experiments.plot``).

The data files beside this module are unchanged copies from danijar/dreamerv3 (commit f8817c4,
folder ``scores/``; MIT license, Copyright (c) 2023 Danijar Hafner: ``NOTICE.md`` here). Each
is a gzip-compressed JSON list of runs ``{"task", "method", "seed", "xs", "ys"}``, one per seed.

Task names map as follows:

- dm-control ``'domain-task'`` (``'walker-walk'``, ``'ball_in_cup-catch'``, the alias
  ``'cup-catch'``) -> ``'dmc_domain_task'``, from ``dmc_proprio-dreamerv3`` for
  ``obs='proprio'`` and ``dmc_vision-dreamerv3`` for ``obs='pixels'``. Their ``xs`` are
  environment (physics) steps, the unit of this runner's ``step`` column (agent steps x action
  repeat), so the two curves share their x axis whatever action repeat either used.
- ``'atari:<game>'`` -> ``'atari_<game>'`` from ``atari100k-dreamerv3`` (``'atari:pong'``,
  ``'atari:ms_pacman'``; a CamelCase game such as ``'MsPacman'`` becomes ``'ms_pacman'``). Its
  ``xs`` are emulator frames (4 per agent step, 400k frames = 100k agent steps): the same unit
  as an Atari run's env steps with its action repeat (frame skip) of 4 counted.

Any other task (Gymnasium's ``'gym:<id>'``, a dm-control task the paper did not run) has no
reference.
"""

from __future__ import annotations

import functools
import gzip
import json
import re
from importlib import resources

import numpy as np

from experiments.envs.dmc import TASK_ALIASES

__all__ = ["FILES", "SOURCE", "load_reference", "reference_name"]

SOURCE = "DreamerV3 (danijar/dreamerv3 f8817c4)"
# Which file holds the curves of a kind of task ('atari' for every Atari game).
FILES = {
    "proprio": "dmc_proprio-dreamerv3.json.gz",
    "pixels": "dmc_vision-dreamerv3.json.gz",
    "atari": "atari100k-dreamerv3.json.gz",
}
ATARI_PREFIX = "atari:"


def reference_name(task: str, obs: str) -> tuple[str, str] | None:
    """(the data file, the task's name in it) for one of this runner's tasks and observation
    modes, or None where the paper has no such curve file (see the module doc for the map)."""
    if task.startswith(ATARI_PREFIX):
        game = task[len(ATARI_PREFIX) :]
        # 'MsPacman' -> 'Ms_Pacman' -> 'ms_pacman'; 'up-n-down' -> 'up_n_down'.
        game = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", game).lower().replace("-", "_")
        return FILES["atari"], f"atari_{game}"
    if ":" in task or obs not in ("proprio", "pixels"):
        return None
    domain, sep, name = task.partition("-")
    if task in TASK_ALIASES:
        domain, name = TASK_ALIASES[task]
    elif not sep:
        return None
    return FILES[obs], f"dmc_{domain}_{name}"


@functools.cache
def _runs(file: str) -> tuple[dict, ...]:
    """Every run of one data file, read once per process."""
    data = resources.files(__package__).joinpath(file).read_bytes()
    return tuple(json.loads(gzip.decompress(data)))


def load_reference(task: str, obs: str) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """DreamerV3's published curves of ``task`` with ``obs`` observations: one ``(xs, ys)``
    pair of float64 arrays per seed, in the order of the seeds, xs ascending; None where the
    paper has no curve of that task."""
    name = reference_name(task, obs)
    if name is None:
        return None
    file, ref_task = name
    runs = sorted((r for r in _runs(file) if r["task"] == ref_task), key=lambda r: r["seed"])
    if not runs:
        return None
    curves = []
    for run in runs:
        xs = np.asarray(run["xs"], dtype=np.float64)
        ys = np.asarray(run["ys"], dtype=np.float64)
        order = np.argsort(xs, kind="stable")
        curves.append((xs[order], ys[order]))
    return curves
