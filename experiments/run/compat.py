"""What a checkpoint may be resumed or evaluated under: the config it was written with (a
difference outside the resumable fields is refused, naming the fields) and the layout of its
agent state (earlier layouts restore where they can)."""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import os
from collections.abc import Collection, Mapping
from typing import Any

from agents.contract import STATE_LAYOUT
from experiments.run.checkpoint import Checkpointer


class ConfigMismatch(ValueError):
    """The logdir holds a checkpoint written under a different config or code."""


# Earlier agent-state layouts this code restores: layout -> the fields it had beyond this
# layout's, each None in every state this code can use (agents/contract.py).
LEGACY_FIELDS = {2: ("train_carry",)}


def check_layout(meta: dict, logdir: str | os.PathLike) -> int:
    """The layout of a run's checkpointed agent state (``meta['state_layout']``,
    agents/contract.py); refuses one this code cannot restore."""
    layout = meta.get("state_layout", 1)
    if layout != STATE_LAYOUT and layout not in LEGACY_FIELDS:
        when = (
            "a newer rssm-jax"
            if layout > STATE_LAYOUT
            else "an earlier rssm-jax, before every agent shared AgentState (git commit 0bdb01e "
            "or earlier)"
        )
        raise ConfigMismatch(
            f"{logdir}: the checkpoint holds an agent state of layout {layout}, written by "
            f"{when}; this code reads layouts {sorted({STATE_LAYOUT, *LEGACY_FIELDS})}. Resume "
            "or evaluate it with the rssm-jax that wrote it, or start a new logdir."
        )
    return layout


def restore_state(ckpt: Checkpointer, abstract: Any, step: int | None, layout: int):
    """``ckpt.restore(abstract, step)`` for an agent state saved in ``layout`` (as
    ``check_layout`` returned it): an earlier layout's extra fields are restored (as None) and
    left out of the state returned."""
    extra = LEGACY_FIELDS.get(layout, ())
    if not extra:
        return ckpt.restore(abstract, step)
    fields = {f.name: getattr(abstract, f.name) for f in dataclasses.fields(abstract)}
    restored, meta = ckpt.restore({**fields, **dict.fromkeys(extra)}, step)
    return type(abstract)(**{k: restored[k] for k in fields}), meta


class _Missing:
    """Marks a config field that exists on one side of a comparison only."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()


def _normalize(value: Any) -> Any:
    # A JSON round trip turns tuples into lists; both spell the same config value.
    if isinstance(value, tuple | list):
        return [_normalize(v) for v in value]
    return value


def _equal(a: Any, b: Any) -> bool:
    a, b = _normalize(a), _normalize(b)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, bool) or isinstance(b, bool):
        # True == 1 in Python, but a flag turned into a number is a changed config.
        return type(a) is type(b) and a == b
    return a == b


def config_diff(saved: dict, current: dict, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """Fields whose values differ between two nested config dicts.

    Returns ``[(dotted_name, saved_value, current_value), ...]`` sorted by name; nested dicts are
    walked (``model.rssm.deter``), a field present on one side only has ``MISSING`` on the other,
    and tuples equal lists with the same items (JSON stores tuples as lists).
    """
    diffs: list[tuple[str, Any, Any]] = []
    for key in sorted(set(saved) | set(current), key=str):
        name = f"{prefix}{key}"
        a = saved.get(key, MISSING)
        b = current.get(key, MISSING)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            diffs.extend(config_diff(dict(a), dict(b), prefix=f"{name}."))
        elif a is MISSING or b is MISSING or not _equal(a, b):
            diffs.append((name, a, b))
    return diffs


def _ignored(name: str, patterns: Collection[str]) -> bool:
    return any(
        name == p or name.startswith(p.rstrip(".") + ".") or fnmatch.fnmatchcase(name, p)
        for p in patterns
    )


def check_config(saved: dict, current: dict, ignore: Collection[str] = ()) -> None:
    """Raises ValueError naming every field that differs between a checkpoint's config and now.

    Args:
      saved: the config stored with the checkpoint.
      current: the config of the run that wants to resume.
      ignore: dotted fields allowed to change on resume: an exact name (``run.steps``), a prefix
        covering a whole section (``logging``), or a glob (``logging.*``).
    """
    if isinstance(ignore, str):
        raise TypeError(f"ignore must be a collection of field names, got the string {ignore!r}")
    diffs = [d for d in config_diff(saved, current) if not _ignored(d[0], ignore)]
    if not diffs:
        return
    lines = [f"  {name}: saved {a!r}, current {b!r}" for name, a, b in diffs]
    raise ValueError(
        f"the checkpoint was written with a different config ({len(diffs)} field(s) differ):\n"
        + "\n".join(lines)
        + "\nResume with the same config (drop these overrides), or start a new run in a new "
        "logdir."
    )
