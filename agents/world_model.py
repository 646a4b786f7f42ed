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

import math
from typing import Any

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp

import rssm
from agents.contract import ObsShapes
from agents.wm_config import WorldModelConfig
from rssm.conv import image_grid
from rssm.state import STATE_KEYS

Array = jax.Array
Batch = dict[str, Array]
# The entries of a posterior state that replay stores as the context of its step: h_t, s_t.
CONTEXT_KEYS = STATE_KEYS
# Heads whose log_prob is a normalized log-density (with hard targets for 'binary').
DENSITY_DISTS = ("normal", "binary")
# ``loss`` folds this into its key for the dequantization noise: a stream apart from the
# posterior samples'.
DEQUANTIZATION_STREAM = 1
# Channels an image observation may have: 3 (colour) or 1 (gray).
IMAGE_CHANNELS = (1, 3)


def check_image_shape(shape: tuple[int, ...], stages: int = 4) -> tuple[int, int, int]:
    """``shape`` as ``(H, W, C)`` when the image networks take it: C in ``IMAGE_CHANNELS`` and
    H, W sizes that ``stages`` halvings reach (``rssm.conv.image_grid``: 48, 64, 80, ...,
    256 a side with the default four, e.g. 64 x 64, 96 x 96 or 64 x 96). ValueError naming
    the sizes that work and the fix (``--env.size``, ``--env.gray``) otherwise."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or shape[-1] not in IMAGE_CHANNELS:
        raise ValueError(
            f"observation 'image' has shape {shape}; the world model takes [H, W, C] images "
            "with C = 3 (colour) or 1 (gray): set --env.gray true for gray frames, or keep "
            "one image per observation"
        )
    try:
        image_grid(shape[:2], stages)
    except ValueError as err:
        raise ValueError(
            f"observation 'image' has shape {shape}: {err}; set --env.size to such a size, "
            "e.g. --env.size 64,64 or --env.size 96,96"
        ) from None
    return shape[0], shape[1], shape[2]


def preprocess(name: str, x: Array, bits: int = 8) -> Array:
    """Encoder inputs: uint8 images -> float in [-0.5, 0.5] (reduced to ``bits``: the centre of
    each level's bin); vectors -> float32."""
    if name == "image":
        if x.dtype != jnp.uint8:
            raise ValueError(f"observation 'image' must be uint8 [.., H, W, C], got {x.dtype}")
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


def zero_carry(wm: WorldModel, num_envs: int) -> dict[str, Any]:
    """The recurrent policy state before the first step: {'state': zeros, 'action': zeros}.

    Zeros are enough: the first observation has is_first=True, which resets the state to h_0.
    Only the RSSM's initial state is traced (for its shapes), not the whole model.
    """
    # Any key: only shapes come out of the trace.
    shapes = jax.eval_shape(
        lambda: wm.init_with_output(jax.random.key(0), num_envs, method=WorldModel.initial_state)[0]
    )
    state = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    return {"state": state, "action": jnp.zeros((num_envs, wm.action_dim))}


class WorldModel(nn.Module):
    """Encoders, RSSM and heads for observations given by ``obs_shapes``.

    ``obs_shapes``: ((name, shape), ...) with names 'vector' ([D]) and/or 'image' ([H, W, C]:
    C 3 or 1, H and W as ``check_image_shape`` takes for ``len(cfg.mults)`` stages).
    ``cont_target``: the continue target of a non-terminal step. DreamerV3 (2024) trains the
    continue head on (1 - terminal) (1 - 1 / horizon), folding the discount into it.
    """

    cfg: WorldModelConfig
    obs_shapes: ObsShapes
    action_dim: int
    cont_target: float = 1.0

    def setup(self) -> None:
        c, dt = self.cfg, self.cfg.compute_dtype
        common = c.net_kwargs
        enc, dec = {}, {}
        for name, shape in self.obs_shapes:
            if name == "image":
                height, width, channels = check_image_shape(shape, len(c.mults))
                cnn = dict(depth=c.depth, mults=c.mults, kernel=c.kernel, kind=c.cnn, **common)
                enc[name] = rssm.ConvEncoder(**cnn)
                dec[name] = rssm.ConvDecoder(
                    channels=channels,
                    size=(height, width),
                    deter=c.deter,
                    units=c.units,
                    blocks=c.blocks,
                    **cnn,
                )
            elif name == "vector":
                enc[name] = rssm.MLP(c.layers, c.units, symlog_inputs=True, **common)
                dec[name] = rssm.Head(
                    shape, c.vector_dist, c.layers, c.units, std=c.vector_std, **common
                )
            else:
                raise ValueError(f"unknown observation key {name!r}; expected 'vector' or 'image'")
        self.encoders, self.decoders = enc, dec
        self.rssm = rssm.RSSM(
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

    def observe(self, batch: Batch, key: Array, state: rssm.State | None = None):
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
        kl = self.rssm.latent.kl(rssm.latent_stats(post), rssm.latent_stats(prior))
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

    def loss(self, batch: Batch, key: Array, state: rssm.State | None = None):
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
        noise_key = jax.random.fold_in(key, DEQUANTIZATION_STREAM)
        log_probs = self.log_likelihoods(rssm.features(post), batch, noise_key)
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

        Returns {name: [B, T, ...] predicted observation modes} (images in [0, 1]), and
        ``reward`` [B, T] (the reward head's mean, E[r_t]) and ``cont`` [B, T] (the continue
        head's probability p(c_t = 1)); the first ``context`` steps from the posterior, the rest
        imagined open loop from the prior given the batch's actions a_{t-1}.
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
        feat = rssm.features(states)
        out = {k: d.mode() for k, d in self.decode(feat).items()}
        reward, cont = self.heads(feat)
        return {**out, "reward": reward.mean(), "cont": cont.mean()}
