"""Dreamer: an actor-critic trained purely in imagined latent rollouts of the world model.

One ``train(state, batch)`` update, all inside one jit:

1. World model: one Adam step on the negative sequential ELBO of the replayed [B, T] batch.
2. Imagination: from every posterior state of the batch (B * T starts, gradients stopped), roll
   the prior forward H steps with actions from the actor: s_0 .. s_H, a_0 .. a_H.
3. Critic targets: lambda-returns R_t from the imagined rewards r_1..r_H, continues c_1..c_H and
   critic values v_0..v_H; trajectory weights w_t = prod_{i<=t} c_i.
4. Actor: REINFORCE with advantages (R_t - v_t) / S normalized by the 5th-95th percentile range S
   of returns (EMA), or backpropagation through the dynamics (DreamerV1); the entropy bonus is
   -beta * KL(pi(.|s_t) || prior), with a uniform prior by default (maximum-entropy RL).
5. Critic: two-hot symlog regression on R_t, regularized toward a slow EMA copy of itself.

Optimizers follow the DreamerV3 paper (2023): Adam with lr 1e-4 (world model, clip 1000) and
3e-5 (actor and critic, eps 1e-5, clip 100). The 2024 release replaced these with one LaProp
chain with adaptive gradient clipping; the paper's setting is the documented, reproducible one
and keeps the three learning rates visible and separately tunable.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import distrax
import flax.struct
import jax
import jax.numpy as jnp
import optax

import rssm
from agents import ac_math
from agents.baselines import adam_chain, check_mode, random_actions
from agents.world_model import ObsShapes, WorldModel, WorldModelConfig, dummy_batch, zero_carry

Array = jax.Array
sg = jax.lax.stop_gradient


@dataclasses.dataclass(frozen=True)
class DreamerConfig:
    """Actor-critic hyperparameters (DreamerV3 paper values unless noted)."""

    horizon: int = 15  # imagination steps H
    gamma: float = 0.997  # discount, an effective horizon of 333 steps
    lam: float = 0.95  # lambda of the lambda-returns
    estimator: str = "reinforce"  # actor gradient: 'reinforce' or 'dynamics' (DreamerV1)
    actent: float = 3e-4  # beta, weight of KL(pi || prior)
    prior: str = "uniform"  # action prior: 'uniform' (max-entropy RL) or 'normal'
    prior_mean: float = 0.0  # 'normal' prior: mean of every action dimension
    prior_std: float = 0.3  # 'normal' prior: standard deviation of every action dimension
    slow_rate: float = 0.02  # EMA rate of the slow critic
    slowreg: float = 1.0  # weight of the slow-critic regularizer
    retnorm_decay: float = 0.99  # EMA decay of the return percentiles
    retnorm_limit: float = 1.0  # lower bound of the return scale S
    layers: int = 2  # actor and critic MLP layers
    units: int = 64  # actor and critic MLP width
    minstd: float = 0.1  # actor: lower bound of the action standard deviation
    maxstd: float = 1.0  # actor: upper bound of the action standard deviation
    value_bins: int = 255  # bins of the two-hot critic
    actor_lr: float = 3e-5  # actor Adam learning rate
    critic_lr: float = 3e-5  # critic Adam learning rate
    ac_eps: float = 1e-5  # actor/critic Adam epsilon
    ac_clip: float = 100.0  # actor/critic global gradient-norm clip

    def validate(self) -> None:
        if self.estimator not in ac_math.ESTIMATORS:
            raise ValueError(
                f"dreamer.estimator={self.estimator!r}; expected one of {ac_math.ESTIMATORS}"
            )
        if self.prior not in ("uniform", "normal"):
            raise ValueError(f"dreamer.prior={self.prior!r}; expected 'uniform' or 'normal'")
        if self.prior == "normal" and self.prior_std <= 0:
            raise ValueError(f"dreamer.prior_std={self.prior_std}; must be positive")
        if self.horizon < 1:
            raise ValueError(f"dreamer.horizon={self.horizon}; must be >= 1")


@flax.struct.dataclass
class DreamerState:
    params: Any  # {'wm', 'actor', 'critic'}
    opt_state: Any  # {'wm', 'actor', 'critic'}
    slow_critic: Any  # EMA copy of the critic's parameters
    retnorm: ac_math.ReturnNorm  # EMA of the return percentiles
    key: Array  # RNG key, split once per update
    updates: Array  # number of updates done, int32 scalar


class Dreamer:
    """The Dreamer agent: ``init``, ``init_carry``, ``policy``, ``train``, ``openloop``."""

    def __init__(
        self, wm_cfg: WorldModelConfig, cfg: DreamerConfig, obs_shapes: ObsShapes, action_dim: int
    ):
        cfg.validate()
        self.cfg, self.wm_cfg = cfg, wm_cfg
        self.action_dim = action_dim
        self.obs_shapes = obs_shapes
        self.wm = WorldModel(wm_cfg, obs_shapes, action_dim)
        dt = wm_cfg.compute_dtype
        self.actor = ac_math.ActorHead(
            action_dim,
            layers=cfg.layers,
            units=cfg.units,
            norm=wm_cfg.norm,
            act=wm_cfg.act,
            minstd=cfg.minstd,
            maxstd=cfg.maxstd,
            dtype=dt,
        )
        self.critic = rssm.Head(
            (),
            "symlog_twohot",
            cfg.layers,
            cfg.units,
            wm_cfg.norm,
            wm_cfg.act,
            bins=cfg.value_bins,
            dtype=dt,
        )
        self.opt = {
            "wm": adam_chain(wm_cfg.lr, wm_cfg.eps, wm_cfg.clip),
            "actor": adam_chain(cfg.actor_lr, cfg.ac_eps, cfg.ac_clip),
            "critic": adam_chain(cfg.critic_lr, cfg.ac_eps, cfg.ac_clip),
        }
        self.feat_size = wm_cfg.deter + wm_cfg.make_latent().flat_size
        self.train = jax.jit(self._train, donate_argnums=0)
        self.policy = jax.jit(self._policy, static_argnums=4)
        self.openloop = jax.jit(self._openloop)

    # --- construction -------------------------------------------------------------------------

    def dummy_batch(self, batch: int = 1, length: int = 2) -> dict[str, Array]:
        return dummy_batch(self.obs_shapes, self.action_dim, batch, length)

    def init(self, key: Array) -> DreamerState:
        k_wm, k_wm2, k_actor, k_critic, k_state = jax.random.split(key, 5)
        feat = jnp.zeros((1, self.feat_size))
        params = {
            "wm": self.wm.init(k_wm, self.dummy_batch(), k_wm2, method=WorldModel.loss),
            "actor": self.actor.init(k_actor, feat),
            "critic": self.critic.init(k_critic, feat),
        }
        opt_state = {k: self.opt[k].init(v) for k, v in params.items()}
        slow = jax.tree.map(jnp.copy, params["critic"])  # own buffers: the state is donated
        return DreamerState(
            params, opt_state, slow, ac_math.returnnorm_init(), k_state, jnp.zeros((), jnp.int32)
        )

    def init_carry(self, num_envs: int) -> dict[str, Any]:
        return zero_carry(self.wm, num_envs)

    def action_prior(self, like: distrax.Distribution):
        if self.cfg.prior == "uniform":
            return ac_math.UNIFORM
        shape = tuple(like.batch_shape) + tuple(like.event_shape)
        base = distrax.Normal(
            jnp.full(shape, self.cfg.prior_mean), jnp.full(shape, self.cfg.prior_std)
        )
        return distrax.Independent(base, len(like.event_shape))

    # --- acting -------------------------------------------------------------------------------

    def _policy(self, state: DreamerState, carry, obs, key, mode: str):
        """Posterior step on o_t from the carried (h, s, a_{t-1}), then a_t ~ pi(. | h_t, s_t)
        ('explore'), its mode ('eval'), or uniform in [-1, 1] ('random', prefill)."""
        check_mode(mode)
        k1, k2 = jax.random.split(key)
        post = self.wm.apply(
            state.params["wm"], carry["state"], carry["action"], obs, k1, method=WorldModel.obs_step
        )
        if mode == "random":
            action = random_actions(k2, post["deter"].shape[0], self.action_dim)
        else:
            dist = self.actor.apply(state.params["actor"], rssm.features(post))
            explore = mode == "explore"
            action = ac_math.sample_action(dist, k2) if explore else ac_math.mode_action(dist)
        action = jnp.clip(action, -1.0, 1.0)
        return action, {"state": post, "action": action}

    # --- learning -----------------------------------------------------------------------------

    def imagine(self, wm_params, actor_params, start, key: Array, sample: bool = True):
        """Imagined states ``[N, H + 1]`` from ``start [N]`` and the actions ``[N, H + 1, A]``.

        actions[:, t] ~ pi(. | states[:, t]) (the mode if not ``sample``); states[:, t + 1] is the
        prior step from (states[:, t], actions[:, t]). The actor sees stopped features, so only
        the dynamics estimator's reparameterized actions carry gradients into the actor.
        """
        dynamics = self.cfg.estimator == "dynamics"

        def policy(s, k):
            dist = self.actor.apply(actor_params, sg(rssm.features(s)))
            a = ac_math.sample_action(dist, k) if sample else ac_math.mode_action(dist)
            return a if dynamics else sg(a)

        return self.wm.apply(
            wm_params, policy, start, self.cfg.horizon, key, method=WorldModel.imagine
        )

    def _train(self, state: DreamerState, batch: dict) -> tuple[DreamerState, dict]:
        cfg = self.cfg
        key, k_wm, k_img, k_kl = jax.random.split(state.key, 4)
        params, opt_state = state.params, state.opt_state

        # 1. World model. The posterior states of this batch seed the imagination.
        def wm_loss(p):
            loss, (metrics, post) = self.wm.apply(p, batch, k_wm, method=WorldModel.loss)
            return loss, (metrics, post)

        (wm_loss_value, (wm_metrics, post)), wm_grads = jax.value_and_grad(wm_loss, has_aux=True)(
            params["wm"]
        )
        wm_updates, wm_opt = self.opt["wm"].update(wm_grads, opt_state["wm"], params["wm"])
        new_wm = optax.apply_updates(params["wm"], wm_updates)
        metrics = {f"wm/{k}": v for k, v in wm_metrics.items()}
        metrics.update({"wm/loss": wm_loss_value, "wm/grad_norm": optax.tree.norm(wm_grads)})

        # 2.-4. Actor objective over imagined trajectories.
        wm_p = sg(params["wm"])
        start = jax.tree.map(lambda x: sg(x.reshape(-1, *x.shape[2:])), post)
        start_cont = 1.0 - batch["is_terminal"].reshape(-1).astype(jnp.float32)
        dynamics = cfg.estimator == "dynamics"

        def actor_objective(actor_p):
            traj, actions = self.imagine(wm_p, actor_p, start, k_img)
            feat = rssm.features(traj)  # [N, H + 1, F]
            if not dynamics:
                feat = sg(feat)
            rew_dist, con_dist = self.wm.apply(wm_p, feat, method=WorldModel.heads)
            cont = jnp.concatenate([start_cont[:, None], con_dist.mean()[:, 1:]], 1)
            values = self.critic.apply(sg(params["critic"]), feat).mean()  # v_0 .. v_H
            rets = ac_math.lambda_returns(
                rew_dist.mean()[:, 1:], cont[:, 1:], values, cfg.gamma, cfg.lam
            )
            weights = ac_math.discount_weights(cont)
            retnorm = ac_math.returnnorm_update(state.retnorm, sg(rets), cfg.retnorm_decay)
            scale = ac_math.returnnorm_scale(retnorm, cfg.retnorm_limit)
            pi = self.actor.apply(actor_p, sg(feat[:, :-1]))
            loss, met = ac_math.actor_loss(
                pi,
                actions[:, :-1],
                rets,
                values[:, :-1],
                weights[:, :-1],
                scale,
                estimator=cfg.estimator,
                beta=cfg.actent,
                prior=self.action_prior(pi),
                key=k_kl,
            )
            met.update(
                imag_reward=rew_dist.mean()[:, 1:].mean(),
                imag_cont=cont[:, 1:].mean(),
                imag_return=rets.mean(),
            )
            aux = (met, retnorm, sg(feat[:, :-1]), sg(rets), weights[:, :-1])
            return loss, aux

        (_, (ac_metrics, retnorm, feat, rets, weights)), actor_grads = jax.value_and_grad(
            actor_objective, has_aux=True
        )(params["actor"])
        actor_updates, actor_opt = self.opt["actor"].update(
            actor_grads, opt_state["actor"], params["actor"]
        )

        # 5. Critic on the same trajectories, toward the lambda-returns and the slow critic.
        slow_mean = self.critic.apply(state.slow_critic, feat).mean()

        def critic_objective(critic_p):
            return ac_math.critic_loss(
                self.critic.apply(critic_p, feat), rets, slow_mean, weights, cfg.slowreg
            )

        (_, critic_metrics), critic_grads = jax.value_and_grad(critic_objective, has_aux=True)(
            params["critic"]
        )
        critic_updates, critic_opt = self.opt["critic"].update(
            critic_grads, opt_state["critic"], params["critic"]
        )
        new_critic = optax.apply_updates(params["critic"], critic_updates)

        metrics.update({f"actor/{k}": v for k, v in ac_metrics.items()})
        metrics.update({f"critic/{k}": v for k, v in critic_metrics.items()})
        metrics.update(
            {
                "actor/grad_norm": optax.tree.norm(actor_grads),
                "critic/grad_norm": optax.tree.norm(critic_grads),
            }
        )
        new_state = state.replace(
            params={
                "wm": new_wm,
                "actor": optax.apply_updates(params["actor"], actor_updates),
                "critic": new_critic,
            },
            opt_state={"wm": wm_opt, "actor": actor_opt, "critic": critic_opt},
            slow_critic=ac_math.ema_update(state.slow_critic, new_critic, cfg.slow_rate),
            retnorm=retnorm,
            key=key,
            updates=state.updates + 1,
        )
        return new_state, metrics

    def _openloop(self, state: DreamerState, batch, key):
        return self.wm.apply(state.params["wm"], batch, key, method=WorldModel.openloop)
