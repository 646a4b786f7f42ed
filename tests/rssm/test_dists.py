"""The discretized Normal over pixel levels: a probability mass function, stable in its tails."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from rssm import DiscretizedNormal

LEVELS = jnp.arange(256) / 255.0


@pytest.mark.parametrize(
    "mean,std", [(0.5, 0.1), (0.01, 0.003), (0.99, 0.5), (0.3, 1e-4), (0.7, 2.0), (0.0, 0.05)]
)
def test_masses_over_the_levels_sum_to_one(mean, std):
    logp = DiscretizedNormal(jnp.full((256,), mean), std, 0).log_prob(LEVELS)
    assert bool(jnp.isfinite(logp).all()) and bool((logp <= 0).all())
    np.testing.assert_allclose(float(jnp.exp(logp).sum()), 1.0, rtol=1e-6)


def test_masses_equal_the_cdf_differences_and_bits_per_dim():
    m, s = 0.5 * 255, 0.1 * 255
    cases = {0: norm.cdf((0.5 - m) / s), 255: 1 - norm.cdf((254.5 - m) / s)}
    cases.update(
        {k: norm.cdf((k + 0.5 - m) / s) - norm.cdf((k - 0.5 - m) / s) for k in (3, 100, 200)}
    )
    dist = DiscretizedNormal(jnp.full((len(cases),), 0.5), 0.1, 0)
    x = jnp.array(list(cases), jnp.float32) / 255.0
    np.testing.assert_allclose(dist.log_prob(x), np.log(list(cases.values())), rtol=1e-5)
    # An image of D pixel values: log_prob sums them; a sharp prediction at the right level
    # costs almost nothing, so its bits per dimension approach 0.
    image = jnp.full((4, 4, 3), 17 / 255.0)
    sharp = DiscretizedNormal(image, 1e-4, 3).log_prob(image)  # std: 0.03 levels
    assert -float(sharp) / (48 * np.log(2)) < 1e-6


def test_gradients_are_finite_far_in_the_tails():
    x = jnp.array([0.0, 0.5, 1.0])
    grad = jax.grad(lambda m: DiscretizedNormal(m, 0.01, 1).log_prob(x))(jnp.array([0.9, 0.1, 0.2]))
    assert bool(jnp.isfinite(grad).all()) and bool((jnp.abs(grad) > 0).all())
