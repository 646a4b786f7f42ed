"""Test-wide settings: headless rendering, offline wandb, and a persistent XLA cache.

Compilation dominates the suite's time on CPU: programs are compiled at LLVM -O0, and the
persistent cache makes a second run (and every process a test spawns) reuse compiled programs.
"""

import os

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

# Compilation, not execution, dominates the suite (tiny models, big programs): LLVM's -O0
# compiles about 40% faster and changes no result a test checks. Spawned runners inherit it.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
    ).strip()

import jax

_CACHE = os.environ.get(
    "RSSM_JAX_CACHE", os.path.join(os.path.dirname(os.path.dirname(__file__)), ".jax_cache")
)
# The commands a test runs in this process (train.main) keep to the same cache.
os.environ["RSSM_JAX_CACHE"] = _CACHE
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.fixture(scope="session")
def cartpole_limits() -> dict[str, str]:
    """Gymnasium CartPole registered with a 1600-step limit and with none, as tasks:
    {'long': 'gym:CartPoleLong-v1', 'endless': 'gym:CartPoleEndless-v1'}."""
    import gymnasium

    entry = "gymnasium.envs.classic_control.cartpole:CartPoleEnv"
    for env_id, limit in (("CartPoleLong-v1", 1600), ("CartPoleEndless-v1", None)):
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point=entry, max_episode_steps=limit)
    return {"long": "gym:CartPoleLong-v1", "endless": "gym:CartPoleEndless-v1"}
