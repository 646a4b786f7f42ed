"""The world model: encoders + RSSM + decoders, reward and continue heads.

loss = the objective of ``rssm.sequential_elbo`` over a replayed batch, with the terms

    log p(o_t | h_t, s_t)   one decoder per observation key ('vector', 'image')
    log p(r_t | h_t, s_t)   reward head (two-hot, or a Normal density)
    log p(c_t | h_t, s_t)   Bernoulli continue head, c_t = (1 - is_terminal_t) * ``cont_target``

Only some heads make their term a normalized log-density (``WorldModel.densities``); the
per-step ELBO is logged as 'bound' only when all of them do (see ``WorldModel.loss``).

A batch is a dict of ``[B, T, ...]`` arrays: the observation keys, ``action`` (a_{t-1}, the action
that led to o_t; zeros where ``is_first``), ``reward`` (r_t, received on arriving at o_t),
``is_first``, ``is_last`` and ``is_terminal``. Images arrive as uint8; encoders see
image / 255 - 0.5 and decoders predict image / 255.

Each sequence starts from ``state`` (``{'deter': [B, H], 'stoch': [B, S]}``) when one is given:
DreamerV3's replay context, the RSSM state stored in replay for the step before the sequence.
Without one, or where a sequence's first step is ``is_first``, it starts from h_0.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp

import rssm
from rssm import RSSM
from rssm.model import latent_stats

Array = jax.Array
Batch = dict[str, Array]
ObsShapes = tuple[tuple[str, tuple[int, ...]], ...]
CONTEXT_KEYS = ("deter", "stoch")
REWARD_DISTS = ("symexp_twohot", "symlog_twohot", "normal")
IMAGE_DISTS = ("mse", "discretized_normal", "dequantized_normal")
# Heads whose log_prob is a normalized log-density (with hard targets for 'binary').
DENSITY_DISTS = ("normal", "binary")


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

    def validate(self) -> None:
        from rssm import model as rssm_model
        from rssm import nets

        self.make_latent()
        _ = self.compute_dtype
        choices = {
            "core": rssm_model.CORES,
            "initial": rssm_model.INITIALS,
            "cnn": nets.CNNS,
            "norm": nets.NORMS,
            "act": tuple(nets.ACTIVATIONS),
            "winit": nets.WINITS,
            "vector_dist": nets.HEADS,
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


def preprocess(name: str, x: Array, bits: int = 8) -> Array:
    """Encoder inputs: uint8 images -> float in [-0.5, 0.5] (reduced to ``bits``: the centre of
    each level's bin); vectors -> float32."""
    if name == "image":
        if x.dtype != jnp.uint8:
            raise ValueError(f"observation 'image' must be uint8 [.., 64, 64, 3], got {x.dtype}")
        if bits < 8:
            return (quantize(x, bits) + 0.5) / 2**bits - 0.5
        return x.astype(jnp.float32) / 255.0 - 0.5
    return x.astype(jnp.float32)


def quantize(x: Array, bits: int) -> Array:
    """uint8 pixels -> their level among 2^bits, floor(x / 2^(8 - bits)), as float32."""
    return jnp.floor(x.astype(jnp.float32) / 2 ** (8 - bits))


def target(name: str, x: Array) -> Array:
    """Decoder targets: uint8 images -> float in [0, 1]; vectors -> float32."""
    if name == "image":
        return x.astype(jnp.float32) / 255.0
    return x.astype(jnp.float32)


def dummy_batch(
    obs_shapes: ObsShapes, action_dim: int, batch: int = 1, length: int = 2, context: Any = None
) -> Batch:
    """A zero batch ``[batch, length, ...]`` with the keys and dtypes of a replayed one.

    ``context``: a state whose ``deter`` / ``stoch`` shapes ``[N, ...]`` give the stored start
    state's (``batch['context']``, ``[batch, ...]``); none if None.
    """
    data = {
        name: jnp.zeros((batch, length, *shape), jnp.uint8 if name == "image" else jnp.float32)
        for name, shape in obs_shapes
    }
    data.update(
        action=jnp.zeros((batch, length, action_dim)),
        reward=jnp.zeros((batch, length)),
        is_first=jnp.ones((batch, length), bool),
        is_last=jnp.zeros((batch, length), bool),
        is_terminal=jnp.zeros((batch, length), bool),
    )
    if context is not None:
        data["context"] = {
            k: jnp.zeros((batch, *context[k].shape[1:]), jnp.float32) for k in CONTEXT_KEYS
        }
    return data


def zero_carry(wm: WorldModel, num_envs: int) -> dict[str, Any]:
    """The recurrent policy state before the first step: {'state': zeros, 'action': zeros}.

    Zeros are enough: the first observation has is_first=True, which resets the state to h_0.
    Only the RSSM's initial state is traced (for its shapes), not the whole model.
    """
    shapes = jax.eval_shape(
        lambda: wm.init_with_output(jax.random.key(0), num_envs, method=WorldModel.initial_state)[0]
    )
    state = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    return {"state": state, "action": jnp.zeros((num_envs, wm.action_dim))}


class WorldModel(nn.Module):
    """Encoders, RSSM and heads for observations given by ``obs_shapes``.

    ``obs_shapes``: ((name, shape), ...) with names 'vector' ([D]) and/or 'image' ([64, 64, 3]).
    ``cont_target``: the continue target of a non-terminal step. DreamerV3 (2024) trains the
    continue head on (1 - terminal) (1 - 1 / horizon), folding the discount into it.
    """

    cfg: WorldModelConfig
    obs_shapes: ObsShapes
    action_dim: int
    cont_target: float = 1.0

    def setup(self) -> None:
        c, dt = self.cfg, self.cfg.compute_dtype
        common = dict(norm=c.norm, act=c.act, dtype=dt, bias=c.bias, winit=c.winit)
        enc, dec = {}, {}
        for name, shape in self.obs_shapes:
            if name == "image":
                cnn = dict(depth=c.depth, mults=c.mults, kernel=c.kernel, kind=c.cnn, **common)
                enc[name] = rssm.ConvEncoder(**cnn)
                dec[name] = rssm.ConvDecoder(
                    channels=shape[-1], deter=c.deter, units=c.units, blocks=c.blocks, **cnn
                )
            elif name == "vector":
                enc[name] = rssm.MLP(c.layers, c.units, symlog_inputs=True, **common)
                dec[name] = rssm.Head(
                    shape, c.vector_dist, c.layers, c.units, std=c.vector_std, **common
                )
            else:
                raise ValueError(f"unknown observation key {name!r}; expected 'vector' or 'image'")
        self.encoders, self.decoders = enc, dec
        self.rssm = RSSM(
            latent=c.make_latent(),
            action_dim=self.action_dim,
            deter=c.deter,
            hidden=c.hidden,
            blocks=c.blocks,
            img_layers=c.img_layers,
            obs_layers=c.obs_layers,
            dyn_layers=c.dyn_layers,
            norm=c.norm,
            act=c.act,
            core=c.core,
            initial=c.initial,
            action_clip=c.action_clip,
            bias=c.bias,
            winit=c.winit,
            dtype=dt,
            unroll=c.unroll,
        )
        head_units = c.head_units or c.units
        self.reward = rssm.Head(
            (),
            c.reward_dist,
            c.head_layers,
            head_units,
            bins=c.reward_bins,
            std=c.reward_std,
            outscale=0.0,  # rewards start at exactly 0 (DreamerV3)
            **common,
        )
        self.cont = rssm.Head((), "binary", c.head_layers, head_units, **common)

    # --- pieces -------------------------------------------------------------------------------

    def embed(self, obs: Batch) -> Array:
        """Concatenated embeddings of all observation keys, ``[..., E]``."""
        parts = []
        for name, shape in self.obs_shapes:
            if name not in obs:
                raise ValueError(f"batch lacks observation {name!r}; it has {sorted(obs)}")
            x = obs[name]
            if tuple(x.shape[-len(shape) :]) != tuple(shape):
                raise ValueError(
                    f"observation {name!r} has shape {x.shape}; expected [..., "
                    f"{', '.join(map(str, shape))}]"
                )
            bits = self.cfg.image_bits if self.cfg.image_dist == "dequantized_normal" else 8
            parts.append(self.encoders[name](preprocess(name, x, bits)).astype(jnp.float32))
        return jnp.concatenate(parts, -1)

    def decode(self, feat: Array) -> dict[str, Any]:
        """Observation distributions given features (images on the [0, 1] scale)."""
        out = {}
        for name, _ in self.obs_shapes:
            if name == "image":
                mean = self.decoders[name](feat)
                if self.cfg.image_dist == "discretized_normal":
                    out[name] = rssm.DiscretizedNormal(mean, self.cfg.image_std, 3)
                elif self.cfg.image_dist == "dequantized_normal":
                    std = jnp.full_like(mean, self.cfg.image_std)
                    out[name] = distrax.Independent(distrax.Normal(mean, std), 3)
                else:
                    out[name] = rssm.MSEDist(mean, 3)
            else:
                out[name] = self.decoders[name](feat)
        return out

    def heads(self, feat: Array) -> tuple[Any, Any]:
        """(reward distribution, continue distribution) at features ``[..., F]``."""
        return self.reward(feat), self.cont(feat)

    def observe(self, batch: Batch, key: Array, state: rssm.model.State | None = None):
        """Posterior and prior over a batch, each a State ``[B, T, ...]``."""
        embed = self.embed(batch)
        return self.rssm.observe(embed, batch["action"], batch["is_first"], key, state)

    def obs_step(self, state, prev_action: Array, obs: Batch, key: Array):
        """One posterior step for acting: obs holds ``[N, ...]`` arrays and ``is_first [N]``."""
        return self.rssm.post_step(state, prev_action, self.embed(obs), obs["is_first"], key)

    def img_step(self, state, action: Array, key: Array):
        return self.rssm.img_step(state, action, key)

    def initial_state(self, batch_size: int):
        return self.rssm.initial_state(batch_size)

    def imagine(self, policy, start, horizon: int, key: Array):
        """``RSSM.imagine``: states ``[N, H + 1]``, actions taken in them ``[N, H + 1, A]``."""
        return self.rssm.imagine(policy, start, horizon, key)

    # --- loss ---------------------------------------------------------------------------------

    def densities(self) -> dict[str, bool]:
        """Which likelihood terms are normalized log-densities of their targets: a Normal head
        (vectors, rewards), the Bernoulli continue head on hard targets (``cont_target`` 1).
        So are discretized-Normal images. Squared errors ('mse', 'symlog_mse', MSE images),
        two-hot cross-entropies and a continue head on soft targets are not."""
        c = self.cfg
        dists = {"vector": c.vector_dist, "image": c.image_dist}
        exact = (*DENSITY_DISTS, "discretized_normal", "dequantized_normal")
        out = {name: dists[name] in exact for name, _ in self.obs_shapes}
        out["reward"] = c.reward_dist in DENSITY_DISTS
        if c.con_scale:  # a model without a continue term (PlaNet) leaves it out of the bound
            out["cont"] = self.cont_target == 1.0
        return out

    def log_likelihoods(self, feat: Array, batch: Batch, key: Array) -> dict[str, Array]:
        """Each term's log p (or its score) of the batch's targets at features ``[..., B, T, F]``:
        name -> ``[..., B, T]``; the targets ``[B, T, ...]`` broadcast over the leading axes.
        ``key`` draws the dequantization noise of 'dequantized_normal' images."""
        c = self.cfg
        lead = feat.shape[:-3]
        tile = lambda x: jnp.broadcast_to(x, (*lead, *x.shape))
        out = {}
        for name, dist in self.decode(feat).items():
            if name == "image" and c.image_dist == "dequantized_normal":
                # y = (level + u) / 2^bits with u ~ U(0, 1): E_u log p(y) + D log 2^-bits is a
                # lower bound on log P(level), the probability of the pixels' bins.
                levels = 2**c.image_bits
                noise = jax.random.uniform(key, batch[name].shape)
                y = (quantize(batch[name], c.image_bits) + noise) / levels
                size = math.prod(batch[name].shape[2:])
                out[name] = dist.log_prob(tile(y)) - size * math.log(levels)
            else:
                out[name] = dist.log_prob(tile(target(name, batch[name])))
        rew_dist, con_dist = self.heads(feat)
        out["reward"] = rew_dist.log_prob(tile(batch["reward"].astype(jnp.float32)))
        if c.con_scale:
            cont = (1.0 - batch["is_terminal"].astype(jnp.float32)) * self.cont_target
            out["cont"] = con_dist.log_prob(tile(cont))
        return out

    def heldout_bounds(self, batch: Batch, key: Array, particles: int) -> tuple[Array, Array]:
        """(ELBO, IWAE_K) of each sequence of ``batch`` from h_0, in nats, ``[B]`` each: the ELBO
        with the closed-form KL, IWAE_K over K = ``particles`` posterior trajectories
        (``rssm.sequence_iwae``). Both bound log p(o, r, c | a) only when every term is a
        density (``densities``); IWAE_K - ELBO is then a lower estimate of the ELBO's gap."""
        k1, k2, k3 = jax.random.split(key, 3)  # posterior sample, particles, dequantization
        post, prior = self.observe(batch, k1)
        loglik = sum(self.log_likelihoods(rssm.features(post), batch, k3).values())
        kl = self.rssm.latent.kl(latent_stats(post), latent_stats(prior))
        elbo = (loglik - kl).sum(-1)
        log_w = rssm.sequence_log_weights(
            self.rssm.observe,
            self.rssm.latent,
            lambda feat: sum(self.log_likelihoods(feat, batch, k3).values()),
            self.embed(batch),
            batch["action"],
            batch["is_first"],
            k2,
            particles,
        )
        return elbo, rssm.iwae_bound(log_w, axis=0)

    def loss(self, batch: Batch, key: Array, state: rssm.model.State | None = None):
        """The training objective per step (see rssm.elbo), from ``state`` (replay context).

        Returns (loss, (metrics, posterior states ``[B, T]``)). Metrics name what they are:
        'objective' = sum_k term_k - KL with the heads' own terms (unscaled, unclipped);
        'bound' = the same number, logged only when every term is a normalized log-density
        (``densities``), the per-step ELBO in nats, a lower bound on log p(o, r, c | a);
        'loglik/<name>' for density terms and 'score/<name>' for the others (a negative squared
        error or a cross-entropy in the place of log p); 'bits_per_dim/image' with a discretized
        image likelihood; 'kl', 'dyn', 'rep', entropies.
        """
        c = self.cfg
        post, prior = self.observe(batch, key, state)
        log_probs = self.log_likelihoods(rssm.features(post), batch, jax.random.fold_in(key, 1))
        scales = {name: c.rec_scale for name, _ in self.obs_shapes}
        scales.update(reward=c.rew_scale, cont=c.con_scale)
        scales = {k: v for k, v in scales.items() if k in log_probs}
        loss, raw = rssm.sequential_elbo(
            self.rssm.latent, post, prior, log_probs, scales, c.free_nats, c.beta_dyn, c.beta_rep
        )
        exact = self.densities()
        metrics = {}
        for name, value in raw.items():
            if name == "elbo":
                metrics["objective"] = value
                if all(exact.values()):
                    metrics["bound"] = value
            elif name.startswith("loglik/"):
                term = name.split("/", 1)[1]
                metrics[f"{'loglik' if exact[term] else 'score'}/{term}"] = value
                if term == "image" and exact[term]:  # nats per image -> bits per pixel value
                    size = math.prod(dict(self.obs_shapes)["image"])
                    metrics["bits_per_dim/image"] = -value / (size * math.log(2))
            else:
                metrics[name] = value
        return loss, (metrics, post)

    def openloop(self, batch: Batch, key: Array, context: int = 5) -> dict[str, Array]:
        """Observe ``context`` steps, then imagine the rest from the batch's actions.

        Returns {name: [B, T, ...] predicted observation means}, the first ``context`` steps
        reconstructed from the posterior and the rest predicted open loop from the prior
        (images in [0, 1]).
        """
        k1, k2 = jax.random.split(key)
        batch = {k: v for k, v in batch.items() if k != "context"}
        obs_part = jax.tree.map(lambda x: x[:, :context], batch)
        post, _ = self.observe(obs_part, k1)
        last = jax.tree.map(lambda x: x[:, -1], post)
        actions = jnp.swapaxes(batch["action"][:, context:], 0, 1)
        keys = jax.random.split(k2, actions.shape[0])

        def step(mdl, state, x):
            a, k = x
            nxt = mdl.img_step(state, a, k)
            return nxt, nxt

        scan = nn.scan(step, variable_broadcast="params", split_rngs={"params": False})
        _, imagined = scan(self, last, (actions, keys))
        imagined = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), imagined)
        states = jax.tree.map(lambda a, b: jnp.concatenate([a, b], 1), post, imagined)
        return {k: d.mode() for k, d in self.decode(rssm.features(states)).items()}
