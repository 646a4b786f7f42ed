"""Dreamer: an actor-critic trained purely in imagined latent rollouts of the world model.

One ``train(state, batch)`` update, all inside one jit (DreamerV3, 2024 release by default):

1. World model: the negative sequential ELBO of the replayed [B, T] batch, each sequence started
   from the state stored in replay for the step before it (replay context).
2. Imagination: from every posterior state of the batch (B * T starts, gradients stopped), roll
   the prior forward H steps with actions from the actor: s_0 .. s_H, a_0 .. a_H. The RSSM
   bounds the actions to the box, as the environment does.
3. Critic targets: lambda-returns R_t from the imagined rewards r_1..r_H, continues c_1..c_H and
   critic values v_0..v_H; trajectory weights w_t = prod_{i<=t} c_i. With ``contdisc`` the
   discount lives in the continue head (its target is (1 - terminal)(1 - 1/horizon)).
4. Actor: REINFORCE with advantages (R_t - v_t) / S normalized by the 5th-95th percentile range S
   of returns (EMA), or backpropagation through the dynamics ('dynamics'); the entropy bonus is
   -beta * KL(pi(.|s_t) || prior), with a uniform prior by default (maximum-entropy RL).
5. Critic: two-hot regression on R_t, regularized toward a slow EMA copy of itself.
6. Replay value (``repval``): the critic also regresses, on the replayed posterior states,
   lambda-returns over the real rewards and terminals bootstrapped with the imagined returns.

``update='joint'`` (2024) takes one gradient of the sum of all losses at the current parameters
(the world model also receives the replay-value loss's gradient when ``repval_grad``);
``update='sequential'`` (the 2023 code) first updates the world model, then imagines with the
updated one for the actor and critic.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import distrax
import jax
import jax.numpy as jnp
import optax

import rssm
from agents import ac_math, optim
from agents.baselines import context_out, start_state
from agents.contract import AgentState, check_mode, random_actions
from agents.world_model import ObsShapes, WorldModel, WorldModelConfig, dummy_batch, zero_carry
from rssm.reference import reference_active

Array = jax.Array
sg = jax.lax.stop_gradient

UPDATES = ("joint", "sequential")
CONTS = ("prob", "mode")
FIRST_CONTS = ("model", "data")


@dataclasses.dataclass(frozen=True)
class DreamerConfig:
    """Actor-critic hyperparameters; defaults are DreamerV3's 2024 release at size1m."""

    horizon: int = 15  # imagination steps H
    discount_horizon: int = 333  # the discount is gamma = 1 - 1 / discount_horizon
    lam: float = 0.95  # lambda of the lambda-returns
    contdisc: bool = True  # discount inside the continue head (2024); False: explicit gamma
    imag_cont: str = "prob"  # imagined c_t: the head's probability (2024) or its mode (2023)
    first_cont: str = "model"  # c_0: the continue head at the start state (2024) or the data
    estimator: str = "reinforce"  # actor gradient: 'reinforce' or 'dynamics' (2023 continuous)
    actent: float = 3e-4  # beta, weight of KL(pi || prior)
    prior: str = "uniform"  # action prior: 'uniform' (max-entropy RL) or 'normal'
    prior_mean: float = 0.0  # 'normal' prior: mean of every action dimension
    prior_std: float = 0.3  # 'normal' prior: standard deviation of every action dimension
    slow_rate: float = 0.02  # EMA rate of the slow critic
    # The slow critic copies the critic at the first update (2023 code: SlowUpdater mixes 1 on
    # its first call); otherwise it starts as the initial critic (2024: SlowModel copies it).
    slow_copy_first: bool = False
    slowreg: float = 1.0  # weight of the slow-critic regularizer
    retnorm_decay: float = 0.99  # EMA decay of the return percentiles
    retnorm_limit: float = 1.0  # lower bound of the return scale S
    layers: int = 3  # actor and critic MLP layers
    units: int = 64  # actor and critic MLP width
    minstd: float = 0.1  # actor: lower bound of the action standard deviation
    maxstd: float = 1.0  # actor: upper bound of the action standard deviation
    outscale: float = 0.01  # actor: scale of the output layer's initial weights
    # Discrete actor: weight of the uniform mixture (2023 one-hot head: 0.01; the 2024
    # categorical head ignores its unimix setting: 0)
    actor_unimix: float = 0.0
    value_dist: str = "symexp_twohot"  # critic: 'symexp_twohot' (2024) or 'symlog_twohot'
    value_bins: int = 255  # bins of the two-hot critic
    repval: bool = True  # also train the critic on replayed states (2024)
    repval_scale: float = 0.3  # weight of the replay-value loss
    repval_grad: bool = True  # the replay-value loss also trains the world model's states
    update: str = "joint"  # 'joint' (2024: one gradient) or 'sequential' (2023: WM first)
    eval_sample: bool = True  # the 'eval' policy samples (both references do); False: mode

    @property
    def gamma(self) -> float:
        return 1.0 - 1.0 / self.discount_horizon

    def validate(self) -> None:
        choices = {
            "estimator": ac_math.ESTIMATORS,
            "prior": ("uniform", "normal"),
            "imag_cont": CONTS,
            "first_cont": FIRST_CONTS,
            "value_dist": ("symexp_twohot", "symlog_twohot"),
            "update": UPDATES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"dreamer.{name}={getattr(self, name)!r}; expected one of {allowed}"
                )
        if not 0.0 <= self.actor_unimix < 1.0:
            raise ValueError(f"dreamer.actor_unimix={self.actor_unimix}; must lie in [0, 1)")
        if self.prior == "normal" and self.prior_std <= 0:
            raise ValueError(f"dreamer.prior_std={self.prior_std}; must be positive")
        if self.horizon < 1:
            raise ValueError(f"dreamer.horizon={self.horizon}; must be >= 1")
        if self.discount_horizon < 1:
            raise ValueError(f"dreamer.discount_horizon={self.discount_horizon}; must be >= 1")
        if self.repval and self.update != "joint":
            raise ValueError(
                "dreamer.repval needs dreamer.update='joint' (its gradient reaches the world "
                "model and critic together); set dreamer.repval=false for 'sequential'"
            )


class Dreamer:
    """The Dreamer agent: ``init``, ``init_carry``, ``policy``, ``train``, ``openloop``."""

    def __init__(
        self,
        wm_cfg: WorldModelConfig,
        cfg: DreamerConfig,
        obs_shapes: ObsShapes,
        action_dim: int,
        opt: optim.OptimConfig | None = None,
        batch_size: int = 16,
        discrete: bool = False,
    ):
        cfg.validate()
        wm_cfg.validate()
        if discrete and cfg.estimator == "dynamics":
            raise ValueError(
                "dreamer.estimator=dynamics backpropagates through sampled actions, which "
                "one-hot categorical samples do not allow: use --dreamer.estimator reinforce "
                "for discrete actions"
            )
        if discrete and cfg.prior != "uniform":
            raise ValueError(
                f"dreamer.prior={cfg.prior!r} is a Normal over continuous actions; discrete "
                "actions take the uniform categorical prior: --dreamer.prior uniform"
            )
        self.discrete = discrete  # one-hot actions over action_dim classes
        opt = opt or optim.OptimConfig()
        self.cfg, self.wm_cfg, self.opt_cfg = cfg, wm_cfg, opt
        self.action_dim = action_dim
        self.obs_shapes = obs_shapes
        self.batch_size = batch_size
        cont_target = cfg.gamma if cfg.contdisc else 1.0
        self.wm = WorldModel(wm_cfg, obs_shapes, action_dim, cont_target)
        common = dict(
            norm=wm_cfg.norm,
            act=wm_cfg.act,
            dtype=wm_cfg.compute_dtype,
            bias=wm_cfg.bias,
            winit=wm_cfg.winit,
        )
        self.actor = ac_math.ActorHead(
            action_dim,
            discrete=discrete,
            layers=cfg.layers,
            units=cfg.units,
            minstd=cfg.minstd,
            maxstd=cfg.maxstd,
            outscale=cfg.outscale,
            unimix=cfg.actor_unimix,
            **common,
        )
        self.critic = rssm.Head(
            (), cfg.value_dist, cfg.layers, cfg.units, bins=cfg.value_bins, outscale=0.0, **common
        )
        self.opt = {k: optim.make(opt, k) for k in optim.MODULES}
        self.feat_size = wm_cfg.feat_size
        self.update = self._train  # uncompiled: the runner jits it with its shardings
        self.train = jax.jit(self._train, donate_argnums=0)
        # Compiled: run op by op, initialization takes about three times as long.
        self.init = jax.jit(self._init)
        self.policy = jax.jit(self._policy, static_argnums=4)
        self.openloop = jax.jit(self._openloop)

    # --- construction -------------------------------------------------------------------------

    def dummy_batch(self, batch: int = 1, length: int = 2) -> dict[str, Array]:
        context = zero_carry(self.wm, 1)["state"] if self.wm_cfg.replay_context else None
        return dummy_batch(self.obs_shapes, self.action_dim, batch, length, context)

    def _init(self, key: Array) -> AgentState:
        k_wm, k_wm2, k_actor, k_critic, k_state = jax.random.split(key, 5)
        feat = jnp.zeros((1, self.feat_size))
        params = {
            "wm": self.wm.init(k_wm, self.dummy_batch(), k_wm2, method=WorldModel.loss),
            "actor": self.actor.init(k_actor, feat),
            "critic": self.critic.init(k_critic, feat),
        }
        opt_state = {k: self.opt[k].init(v) for k, v in params.items()}
        slow = jax.tree.map(jnp.copy, params["critic"])  # own buffers: the state is donated
        return AgentState(
            params=params,
            opt_state=opt_state,
            # The critic's EMA copy (the slow critic) and the EMA of the return percentiles.
            aux={"slow_critic": slow, "retnorm": ac_math.returnnorm_init()},
            key=k_state,
            updates=jnp.zeros((), jnp.int32),
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

    def _policy(self, state: AgentState, carry, obs, key, mode: str):
        """Posterior step on o_t from the carried (h, s, a_{t-1}), then a_t ~ pi(. | h_t, s_t)
        ('explore'; 'eval' too with ``eval_sample``, else its mode), or uniform in [-1, 1]
        ('random', prefill). Actions are clipped to the box the environment accepts."""
        check_mode(mode)
        k1, k2 = jax.random.split(key)
        post = self.wm.apply(
            state.params["wm"], carry["state"], carry["action"], obs, k1, method=WorldModel.obs_step
        )
        if mode == "random":
            action = random_actions(k2, post["deter"].shape[0], self.action_dim, self.discrete)
        else:
            dist = self.actor.apply(state.params["actor"], rssm.features(post))
            sample = mode == "explore" or self.cfg.eval_sample
            action = ac_math.sample_action(dist, k2) if sample else ac_math.mode_action(dist)
        action = jnp.clip(action, -1.0, 1.0)
        return action, {"state": post, "action": action}

    # --- learning -----------------------------------------------------------------------------

    def imagine(self, wm_params, actor_params, start, key: Array, sample: bool = True):
        """Imagined states ``[N, H + 1]`` from ``start [N]`` and the actions ``[N, H + 1, A]``.

        actions[:, t] ~ pi(. | states[:, t]) (the mode if not ``sample``); states[:, t + 1] is the
        prior step from (states[:, t], actions[:, t]), which bounds the action to the box. The
        actor sees stopped features, so only the dynamics estimator's reparameterized actions
        carry gradients into the actor.
        """
        dynamics = self.cfg.estimator == "dynamics"

        def policy(s, k):
            dist = self.actor.apply(actor_params, sg(rssm.features(s)))
            a = ac_math.sample_action(dist, k) if sample else ac_math.mode_action(dist)
            return a if dynamics else sg(a)

        return self.wm.apply(
            wm_params, policy, start, self.cfg.horizon, key, method=WorldModel.imagine
        )

    def _imagination_losses(self, wm_p, params, state: AgentState, post, batch, key):
        """Actor and critic losses over trajectories imagined from every posterior state.

        ``wm_p`` carries no gradient. Returns (actor loss, critic loss, (metrics, retnorm,
        returns R_0 of each start ``[B * T]``)).
        """
        cfg = self.cfg
        k_img, k_kl = jax.random.split(key)
        start = jax.tree.map(lambda x: sg(x.reshape(-1, *x.shape[2:])), post)
        dynamics = cfg.estimator == "dynamics"
        with jax.named_scope("imagination"):
            traj, actions = self.imagine(wm_p, params["actor"], start, k_img)
            feat = rssm.features(traj)  # [N, H + 1, F]
            if not dynamics:
                feat = sg(feat)
            rew_dist, con_dist = self.wm.apply(wm_p, feat, method=WorldModel.heads)
            cont = con_dist.mean() if cfg.imag_cont == "prob" else (con_dist.mean() > 0.5)
            cont = cont.astype(jnp.float32)
            if cfg.first_cont == "data":
                first = 1.0 - batch["is_terminal"].reshape(-1).astype(jnp.float32)
                cont = jnp.concatenate([first[:, None], cont[:, 1:]], 1)
            # With contdisc the continue head already carries the discount.
            gamma = 1.0 if cfg.contdisc else cfg.gamma
            if dynamics or reference_active():
                values = self.critic.apply(sg(params["critic"]), feat).mean()  # v_0 .. v_H
                critic_dist = None
            else:
                # One critic pass serves both the returns (stopped) and the critic's own loss;
                # the features are stopped already, so the gradients are unchanged.
                critic_dist = self.critic.apply(params["critic"], feat)
                values = sg(critic_dist.mean())
            rewards = rew_dist.mean()[:, 1:]
            rets = ac_math.lambda_returns(rewards, cont[:, 1:], values, gamma, cfg.lam)
            weights = ac_math.discount_weights(cont, gamma)
            retnorm = ac_math.returnnorm_update(state.aux["retnorm"], sg(rets), cfg.retnorm_decay)
            scale = ac_math.returnnorm_scale(retnorm, cfg.retnorm_limit)
        with jax.named_scope("actor"):
            pi = self.actor.apply(params["actor"], sg(feat[:, :-1]))
            actor_loss, metrics = self._actor_loss(pi, actions, rets, values, weights, scale, k_kl)
        metrics.update(
            {
                "actor/imag_reward": rewards.mean(),
                "actor/imag_cont": cont[:, 1:].mean(),
                "actor/imag_return": rets.mean(),
                "actor/imag_weight": weights.mean(),
            }
        )
        with jax.named_scope("critic"):
            feat_c = sg(feat[:, :-1])
            slow_mean = self.critic.apply(state.aux["slow_critic"], feat_c).mean()
            if critic_dist is None:
                critic_dist = self.critic.apply(params["critic"], feat_c)
            else:
                critic_dist = type(critic_dist)(critic_dist.logits[:, :-1], critic_dist.bins)
            critic_loss, critic_metrics = ac_math.critic_loss(
                critic_dist,
                sg(rets),
                slow_mean,
                weights[:, :-1],
                cfg.slowreg,
            )
        metrics.update({f"critic/{k}": v for k, v in critic_metrics.items()})
        return actor_loss, critic_loss, (metrics, retnorm, sg(rets[:, 0]))

    def _actor_loss(self, pi, actions, rets, values, weights, scale, key):
        """``ac_math.actor_loss`` over s_0 .. s_{H-1} with this agent's settings."""
        cfg = self.cfg
        actor_loss, metrics = ac_math.actor_loss(
            pi,
            actions[:, :-1],
            rets,
            values[:, :-1],
            weights[:, :-1],
            scale,
            estimator=cfg.estimator,
            beta=cfg.actent,
            prior=self.action_prior(pi),
            key=key,
            entropy_range=self.actor.entropy_range(),
        )
        return actor_loss, {f"actor/{k}": v for k, v in metrics.items()}

    def _repval_loss(self, critic_p, state: AgentState, post, batch, boot):
        """The replay-value loss over the batch's posterior states ``[B, T]``: two-hot
        regression on ``ac_math.replay_returns`` (bootstrapped with the imagined returns
        ``boot [B, T]``), weighted by 1 - is_last, plus the slow-critic regularizer."""
        cfg = self.cfg
        feat = rssm.features(post)
        if not cfg.repval_grad:
            feat = sg(feat)
        # A step followed by an episode start ends its episode even where the episode was
        # abandoned without is_last (a run resumed mid-episode), as DreamerV3's replay marks.
        first = batch["is_first"].astype(bool)
        last = batch["is_last"].astype(bool) | jnp.pad(first[:, 1:], ((0, 0), (0, 1)))
        rets = ac_math.replay_returns(
            batch["reward"], last, batch["is_terminal"], boot, cfg.gamma, cfg.lam
        )
        feat = feat[:, :-1]
        weights = 1.0 - last[:, :-1].astype(jnp.float32)
        slow_mean = self.critic.apply(state.aux["slow_critic"], sg(feat)).mean()
        loss, metrics = ac_math.critic_loss(
            self.critic.apply(critic_p, feat), sg(rets), slow_mean, weights, cfg.slowreg
        )
        return loss, {f"repval/{k}": v for k, v in metrics.items()}

    def _train(self, state: AgentState, batch: dict):
        key = jax.random.split(state.key, 3)[0]
        grads, metrics, (retnorm, post, new_params, opt_state) = self._gradients(state, batch)
        if new_params is None:  # 'joint': every module steps on the gradients just taken
            new_params, opt_state = self._step(optim.MODULES, grads, state.opt_state, state.params)
        for name in optim.MODULES:
            metrics[f"{name}/grad_norm"] = optax.tree.norm(grads[name])
        rate = self.cfg.slow_rate
        if self.cfg.slow_copy_first:
            rate = jnp.where(state.updates == 0, 1.0, rate)
        new_state = state.replace(
            params=new_params,
            opt_state=opt_state,
            aux={
                "slow_critic": ac_math.ema_update(
                    state.aux["slow_critic"], new_params["critic"], rate
                ),
                "retnorm": retnorm,
            },
            key=key,
            updates=state.updates + 1,
        )
        return new_state, metrics, context_out(self.wm_cfg, post)

    def _gradients(self, state: AgentState, batch: dict):
        """Gradients of every module's loss, and the losses as metrics.

        Returns (grads {'wm', 'actor', 'critic'}, metrics, (retnorm, posterior states, new
        params, new optimizer states)); the last two are None for 'joint' (the caller steps)
        and hold the stepped modules for 'sequential', whose actor and critic gradients are
        taken after the world model's step.
        """
        cfg = self.cfg
        _, k_wm, k_ac = jax.random.split(state.key, 3)
        params = state.params
        start = start_state(self.wm_cfg, batch)
        b, t = batch["is_first"].shape

        def wm_loss(wm_p):
            with jax.named_scope("world_model"):
                return self.wm.apply(wm_p, batch, k_wm, start, method=WorldModel.loss)

        if cfg.update == "joint":

            def total_loss(p):
                loss_wm, (wm_metrics, post) = wm_loss(p["wm"])
                actor_l, critic_l, (metrics, retnorm, boot) = self._imagination_losses(
                    sg(p["wm"]), p, state, post, batch, k_ac
                )
                total = loss_wm + actor_l + critic_l
                metrics.update({f"wm/{k}": v for k, v in wm_metrics.items()})
                metrics.update({"wm/loss": loss_wm})
                if cfg.repval:
                    with jax.named_scope("replay_value"):
                        rep_l, rep_metrics = self._repval_loss(
                            p["critic"], state, post, batch, boot.reshape(b, t)
                        )
                    total = total + cfg.repval_scale * rep_l
                    metrics.update(rep_metrics)
                return total, (metrics, retnorm, post)

            (_, (metrics, retnorm, post)), grads = jax.value_and_grad(total_loss, has_aux=True)(
                params
            )
            return grads, metrics, (retnorm, post, None, None)

        # 'sequential': the world model first, then imagination with the updated one.
        (loss_wm, (wm_metrics, post)), g_wm = jax.value_and_grad(wm_loss, has_aux=True)(
            params["wm"]
        )
        new_params, opt_state = self._step(("wm",), {"wm": g_wm}, state.opt_state, params)
        new_wm = new_params["wm"]

        def ac_loss(p):
            actor_l, critic_l, aux = self._imagination_losses(
                sg(new_wm), p, state, sg(post), batch, k_ac
            )
            return actor_l + critic_l, aux

        ac_params = {k: params[k] for k in ("actor", "critic")}
        (_, (metrics, retnorm, _)), g_ac = jax.value_and_grad(ac_loss, has_aux=True)(ac_params)
        metrics.update({f"wm/{k}": v for k, v in wm_metrics.items()})
        metrics.update({"wm/loss": loss_wm})
        ac_new, ac_opt = self._step(("actor", "critic"), g_ac, state.opt_state, params)
        new_params, opt_state = {**new_params, **ac_new}, {**opt_state, **ac_opt}
        return {"wm": g_wm, **g_ac}, metrics, (retnorm, post, new_params, opt_state)

    def _step(self, names, grads, opt_state, params):
        """One optimizer step of the named modules: (new params, new optimizer states)."""
        new_params, new_opt = {}, {}
        with jax.named_scope("optimizer"):
            for name in names:
                updates, new_opt[name] = self.opt[name].update(
                    grads[name], opt_state[name], params[name]
                )
                new_params[name] = optax.apply_updates(params[name], updates)
        return new_params, new_opt

    def _openloop(self, state: AgentState, batch, key):
        return self.wm.apply(state.params["wm"], batch, key, method=WorldModel.openloop)
