"""What replay accepts as steps: the spec the first step fixes, and the checks of every later
one (keys, shapes, dtypes, the leading worker axis of a batch, the context beside it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from experiments.envs.contract import spec_bytes

StepSpec = dict[str, tuple[tuple[int, ...], np.dtype]]

# Bytes the replay keeps per stored step besides its data: the ring's insertion stamp (int64)
# and owner stream (int32), and the stream's row index (int64, in a buffer up to twice the
# stream's length: counted at its largest).
ROW_BOOKKEEPING = 8 + 4 + 2 * 8


def step_bytes(
    spec: Mapping[str, tuple[tuple[int, ...], Any]],
    context: Mapping[str, tuple[int, ...]] | None = None,
    context_dtype: Any = "float16",
) -> int:
    """Bytes replay holds per stored step (an upper estimate, exact but for the row index):

        sum_k prod(spec[k].shape) itemsize_k + sum_c prod(context[c]) itemsize(context_dtype)
        + ROW_BOOKKEEPING

    ``spec`` is a step's ``{key: (shape, dtype)}`` (observations, action, reward, flags);
    ``context`` the shapes of the per-step context values (the RSSM state), stored in
    ``context_dtype``. The run's pre-flight line, its memory check and ``Replay.nbytes``'s
    estimate all use this one sum."""
    size = np.dtype(context_dtype).itemsize
    ctx = sum(int(np.prod(s, dtype=np.int64)) * size for s in (context or {}).values())
    return spec_bytes(spec) + ctx + ROW_BOOKKEEPING


def normalized_spec(spec: Mapping[str, tuple[tuple[int, ...], Any]]) -> StepSpec:
    """``{key: (shape, dtype)}`` with int shapes and numpy dtypes; refuses an empty step, a key
    that is no string and a dtype that is not bool or numeric."""
    if not spec:
        raise ValueError("a step needs at least one key, got an empty dict")
    for key, (_, dtype) in spec.items():
        if not isinstance(key, str):
            raise TypeError(f"step keys must be str, got {key!r}")
        if np.dtype(dtype).kind not in "biufc":
            raise TypeError(
                f"step key {key!r} has dtype {dtype}; only bool and numeric arrays can be "
                "stored (convert strings or objects before adding)"
            )
    return {k: (tuple(int(d) for d in s), np.dtype(t)) for k, (s, t) in spec.items()}


def check_step(spec: StepSpec, values: Mapping[str, np.ndarray], lead: int) -> None:
    """``values`` has the spec's keys, each ``[*lead axes, *shape]`` of its dtype."""
    if values.keys() != spec.keys():
        missing = sorted(spec.keys() - values.keys())
        extra = sorted(values.keys() - spec.keys(), key=str)
        raise ValueError(
            f"step keys {sorted(values, key=str)} differ from the first step's "
            f"{list(spec)}: missing {missing}, unexpected {extra}"
        )
    prefix = "[N] + " if lead else ""
    for key, value in values.items():
        shape, dtype = spec[key]
        if tuple(value.shape[lead:]) != shape or value.dtype != dtype:
            raise ValueError(
                f"step key {key!r}: received shape {tuple(value.shape)} dtype {value.dtype}, "
                f"expected shape {prefix}{shape} dtype {dtype} (fixed by the first step); "
                f"convert with np.asarray(value, dtype=np.{dtype.name})"
            )


def workers_of(values: Mapping[str, np.ndarray]) -> int:
    """N, the leading (worker) axis every value of a batch of steps shares."""
    sizes = {}
    for key, value in values.items():
        if value.ndim < 1:
            raise ValueError(
                f"add_batch needs a leading worker axis: key {key!r} has shape "
                f"{value.shape}; stack the N workers' steps along axis 0 or use add()"
            )
        sizes[key] = value.shape[0]
    if len(set(sizes.values())) > 1:
        raise ValueError(f"add_batch values disagree on the number of workers N: {sizes}")
    return next(iter(sizes.values()), 0)


def check_context(
    context: Mapping[str, Any] | None, n: int, stored: list[str]
) -> dict[str, np.ndarray] | None:
    """The batch's per-step context as arrays ``[N, ...]`` with the stored keys (``stored``:
    the keys replay holds, [] before the first context); a replay that stores context needs it
    with every batch."""
    if context is None:
        if stored:
            raise ValueError(
                f"this replay stores context {stored} with every step; pass context= to add_batch"
            )
        return None
    context = {k: np.asarray(v) for k, v in context.items()}
    bad = {k: v.shape for k, v in context.items() if v.ndim < 1 or v.shape[0] != n}
    if bad:
        raise ValueError(f"context values need a leading axis of N={n}: got {bad}")
    if stored and sorted(context) != stored:
        raise ValueError(f"context keys {sorted(context)} differ from the stored {stored}")
    return context
