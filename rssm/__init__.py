"""rssm: a reusable recurrent state-space model (PlaNet / Dreamer) and its sequential ELBO.

Depends on jax, flax, distrax and optax only. What a user of the library needs is here; the
helpers that tests use (``rssm.reference.reference_impl``, ``rssm.state.check_sequence``,
``rssm.iwae.step_log_weights``, ``rssm.dists.twohot``) are in their modules.
"""

from rssm import vi
from rssm.conv import ConvDecoder, ConvEncoder
from rssm.dists import (
    DiscretizedNormal,
    MSEDist,
    SymlogMSEDist,
    TwoHotDist,
    TwoHotSymlogDist,
    symexp,
    symexp_bins,
    symlog,
    symlog_bins,
)
from rssm.elbo import DREAMERV3_2023_KL, DREAMERV3_KL, PLANET_KL, kl_loss, sequential_elbo
from rssm.heads import Head
from rssm.iwae import sequence_iwae, sequence_log_weights
from rssm.latent import CategoricalLatent, GaussianLatent, Latent
from rssm.model import RSSM
from rssm.nets import MLP
from rssm.presets import DREAMER_SIZES, DREAMER_WIDTHS, dreamer, planet
from rssm.state import State, features, latent_stats
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
    "State",
    "SymlogMSEDist",
    "TwoHotDist",
    "TwoHotSymlogDist",
    "categorical_kl",
    "dreamer",
    "features",
    "gaussian_kl",
    "iwae_bound",
    "kl_loss",
    "latent_stats",
    "planet",
    "reparam_sample",
    "sequence_iwae",
    "sequence_log_weights",
    "sequential_elbo",
    "symexp",
    "symexp_bins",
    "symlog",
    "symlog_bins",
    "vi",
]
