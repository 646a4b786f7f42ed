"""The world model: encoders + RSSM + decoders, reward and continue heads.

loss = -ELBO of ``rssm.sequential_elbo`` over a replayed batch, with the likelihood terms

    log p(o_t | h_t, s_t)   one decoder per observation key ('vector', 'image')
    log p(r_t | h_t, s_t)   two-hot symlog reward head
    log p(c_t | h_t, s_t)   Bernoulli continue head, c_t = 1 - is_terminal_t

A batch is a dict of ``[B, T, ...]`` arrays: the observation keys, ``action`` (a_{t-1}, the action
that led to o_t; zeros where ``is_first``), ``reward`` (r_t, received on arriving at o_t),
``is_first`` and ``is_terminal``. Images arrive as uint8 and are scaled to [-0.5, 0.5] here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

import rssm
from rssm import RSSM

Array = jax.Array
Batch = dict[str, Array]
ObsShapes = tuple[tuple[str, tuple[int, ...]], ...]


@dataclasses.dataclass(frozen=True)
class WorldModelConfig:
    """World-model hyperparameters; defaults are DreamerV3's size1m (2024 release sizes)."""

    latent: str = "categorical"  # 'categorical' (DreamerV2/V3) or 'gaussian' (PlaNet/V1)
    groups: int = 32  # categorical: number of categorical variables
    classes: int = 4  # categorical: classes per variable
    unimix: float = 0.01  # categorical: uniform mixture weight
    stoch: int = 30  # gaussian: latent dimensions
    min_std: float = 0.1  # gaussian: lower bound on the standard deviation
    deter: int = 512  # GRU state size
    hidden: int = 64  # RSSM layer width
    blocks: int = 8  # GRU blocks (block-diagonal recurrent weights)
    img_layers: int = 2  # layers of the prior head p(s_t | h_t)
    obs_layers: int = 1  # layers of the posterior head q(s_t | h_t, e_t)
    dyn_layers: int = 1  # block layers before the GRU gates
    units: int = 64  # encoder/decoder/head MLP width
    layers: int = 2  # encoder/decoder MLP layers
    head_layers: int = 1  # reward/continue head layers
    depth: int = 4  # CNN base channels (x mults (2, 3, 4, 4))
    norm: str = "rms"  # 'rms', 'layer' or 'none'
    act: str = "silu"  # hidden activation
    vector_dist: str = "symlog_mse"  # decoder output for vector observations
    reward_bins: int = 255  # bins of the two-hot reward head
    free_nats: float = 1.0  # KL below this many nats per step is not penalized
    beta_dyn: float = 0.5  # weight of KL(sg(q) || p)
    beta_rep: float = 0.1  # weight of KL(q || sg(p))
    rec_scale: float = 1.0  # weight of the observation log-likelihoods
    rew_scale: float = 1.0  # weight of the reward log-likelihood
    con_scale: float = 1.0  # weight of the continue log-likelihood
    lr: float = 1e-4  # Adam learning rate
    eps: float = 1e-8  # Adam epsilon
    clip: float = 1000.0  # global gradient-norm clip
    dtype: str = "float32"  # compute dtype: 'float32' or 'bfloat16'

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


def preprocess(name: str, x: Array) -> Array:
    """uint8 images -> float in [-0.5, 0.5]; vectors -> float32."""
    if name == "image":
        if x.dtype != jnp.uint8:
            raise ValueError(f"observation 'image' must be uint8 [.., 64, 64, 3], got {x.dtype}")
        return x.astype(jnp.float32) / 255.0 - 0.5
    return x.astype(jnp.float32)


def dummy_batch(obs_shapes: ObsShapes, action_dim: int, batch: int = 1, length: int = 2) -> Batch:
    """A zero batch ``[batch, length, ...]`` with the keys and dtypes of a replayed one."""
    data = {
        name: jnp.zeros((batch, length, *shape), jnp.uint8 if name == "image" else jnp.float32)
        for name, shape in obs_shapes
    }
    data.update(
        action=jnp.zeros((batch, length, action_dim)),
        reward=jnp.zeros((batch, length)),
        is_first=jnp.ones((batch, length), bool),
        is_terminal=jnp.zeros((batch, length), bool),
    )
    return data


def zero_carry(wm: WorldModel, num_envs: int) -> dict[str, Any]:
    """The recurrent policy state before the first step: {'state': zeros, 'action': zeros}.

    Zeros are enough: the first observation has is_first=True, which resets the state to the
    learned h_0. Only the RSSM's initial state is traced (for its shapes), not the whole model.
    """
    shapes = jax.eval_shape(
        lambda: wm.init_with_output(jax.random.key(0), num_envs, method=WorldModel.initial_state)[0]
    )
    state = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    return {"state": state, "action": jnp.zeros((num_envs, wm.action_dim))}


class WorldModel(nn.Module):
    """Encoders, RSSM and heads for observations given by ``obs_shapes``.

    ``obs_shapes``: ((name, shape), ...) with names 'vector' ([D]) and/or 'image' ([64, 64, 3]).
    """

    cfg: WorldModelConfig
    obs_shapes: ObsShapes
    action_dim: int

    def setup(self) -> None:
        c, dt = self.cfg, self.cfg.compute_dtype
        enc, dec = {}, {}
        for name, shape in self.obs_shapes:
            if name == "image":
                enc[name] = rssm.ConvEncoder(c.depth, norm=c.norm, act=c.act, dtype=dt)
                dec[name] = rssm.ConvDecoder(
                    c.depth, channels=shape[-1], norm=c.norm, act=c.act, dtype=dt
                )
            elif name == "vector":
                enc[name] = rssm.MLP(c.layers, c.units, c.norm, c.act, symlog_inputs=True, dtype=dt)
                dec[name] = rssm.Head(
                    shape, c.vector_dist, c.layers, c.units, c.norm, c.act, dtype=dt
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
            dtype=dt,
        )
        self.reward = rssm.Head(
            (), "symlog_twohot", c.head_layers, c.units, c.norm, c.act, bins=c.reward_bins, dtype=dt
        )
        self.cont = rssm.Head((), "binary", c.head_layers, c.units, c.norm, c.act, dtype=dt)

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
            parts.append(self.encoders[name](preprocess(name, x)).astype(jnp.float32))
        return jnp.concatenate(parts, -1)

    def decode(self, feat: Array) -> dict[str, Any]:
        """Observation distributions given features; image decoders give MSE distributions."""
        out = {}
        for name, _ in self.obs_shapes:
            if name == "image":
                out[name] = rssm.MSEDist(self.decoders[name](feat), 3)
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
        post, _ = self.rssm.obs_step(state, prev_action, self.embed(obs), obs["is_first"], key)
        return post

    def img_step(self, state, action: Array, key: Array):
        return self.rssm.img_step(state, action, key)

    def initial_state(self, batch_size: int):
        return self.rssm.initial_state(batch_size)

    def imagine(self, policy, start, horizon: int, key: Array):
        """``RSSM.imagine``: states ``[N, H + 1]``, actions taken in them ``[N, H + 1, A]``."""
        return self.rssm.imagine(policy, start, horizon, key)

    # --- loss ---------------------------------------------------------------------------------

    def loss(self, batch: Batch, key: Array):
        """-ELBO per step (see rssm.elbo). Returns (loss, (metrics, posterior states))."""
        c = self.cfg
        post, prior = self.observe(batch, key)
        feat = rssm.features(post)
        log_probs, scales = {}, {}
        for name, dist in self.decode(feat).items():
            log_probs[name] = dist.log_prob(preprocess(name, batch[name]))
            scales[name] = c.rec_scale
        rew_dist, con_dist = self.heads(feat)
        log_probs["reward"] = rew_dist.log_prob(batch["reward"].astype(jnp.float32))
        log_probs["cont"] = con_dist.log_prob(1.0 - batch["is_terminal"].astype(jnp.float32))
        scales.update(reward=c.rew_scale, cont=c.con_scale)
        loss, metrics = rssm.sequential_elbo(
            self.rssm.latent, post, prior, log_probs, scales, c.free_nats, c.beta_dyn, c.beta_rep
        )
        return loss, (metrics, post)

    def openloop(self, batch: Batch, key: Array, context: int = 5) -> dict[str, Array]:
        """Observe ``context`` steps, then imagine the rest from the batch's actions.

        Returns {name: [B, T, ...] predicted observation means}, the first ``context`` steps
        reconstructed from the posterior and the rest predicted open loop from the prior.
        """
        k1, k2 = jax.random.split(key)
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
