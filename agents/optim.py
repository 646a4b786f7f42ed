"""Optimizers: DreamerV3's (2024 release) and Adam with global-norm clipping (2023 paper).

'dreamerv3' (the 2024 release's one optimizer over every module), per parameter tensor p with
gradient g, step n = 1, 2, ...:

    g <- g / max(1, ||g|| / (agc * max(1e-3, ||p||)))       adaptive gradient clipping
    v <- beta2 v + (1 - beta2) g^2;   u = g / (sqrt(v / (1 - beta2^n)) + eps)   RMS scaling
    m <- beta1 m + (1 - beta1) u;     u = m / (1 - beta1^n)                     momentum
    p <- p - lr_n u,   lr_n = lr * min(1, (n - 1) / warmup)                     warmup

Momentum after the RMS normalization (LaProp) rather than before it (Adam). Every operation is
per tensor or per element, so one chain over all modules equals one chain per module.

'adam' (the 2023 paper): clip the global norm of the module's gradient to ``clip``, then Adam.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

KINDS = ("dreamerv3", "adam")
MODULES = ("wm", "actor", "critic")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Optimizer hyperparameters; defaults are the DreamerV3 2024 release's."""

    kind: str = "dreamerv3"  # 'dreamerv3' (AGC + RMS scaling + momentum) or 'adam' (2023)
    lr: float = 4e-5  # world-model learning rate
    actor_lr: float = 4e-5  # actor learning rate
    critic_lr: float = 4e-5  # critic learning rate
    eps: float = 1e-20  # world-model epsilon (RMS scaling or Adam)
    ac_eps: float = 1e-20  # actor and critic epsilon
    beta1: float = 0.9  # momentum (Adam's first-moment) decay
    beta2: float = 0.999  # RMS (Adam's second-moment) decay
    agc: float = 0.3  # 'dreamerv3': clip each gradient tensor to agc x its parameter norm
    clip: float = 1000.0  # 'adam': global gradient-norm clip of the world model (0: none)
    ac_clip: float = 100.0  # 'adam': global gradient-norm clip of actor and critic (0: none)
    warmup: int = 1000  # updates of linear learning-rate warmup from 0 (0: none)

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"opt.kind={self.kind!r}; expected one of {KINDS}")
        for name in ("lr", "actor_lr", "critic_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"opt.{name}={getattr(self, name)}; must be positive")
        for name in ("eps", "ac_eps", "agc", "clip", "ac_clip", "warmup"):
            if getattr(self, name) < 0:
                raise ValueError(f"opt.{name}={getattr(self, name)}; must be >= 0")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"opt.{name}={getattr(self, name)}; must lie in [0, 1)")


def clip_by_agc(clip: float = 0.3, pmin: float = 1e-3) -> optax.GradientTransformation:
    """Per-tensor adaptive clipping: g * 1 / max(1, ||g|| / (clip * max(pmin, ||p||)))."""

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("clip_by_agc needs the parameters: call update(grads, state, params)")

        def one(g, p):
            upper = clip * jnp.maximum(pmin, jnp.linalg.norm(p.ravel()))
            return g / jnp.maximum(1.0, jnp.linalg.norm(g.ravel()) / upper)

        return jax.tree.map(one, updates, params), state

    return optax.GradientTransformation(init_fn, update_fn)


def warmup_schedule(lr: float, warmup: int) -> optax.Schedule:
    """lr * min(1, k / warmup) for the update with optax count k = 0, 1, ... (so the first
    update moves nothing, as in DreamerV3's linear ramp from 0)."""
    if not warmup:
        return optax.constant_schedule(lr)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup]
    )


def make(cfg: OptimConfig, module: str) -> optax.GradientTransformation:
    """The optimizer of one module: 'wm', 'actor' or 'critic'."""
    cfg.validate()
    if module not in MODULES:
        raise ValueError(f"module={module!r}; expected one of {MODULES}")
    lr = {"wm": cfg.lr, "actor": cfg.actor_lr, "critic": cfg.critic_lr}[module]
    eps = cfg.eps if module == "wm" else cfg.ac_eps
    schedule = warmup_schedule(lr, cfg.warmup)
    if cfg.kind == "dreamerv3":
        chain = [clip_by_agc(cfg.agc)] if cfg.agc else []
        chain += [
            optax.scale_by_rms(cfg.beta2, eps, eps_in_sqrt=False, bias_correction=True),
            optax.ema(cfg.beta1, debias=True),
        ]
    else:
        clip = cfg.clip if module == "wm" else cfg.ac_clip
        chain = [optax.clip_by_global_norm(clip)] if clip else []
        chain.append(optax.scale_by_adam(cfg.beta1, cfg.beta2, eps))
    chain.append(optax.scale_by_learning_rate(schedule))
    return optax.chain(*chain)


def step(
    opts: Mapping[str, optax.GradientTransformation],
    grads: Mapping[str, Any],
    opt_state: Mapping[str, Any],
    params: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One optimizer step of every module that has a gradient in ``grads``, each with its own
    optimizer ``opts[name]``: p <- p + update(g, state, p). Returns (new params, new optimizer
    states) of those modules, in the order of ``opts``."""
    new_params, new_opt = {}, {}
    with jax.named_scope("optimizer"):
        for name in (n for n in opts if n in grads):
            updates, new_opt[name] = opts[name].update(grads[name], opt_state[name], params[name])
            new_params[name] = optax.apply_updates(params[name], updates)
    return new_params, new_opt
