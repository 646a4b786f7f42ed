"""Device and software description shared by the benchmark scripts' JSON output."""

from __future__ import annotations

import os
import platform
from importlib.metadata import version
from pathlib import Path
from typing import Any

import jax


def device_info() -> dict[str, Any]:
    """Backend, accelerator kind and count, library versions, CPU and XLA flags."""
    dev = jax.devices()[0]
    return {
        "backend": jax.default_backend(),
        "device_kind": dev.device_kind,
        "device_count": jax.device_count(),
        **{name: version(name) for name in ("jax", "jaxlib", "flax", "optax", "numpy")},
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _cpu_model(),
        "xla_flags": os.environ.get("XLA_FLAGS"),
    }


def _cpu_model() -> str | None:
    """The CPU's model name (shared machines of one kind differ: figures name theirs)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    models = [line.split(":", 1)[1].strip() for line in text.splitlines() if "model name" in line]
    return models[0] if models else None
