"""Output distributions for decoders and heads, and the symlog transform.

Each distribution exposes ``log_prob(x)``, ``mode()`` and ``mean()`` so that the ELBO can treat
every likelihood term alike: ``log p(o_t | h_t, s_t)`` is ``head(features).log_prob(o_t)``.

Not all of them are normalized densities. ``MSEDist`` and ``SymlogMSEDist`` return the negative
squared error, which is a Gaussian log-density with unit variance up to the constant
``-0.5 * log(2 pi)`` per dimension and a factor 1/2 (DreamerV3 drops both). A ``Head`` with
``dist='normal'`` and a fixed ``std`` (``rssm.nets``) is the exact density for when the ELBO must
be an exact bound, and ``DiscretizedNormal`` the exact probability of 8-bit images.

Two discretized regression heads for scalars of any scale (rewards, values):

- ``TwoHotDist`` (DreamerV3, 2024 release, the default): bins at symexp(linspace(-20, 20, K)),
  the target y two-hot encoded in raw space, readout E[y] = sum_k p_k b_k. Because the encoding
  preserves the mean (sum_k twohot(y)_k b_k = y), the cross-entropy-optimal readout of a
  stochastic target is its mean: rewards 0 (p = 0.9) and 10 (p = 0.1) read out 1.0.
- ``TwoHotSymlogDist`` (DreamerV3, 2023 paper): bins uniform in symlog space, target
  twohot(symlog(y)), readout symexp(sum_k p_k b_k). The readout is the symexp of the mean of
  symlog(y), which is biased towards zero for spread-out targets: the same example reads 0.27.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rssm.reference import reference_active

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


# The smallest gap a - b that ``_log_diff_exp`` takes: two CDFs equal in float32 (a bin far in
# a tail) give log(e^a (1 - e^-1e-30)) = a - 69 instead of -inf, so log_prob and its gradient
# stay finite where the mass underflows.
MIN_LOG_GAP = 1e-30


def _log_diff_exp(a: Array, b: Array) -> Array:
    """log(exp(a) - exp(b)) for a >= b, stably."""
    return a + jnp.log(-jnp.expm1(jnp.minimum(b - a, -MIN_LOG_GAP)))


class DiscretizedNormal:
    """Normal(mean, std) discretized to the integer levels 0 .. L - 1 (pixels), for targets on
    the [0, 1] scale (level k is k / (L - 1)). In level units m = mean (L - 1), s = std (L - 1):

        P(k) = Phi((k + 1/2 - m) / s) - Phi((k - 1/2 - m) / s)     0 < k < L - 1
        P(0) = Phi((1/2 - m) / s),   P(L - 1) = 1 - Phi((L - 3/2 - m) / s)

    a normalized probability mass function over the L levels, so that log_prob is an exact
    log-likelihood of the pixels and -log_prob / (D log 2) their bits per dimension.

    Args:
      mean: ``[..., *event]`` in [0, 1].
      std: standard deviation on the same scale (broadcasts against mean), > 0.
      dims: number of trailing event axes summed over.
      levels: L (256 for 8-bit images).
    """

    def __init__(self, mean: Array, std: Array | float, dims: int, levels: int = 256):
        self._mean = mean
        self.std = std
        self.dims = dims
        self.levels = levels

    def mode(self) -> Array:
        return self._mean

    def mean(self) -> Array:
        return self._mean

    def log_prob(self, x: Array) -> Array:
        if x.shape != self._mean.shape:
            raise ValueError(
                f"DiscretizedNormal: target shape {x.shape} != prediction {self._mean.shape}"
            )
        top = self.levels - 1
        k = jnp.round(x.astype(jnp.float32) * top)
        m = self._mean.astype(jnp.float32) * top
        s = jnp.asarray(self.std, jnp.float32) * top
        hi, lo = (k + 0.5 - m) / s, (k - 0.5 - m) / s
        log_cdf = jax.scipy.special.log_ndtr
        # Each interior mass from the tail it lies in, where the two CDFs differ most in value.
        left = _log_diff_exp(log_cdf(hi), log_cdf(lo))
        right = _log_diff_exp(log_cdf(-lo), log_cdf(-hi))
        inner = jnp.where(k - m > 0, right, left)
        logp = jnp.where(k <= 0, log_cdf(hi), jnp.where(k >= top, log_cdf(-lo), inner))
        return _sum_last(logp, self.dims)


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


def twohot_pair(x: Array, bins: Array) -> tuple[Array, Array]:
    """The two-hot encoding of scalars ``x [...]`` over sorted ``bins [K]``: the lower of the two
    neighbouring bins and the upper one's weight, (below, w_hi), each ``[...]``.

        w_hi = (x - b_below) / (b_{below + 1} - b_below)
        twohot(x) = (1 - w_hi) e_below + w_hi e_{below + 1}

    so that sum_k twohot(x)_k b_k = x inside the bin range; x outside it is clipped to the end
    bins (all weight on one bin). The one encoder: ``twohot`` and ``twohot_log_prob`` use it.
    """
    x = jnp.clip(x, bins[0], bins[-1])
    above = jnp.clip(jnp.searchsorted(bins, x, side="right"), 1, bins.shape[0] - 1)
    below = above - 1
    lo, hi = bins[below], bins[above]
    return below, (x - lo) / (hi - lo)


def twohot(x: Array, bins: Array) -> Array:
    """The two-hot vector of scalars ``x [...]`` over sorted ``bins [K]``, ``[..., K]``: weight
    1 - w_hi at ``below`` and w_hi at ``below + 1`` (``twohot_pair``)."""
    below, w_hi = twohot_pair(x, bins)
    return (jax.nn.one_hot(below, bins.shape[0]) * (1.0 - w_hi)[..., None]) + (
        jax.nn.one_hot(below + 1, bins.shape[0]) * w_hi[..., None]
    )


def twohot_log_prob(logits: Array, x: Array, bins: Array) -> Array:
    """sum_k twohot(x)_k log softmax(logits)_k, ``[...]``, the two-hot target stop-gradient.

    Gathers the two log-probabilities instead of forming the ``[..., K]`` two-hot vector (the
    same value and gradient; the vector is the plain formulation, under ``reference_impl``).
    """
    logp = jax.nn.log_softmax(logits, axis=-1)
    if reference_active():
        return (jax.lax.stop_gradient(twohot(x, bins)) * logp).sum(-1)
    below, w_hi = jax.lax.stop_gradient(twohot_pair(x, bins))
    pair = jnp.take_along_axis(logp, jnp.stack([below, below + 1], -1), -1)
    return (1.0 - w_hi) * pair[..., 0] + w_hi * pair[..., 1]


def symlog_bins(num: int = 255, low: float = -20.0, high: float = 20.0) -> Array:
    """Bin centres uniformly spaced in symlog space, ``[num]``."""
    return jnp.linspace(low, high, num, dtype=jnp.float32)


def symexp_bins(num: int = 255, low: float = -20.0, high: float = 20.0) -> Array:
    """Bin centres symexp(linspace(low, high, num)), ``[num]``, exactly antisymmetric.

    Built from one half and its negation (as the 2024 release does) so that bins[k] = -bins[-1-k]
    holds bit for bit and the odd count has an exact 0 in the middle.
    """
    if low != -high:
        raise ValueError(f"symexp_bins: the bins must be symmetric, got low={low}, high={high}")
    if num % 2:
        half = symexp(jnp.linspace(low, 0.0, (num - 1) // 2 + 1, dtype=jnp.float32))
        return jnp.concatenate([half, -half[:-1][::-1]])
    half = symexp(jnp.linspace(low, 0.0, num // 2, dtype=jnp.float32))
    return jnp.concatenate([half, -half[::-1]])


def symmetric_expectation(probs: Array, bins: Array) -> Array:
    """sum_k p_k b_k over the last axis, summed in mirrored pairs (b_k, b_{K-1-k}).

    With antisymmetric bins and equal probabilities every pair cancels exactly, so zero logits
    read out exactly 0 (a left-to-right float sum leaves a residue of ~1e-1 for bins up to 5e8).
    """
    k = bins.shape[0]
    half = k // 2
    terms = probs * bins
    pairs = terms[..., :half][..., ::-1] + terms[..., k - half :]
    out = pairs.sum(-1)
    if k % 2:
        out = out + terms[..., half]
    return out


def plain_expectation(probs: Array, bins: Array) -> Array:
    """sum_k p_k b_k over the last axis, one reduction (DreamerV3's 2023 readout)."""
    return (probs * bins).sum(-1)


def _identity(x: Array) -> Array:
    return x


class TwoHotDist:
    """Categorical over sorted bins b_k in the space of a transform f, trained with two-hot
    targets (DreamerV3):

        log_prob(y) = sum_k twohot(f(y))_k log softmax(logits)_k
        mean()      = f^-1(sum_k softmax(logits)_k b_k)

    Here f is the identity (the 2024 release): bins in raw space (see ``symexp_bins``), summed
    in mirrored pairs (``symmetric_expectation``). ``TwoHotSymlogDist`` is the same with f =
    symlog. A variant sets the class attributes ``forward`` (f), ``inverse`` (f^-1) and
    ``expectation`` (the order of the readout's sum).

    Args:
      logits: ``[..., K]`` for scalar targets ``[...]``.
      bins: ``[K]`` sorted bin centres in the space of f.
    """

    forward = staticmethod(_identity)
    inverse = staticmethod(_identity)
    expectation = staticmethod(symmetric_expectation)

    def __init__(self, logits: Array, bins: Array):
        if logits.shape[-1] != bins.shape[0]:
            raise ValueError(
                f"{type(self).__name__}: {logits.shape[-1]} logits for {bins.shape[0]} bins"
            )
        self.logits = logits.astype(jnp.float32)
        self.bins = bins

    def mean(self) -> Array:
        return self.inverse(self.expectation(jax.nn.softmax(self.logits, -1), self.bins))

    def mode(self) -> Array:
        return self.mean()

    def log_prob(self, x: Array) -> Array:
        if x.shape != self.logits.shape[:-1]:
            raise ValueError(
                f"{type(self).__name__}: target shape {x.shape} != batch shape "
                f"{self.logits.shape[:-1]}"
            )
        return twohot_log_prob(self.logits, self.forward(x.astype(jnp.float32)), self.bins)


class TwoHotSymlogDist(TwoHotDist):
    """``TwoHotDist`` with f = symlog (DreamerV3, 2023 paper): bins uniform in symlog space (see
    ``symlog_bins``), target twohot(symlog(y)), readout symexp(sum_k p_k b_k).

    The readout sums left to right as the 2023 code does (``plain_expectation``): a symmetric
    sum would move its results by rounding.
    """

    forward = staticmethod(symlog)
    inverse = staticmethod(symexp)
    expectation = staticmethod(plain_expectation)
