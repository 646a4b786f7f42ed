"""Training metrics between logs: summed on the device, averaged once per log interval."""

from __future__ import annotations

import hashlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


class NonFiniteLoss(FloatingPointError):
    """A loss went NaN or infinite: ``args = (updates, metrics)``."""

    def explained(self, last_checkpoint: int | None, topo: Any) -> FloatingPointError:
        """The error the user sees: the metrics, what is kept and what to do."""
        updates, metrics = self.args
        values = {k: np.asarray(v).tolist() for k, v in topo.to_host(metrics).items()}
        return FloatingPointError(
            f"non-finite loss at update {updates} ({values}). Training stopped; the last "
            f"checkpoint (env step {last_checkpoint}) is kept unchanged. Lower opt.lr, check "
            "the observations for NaN/inf, or resume from it with a changed config in a new "
            "logdir."
        )


@jax.jit
def add(a: Any, b: Any) -> Any:
    """Elementwise sum of two metric dicts (the log interval's running sum)."""
    return jax.tree.map(jnp.add, a, b)


def total_loss(metrics: dict) -> Any:
    """Sum of every loss term: non-finite iff one of them is."""
    return sum(v for k, v in metrics.items() if k.endswith("loss"))


def finite(metrics: dict, topo: Any) -> bool:
    """Whether the total loss (one per seed with many seeds) is finite everywhere."""
    return bool(np.all(np.isfinite(topo.to_host(total_loss(metrics)))))


class MetricMeans:
    """The mean of each metric over the updates since the last ``pop``.

    ``add`` sums on the device (one small dispatch, no transfer per update); ``pop`` moves the
    sums to the host once and divides by the count: ``mean_k = (1/n) sum_{i<n} m_k^(i)``, one
    value per metric, or one per seed ``[K]`` with many seeds.
    """

    def __init__(self, topo: Any, seeds: int = 1):
        self.topo, self.seeds = topo, seeds
        self.sums: dict | None = None
        self.count = 0

    def add(self, metrics: dict) -> None:
        self.sums = metrics if self.sums is None else add(self.sums, metrics)
        self.count += 1

    def pop(self, updates: int) -> dict[str, Any]:
        """The means (empty without an update since the last pop); raises NonFiniteLoss if
        their total loss is not finite (``updates`` names the update count in that error)."""
        sums, count = self.sums, max(self.count, 1)
        self.sums, self.count = None, 0
        if sums is None:
            return {}
        host = self.topo.to_host(sums)
        means = {
            k: float(v) / count if self.seeds == 1 else np.asarray(v, np.float64) / count
            for k, v in host.items()
        }
        if not np.all(np.isfinite(total_loss(means))):
            raise NonFiniteLoss(updates, sums)
        return means

    def state(self) -> dict[str, Any]:
        """The sums and count as JSON (one transfer): a checkpoint keeps a log interval's
        partial sums, so a resumed run logs the same means as an uninterrupted one."""
        sums = {} if self.sums is None else self.topo.to_host(self.sums)
        return {
            "count": self.count,
            "sums": {k: [np.asarray(v).dtype.str, np.asarray(v).tolist()] for k, v in sums.items()},
        }

    def load(self, state: dict[str, Any] | None) -> None:
        """Restores ``state()``'s sums (exactly: float32 values survive JSON unchanged)."""
        if not state or not state["sums"]:
            return
        self.count = int(state["count"])
        self.sums = {
            k: jnp.asarray(np.asarray(v, np.dtype(d))) for k, (d, v) in state["sums"].items()
        }


def params_digest(state: Any) -> str:
    """SHA-256 of the parameters' bytes (this process's replica): equal digests, equal
    parameters, bit for bit."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(jax.device_get(state.params)):
        h.update(np.ascontiguousarray(leaf).tobytes())
    return h.hexdigest()
