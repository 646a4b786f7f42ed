"""Output distributions for decoders and heads, and the symlog transform.

Each distribution exposes ``log_prob(x)``, ``mode()`` and ``mean()`` so that the ELBO can treat
every likelihood term alike: ``log p(o_t | h_t, s_t)`` is ``head(features).log_prob(o_t)``.

Not all of them are normalized densities. ``MSEDist`` and ``SymlogMSEDist`` return the negative
squared error, which is a Gaussian log-density with unit variance up to the constant
``-0.5 * log(2 pi)`` per dimension and a factor 1/2 (DreamerV3 drops both). ``NormalHead`` with a
fixed ``std`` is the exact density for when the ELBO must be an exact bound.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def symlog(x: Array) -> Array:
    """symlog(x) = sign(x) * log(1 + |x|): compresses large magnitudes, identity-like near 0."""
    return jnp.sign(x) * jnp.log1p(jnp.abs(x))


def symexp(x: Array) -> Array:
    """symexp(x) = sign(x) * (exp(|x|) - 1), the inverse of ``symlog``."""
    return jnp.sign(x) * jnp.expm1(jnp.abs(x))


def _sum_last(x: Array, dims: int) -> Array:
    return x.sum(axis=tuple(range(-dims, 0))) if dims else x


class MSEDist:
    """log_prob(x) = -sum over the last ``dims`` axes of (mode - x)^2.

    Args:
      mode: predicted value, ``[..., *event]``.
      dims: number of trailing event axes summed over.
    """

    def __init__(self, mode: Array, dims: int):
        self._mode = mode
        self.dims = dims

    def mode(self) -> Array:
        return self._mode

    def mean(self) -> Array:
        return self._mode

    def log_prob(self, x: Array) -> Array:
        if x.shape != self._mode.shape:
            raise ValueError(f"MSEDist: target shape {x.shape} != prediction {self._mode.shape}")
        return -_sum_last(jnp.square(self._mode - x.astype(self._mode.dtype)), self.dims)


class SymlogMSEDist:
    """Squared error in symlog space: log_prob(x) = -sum (pred - symlog(x))^2; mode = symexp(pred).

    Robust to targets of unknown scale (DreamerV3's vector decoder).

    Args:
      pred: prediction in symlog space, ``[..., *event]``.
      dims: number of trailing event axes summed over.
    """

    def __init__(self, pred: Array, dims: int):
        self.pred = pred
        self.dims = dims

    def mode(self) -> Array:
        return symexp(self.pred)

    def mean(self) -> Array:
        return symexp(self.pred)

    def log_prob(self, x: Array) -> Array:
        if x.shape != self.pred.shape:
            raise ValueError(
                f"SymlogMSEDist: target shape {x.shape} != prediction {self.pred.shape}"
            )
        return -_sum_last(jnp.square(self.pred - symlog(x.astype(self.pred.dtype))), self.dims)


def twohot(x: Array, bins: Array) -> Array:
    """Two-hot encoding of scalars ``x [...]`` over sorted ``bins [K]`` -> ``[..., K]``.

    The weight is split between the two neighbouring bins so that sum_k w_k * bins_k = x
    (for x inside the bin range; outside it, all weight goes to the nearest end bin).
    """
    x = jnp.clip(x, bins[0], bins[-1])
    above = jnp.clip(jnp.searchsorted(bins, x, side="right"), 1, bins.shape[0] - 1)
    below = above - 1
    lo, hi = bins[below], bins[above]
    w_hi = (x - lo) / (hi - lo)
    return (jax.nn.one_hot(below, bins.shape[0]) * (1.0 - w_hi)[..., None]) + (
        jax.nn.one_hot(above, bins.shape[0]) * w_hi[..., None]
    )


def symlog_bins(num: int = 255, low: float = -20.0, high: float = 20.0) -> Array:
    """Bin centres uniformly spaced in symlog space, ``[num]``."""
    return jnp.linspace(low, high, num, dtype=jnp.float32)


class TwoHotSymlogDist:
    """Categorical over ``bins`` in symlog space, trained with two-hot targets (DreamerV3).

    log_prob(x) = sum_k twohot(symlog(x))_k * log softmax(logits)_k
    mean()      = symexp(sum_k softmax(logits)_k * bins_k)

    Args:
      logits: ``[..., K]`` for scalar targets ``[...]``.
      bins: ``[K]`` bin centres in symlog space (see ``symlog_bins``).
    """

    def __init__(self, logits: Array, bins: Array):
        if logits.shape[-1] != bins.shape[0]:
            raise ValueError(
                f"TwoHotSymlogDist: {logits.shape[-1]} logits for {bins.shape[0]} bins"
            )
        self.logits = logits.astype(jnp.float32)
        self.bins = bins

    def mean(self) -> Array:
        probs = jax.nn.softmax(self.logits, axis=-1)
        return symexp((probs * self.bins).sum(-1))

    def mode(self) -> Array:
        return self.mean()

    def log_prob(self, x: Array) -> Array:
        if x.shape != self.logits.shape[:-1]:
            raise ValueError(
                f"TwoHotSymlogDist: target shape {x.shape} != batch shape {self.logits.shape[:-1]}"
            )
        target = jax.lax.stop_gradient(twohot(symlog(x.astype(jnp.float32)), self.bins))
        return (target * jax.nn.log_softmax(self.logits, axis=-1)).sum(-1)
