"""The world model's hyperparameters: ``WorldModelConfig``, validated before anything is built."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

import rssm
from rssm.conv import CNNS
from rssm.heads import HEADS
from rssm.model import CORES, INITIALS
from rssm.nets import ACTIVATIONS, NORMS, WINITS

REWARD_DISTS = ("symexp_twohot", "symlog_twohot", "normal")
IMAGE_DISTS = ("mse", "discretized_normal", "dequantized_normal")


@dataclasses.dataclass(frozen=True)
class WorldModelConfig:
    """World-model hyperparameters; defaults are DreamerV3's 2024 release at size1m."""

    latent: str = "categorical"  # 'categorical' (DreamerV2/V3) or 'gaussian' (PlaNet/V1)
    groups: int = 32  # categorical: number of categorical variables
    classes: int = 4  # categorical: classes per variable
    unimix: float = 0.01  # categorical: uniform mixture weight
    stoch: int = 30  # gaussian: latent dimensions
    min_std: float = 0.1  # gaussian: lower bound on the standard deviation
    deter: int = 512  # GRU state size
    hidden: int = 64  # RSSM layer width
    # RSSM transition: 'block' (DreamerV3 2024), 'gru' (2023 code, DreamerV2) or 'planet'
    # (PlaNet's GRUBlockCell on a ReLU embedding of (s, a))
    core: str = "block"
    blocks: int = 8  # GRU blocks (block-diagonal recurrent weights, 'block' core)
    img_layers: int = 2  # layers of the prior head p(s_t | h_t)
    obs_layers: int = 1  # layers of the posterior head q(s_t | h_t, e_t)
    dyn_layers: int = 1  # block layers before the GRU gates ('block' core)
    initial: str = "zeros"  # h_0: 'zeros' (DreamerV3 2024) or 'learned' (2023)
    action_clip: float = 1.0  # the RSSM bounds actions to [-clip, clip] (DreamerV3); 0: off
    units: int = 64  # encoder/decoder/head MLP width
    layers: int = 3  # encoder/decoder MLP layers
    head_layers: int = 1  # reward/continue head layers
    head_units: int = 0  # reward/continue head width (0: same as units)
    cnn: str = "dreamerv3"  # image nets: 'dreamerv3' (2024: k5 + max-pool) or 'strided'
    depth: int = 4  # CNN base channels (x mults)
    mults: tuple[int, ...] = (2, 3, 4, 4)  # CNN channel multipliers per stage
    kernel: int = 5  # CNN kernel size
    norm: str = "rms"  # 'rms', 'layer' or 'none'
    act: str = "silu"  # hidden activation
    bias: bool = True  # biases in front of norms (DreamerV3 2024); False drops them (2023)
    winit: str = "fan_in"  # weight init: truncated normal over fan_in (2024) or fan_avg (2023)
    # Image likelihood: 'mse' (DreamerV3: -||x - mu||^2 on [0, 1], no density),
    # 'discretized_normal' (a probability over the 256 levels: an exact term, bits per dim) or
    # 'dequantized_normal' (PlaNet: a Normal density of the pixels reduced to image_bits and
    # dequantized with uniform noise; its log-density + D log 2^-bits bounds log P(pixels)).
    image_dist: str = "mse"
    image_std: float = 0.1  # std of the image Normal on the [0, 1] scale
    image_bits: int = 8  # 'dequantized_normal': bit depth of the modelled pixels (PlaNet: 5)
    vector_dist: str = "symlog_mse"  # decoder output for vector observations
    vector_std: float = 1.0  # vector_dist 'normal': its fixed std (<= 0: learned)
    # 'symexp_twohot' (2024, unbiased), 'symlog_twohot' (2023) or 'normal' (a density: PlaNet)
    reward_dist: str = "symexp_twohot"
    reward_std: float = 1.0  # reward_dist 'normal': its fixed std (<= 0: learned)
    reward_bins: int = 255  # bins of the two-hot reward head
    free_nats: float = 1.0  # KL below this many nats per step is not penalized
    beta_dyn: float = 1.0  # weight of KL(sg(q) || p)
    beta_rep: float = 0.1  # weight of KL(q || sg(p))
    rec_scale: float = 1.0  # weight of the observation log-likelihoods
    rew_scale: float = 1.0  # weight of the reward log-likelihood
    con_scale: float = 1.0  # weight of the continue log-likelihood
    replay_context: int = 1  # 1: start sequences from the state stored in replay (2024); 0: h_0
    dtype: str = "float32"  # compute dtype: 'float32' or 'bfloat16'
    unroll: int = 1  # RSSM scan steps per loop iteration (the same results; may help on a GPU)

    def make_latent(self) -> rssm.Latent:
        if self.latent == "categorical":
            return rssm.CategoricalLatent(self.groups, self.classes, self.unimix)
        if self.latent == "gaussian":
            return rssm.GaussianLatent(self.stoch, self.min_std)
        raise ValueError(f"model.latent={self.latent!r}; expected 'categorical' or 'gaussian'")

    @property
    def compute_dtype(self) -> Any:
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"model.dtype={self.dtype!r}; expected 'float32' or 'bfloat16'")
        return jnp.dtype(self.dtype)

    @property
    def feat_size(self) -> int:
        """Size of concat(h_t, s_t)."""
        return self.deter + self.make_latent().flat_size

    @property
    def net_kwargs(self) -> dict[str, Any]:
        """What every network of the agent takes from here: norm, activation, compute dtype,
        biases and weight init."""
        return dict(
            norm=self.norm,
            act=self.act,
            dtype=self.compute_dtype,
            bias=self.bias,
            winit=self.winit,
        )

    def validate(self) -> None:
        self.make_latent()
        _ = self.compute_dtype
        choices = {
            "core": CORES,
            "initial": INITIALS,
            "cnn": CNNS,
            "norm": NORMS,
            "act": tuple(ACTIVATIONS),
            "winit": WINITS,
            "vector_dist": HEADS,
            "reward_dist": REWARD_DISTS,
            "image_dist": IMAGE_DISTS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"model.{name}={getattr(self, name)!r}; expected one of {allowed}")
        if self.unroll < 1:
            raise ValueError(f"model.unroll={self.unroll}; must be >= 1 (1: no unrolling)")
        if self.core == "block" and self.deter % self.blocks:
            raise ValueError(
                f"model.deter={self.deter} is not divisible by model.blocks={self.blocks}; "
                "pick deter as a multiple of blocks"
            )
        if self.replay_context not in (0, 1):
            raise ValueError(f"model.replay_context={self.replay_context}; expected 0 or 1")
        if self.action_clip < 0:
            raise ValueError(f"model.action_clip={self.action_clip}; must be >= 0 (0: off)")
        if self.image_std <= 0:
            raise ValueError(f"model.image_std={self.image_std}; must be > 0")
        if not 1 <= self.image_bits <= 8:
            raise ValueError(f"model.image_bits={self.image_bits}; expected 1 .. 8")
