"""Latent families for the stochastic state s_t, behind one interface.

A family turns the raw output of a linear layer into *statistics* (a dict of arrays), and from
statistics gives a distrax distribution, a differentiable sample, the mode, the entropy and the
closed-form KL to another member of the same family. The RSSM never looks inside the statistics,
so Gaussian (PlaNet, DreamerV1) and categorical (DreamerV2/V3) latents are interchangeable.

Samples and modes are flat vectors ``[..., flat_size]`` so that features are concat(h_t, s_t).
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import distrax
import jax
import jax.numpy as jnp

from rssm.vi import categorical_kl, gaussian_kl, reparam_sample

Array = jax.Array
Stats = dict[str, Array]


class Latent(Protocol):
    """What the RSSM needs from a latent family."""

    @property
    def flat_size(self) -> int: ...
    @property
    def param_size(self) -> int: ...
    def stats(self, raw: Array) -> Stats: ...
    def dist(self, stats: Stats) -> distrax.Distribution: ...
    def sample(self, stats: Stats, key: Array) -> Array: ...
    def log_prob(self, stats: Stats, sample: Array) -> Array: ...
    def mode(self, stats: Stats) -> Array: ...
    def entropy(self, stats: Stats) -> Array: ...
    def kl(self, q: Stats, p: Stats) -> Array: ...


@dataclasses.dataclass(frozen=True)
class GaussianLatent:
    """Diagonal Gaussian latent (PlaNet / DreamerV1).

    stats: ``mean [..., size]``, ``std [..., size]`` with std = softplus(raw) + min_std, which
    keeps the KL finite and the posterior from collapsing to a point.
    """

    size: int = 30  # dimensions of s_t
    min_std: float = 0.1  # lower bound on the standard deviation

    @property
    def flat_size(self) -> int:
        return self.size

    @property
    def param_size(self) -> int:
        return 2 * self.size

    def stats(self, raw: Array) -> Stats:
        """raw ``[..., 2 * size]`` -> {mean, std}, each ``[..., size]`` in float32."""
        mean, std = jnp.split(raw.astype(jnp.float32), 2, axis=-1)
        return {"mean": mean, "std": jax.nn.softplus(std) + self.min_std}

    def dist(self, stats: Stats) -> distrax.Distribution:
        return distrax.MultivariateNormalDiag(stats["mean"], stats["std"])

    def sample(self, stats: Stats, key: Array) -> Array:
        """Reparameterized z = mean + std * eps, ``[..., size]``."""
        return reparam_sample(key, stats["mean"], stats["std"])

    def log_prob(self, stats: Stats, sample: Array) -> Array:
        """log N(s; mean, diag(std^2)) summed over dimensions, ``[...]``."""
        return self.dist(stats).log_prob(sample)

    def mode(self, stats: Stats) -> Array:
        return stats["mean"]

    def entropy(self, stats: Stats) -> Array:
        """H = sum_i 0.5 * log(2 pi e std_i^2), ``[...]``."""
        return (0.5 * jnp.log(2 * jnp.pi * jnp.e) + jnp.log(stats["std"])).sum(-1)

    def kl(self, q: Stats, p: Stats) -> Array:
        """Closed-form KL(q || p) summed over dimensions, ``[...]``."""
        return gaussian_kl(q["mean"], q["std"], p["mean"], p["std"])


@dataclasses.dataclass(frozen=True)
class CategoricalLatent:
    """``groups`` independent categoricals of ``classes`` each (DreamerV2/V3).

    stats: ``logits [..., groups, classes]``, already mixed with ``unimix`` of the uniform
    distribution, p = (1 - unimix) * softmax(raw) + unimix / classes, so that no class has
    probability zero and the KL stays bounded (DreamerV3).
    """

    groups: int = 32  # number of categorical variables
    classes: int = 32  # classes per variable
    unimix: float = 0.01  # weight of the uniform mixture

    @property
    def flat_size(self) -> int:
        return self.groups * self.classes

    @property
    def param_size(self) -> int:
        return self.groups * self.classes

    def stats(self, raw: Array) -> Stats:
        """raw ``[..., groups * classes]`` -> {logits ``[..., groups, classes]``} in float32."""
        raw = raw.astype(jnp.float32).reshape(*raw.shape[:-1], self.groups, self.classes)
        if self.unimix > 0:
            probs = jax.nn.softmax(raw, -1)
            probs = (1 - self.unimix) * probs + self.unimix / self.classes
            return {"logits": jnp.log(probs)}
        return {"logits": jax.nn.log_softmax(raw, -1)}

    def dist(self, stats: Stats) -> distrax.Distribution:
        base = distrax.OneHotCategorical(logits=stats["logits"], dtype=jnp.float32)
        return distrax.Independent(base, reinterpreted_batch_ndims=1)

    def sample(self, stats: Stats, key: Array) -> Array:
        """One-hot sample with straight-through gradients, flattened to ``[..., groups * classes]``.

        Forward: the one-hot sample. Backward: d sample / d probs = identity, through
        sample + probs - stop_gradient(probs).
        """
        logits = stats["logits"]
        idx = jax.random.categorical(key, logits, axis=-1)
        return self._straight_through(jax.nn.one_hot(idx, self.classes), logits)

    def log_prob(self, stats: Stats, sample: Array) -> Array:
        """sum_groups sum_k x_k log p_k of a flat one-hot ``sample [..., groups * classes]``,
        ``[...]`` (the logits are normalized log-probabilities, unimix included)."""
        x = sample.reshape(*sample.shape[:-1], self.groups, self.classes)
        return (x * jax.nn.log_softmax(stats["logits"], -1)).sum((-2, -1))

    def mode(self, stats: Stats) -> Array:
        logits = stats["logits"]
        hard = jax.nn.one_hot(jnp.argmax(logits, -1), self.classes)
        return self._straight_through(hard, logits)

    def _straight_through(self, hard: Array, logits: Array) -> Array:
        probs = jax.nn.softmax(logits, -1)
        out = hard + probs - jax.lax.stop_gradient(probs)
        return out.reshape(*out.shape[:-2], self.flat_size)

    def entropy(self, stats: Stats) -> Array:
        """H = -sum_groups sum_k p_k log p_k, ``[...]``."""
        logp = jax.nn.log_softmax(stats["logits"], -1)
        return -(jnp.exp(logp) * logp).sum((-2, -1))

    def kl(self, q: Stats, p: Stats) -> Array:
        """Closed-form KL(q || p), summed over groups, ``[...]``."""
        return categorical_kl(q["logits"], p["logits"]).sum(-1)
