"""Checks of hyperparameters that may arrive as Python numbers or as traced arrays."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def is_concrete(x: Any) -> bool:
    """Whether ``x`` has a value at trace time (not a ``jax.core.Tracer``)."""
    return not isinstance(x, jax.core.Tracer)


def check_unit(name: str, value: Any) -> None:
    """Rejects a Python (untraced) hyperparameter outside [0, 1]."""
    if is_concrete(value) and jnp.ndim(value) == 0 and not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value}")
