"""rssm: a reusable recurrent state-space model (PlaNet / Dreamer) and its sequential ELBO.

Depends on jax, flax, distrax and optax only.
"""

from rssm.dists import MSEDist, SymlogMSEDist, TwoHotSymlogDist, symexp, symlog, twohot
from rssm.elbo import kl_loss, sequential_elbo
from rssm.latent import CategoricalLatent, GaussianLatent, Latent
from rssm.model import DREAMER_SIZES, RSSM, check_sequence, dreamer, features, planet
from rssm.nets import MLP, ConvDecoder, ConvEncoder, Head
from rssm.vi import categorical_kl, gaussian_kl, iwae_bound, reparam_sample

__all__ = [
    "DREAMER_SIZES",
    "MLP",
    "RSSM",
    "CategoricalLatent",
    "ConvDecoder",
    "ConvEncoder",
    "GaussianLatent",
    "Head",
    "Latent",
    "MSEDist",
    "SymlogMSEDist",
    "TwoHotSymlogDist",
    "categorical_kl",
    "check_sequence",
    "dreamer",
    "features",
    "gaussian_kl",
    "iwae_bound",
    "kl_loss",
    "planet",
    "reparam_sample",
    "sequential_elbo",
    "symexp",
    "symlog",
    "twohot",
]
