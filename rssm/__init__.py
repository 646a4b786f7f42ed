"""rssm: a reusable recurrent state-space model (PlaNet / Dreamer) and its sequential ELBO.

Depends on jax, flax, distrax and optax only.
"""

from rssm.dists import (
    DiscretizedNormal,
    MSEDist,
    SymlogMSEDist,
    TwoHotDist,
    TwoHotSymlogDist,
    symexp,
    symexp_bins,
    symlog,
    twohot,
)
from rssm.elbo import DREAMERV3_2023_KL, DREAMERV3_KL, PLANET_KL, kl_loss, sequential_elbo
from rssm.iwae import sequence_iwae, sequence_log_weights, step_log_weights
from rssm.latent import CategoricalLatent, GaussianLatent, Latent
from rssm.model import (
    DREAMER_SIZES,
    DREAMER_WIDTHS,
    RSSM,
    check_sequence,
    dreamer,
    features,
    planet,
)
from rssm.nets import MLP, ConvDecoder, ConvEncoder, Head
from rssm.reference import reference_impl
from rssm.vi import categorical_kl, gaussian_kl, iwae_bound, reparam_sample

__all__ = [
    "DREAMERV3_2023_KL",
    "DREAMERV3_KL",
    "DREAMER_SIZES",
    "DREAMER_WIDTHS",
    "MLP",
    "PLANET_KL",
    "RSSM",
    "CategoricalLatent",
    "ConvDecoder",
    "ConvEncoder",
    "DiscretizedNormal",
    "GaussianLatent",
    "Head",
    "Latent",
    "MSEDist",
    "SymlogMSEDist",
    "TwoHotDist",
    "TwoHotSymlogDist",
    "categorical_kl",
    "check_sequence",
    "dreamer",
    "features",
    "gaussian_kl",
    "iwae_bound",
    "kl_loss",
    "planet",
    "reference_impl",
    "reparam_sample",
    "sequence_iwae",
    "sequence_log_weights",
    "sequential_elbo",
    "step_log_weights",
    "symexp",
    "symexp_bins",
    "symlog",
    "twohot",
]
