"""Test-wide settings: headless rendering, offline wandb, and a persistent XLA cache.

Compilation dominates the suite's time on CPU; the persistent cache makes a second run (and
every process a test spawns) reuse compiled programs.
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

import jax

_CACHE = os.environ.get(
    "RSSM_JAX_CACHE", os.path.join(os.path.dirname(os.path.dirname(__file__)), ".jax_cache")
)
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
