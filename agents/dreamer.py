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

The losses are one dict, {'wm', 'actor', 'critic', 'repval'}, with one dict of scales of the
same keys (``DreamerConfig.loss_scales``), summed once (as DreamerV3's agent.py). ``update='joint'``
(2024) takes one gradient of that sum at the current parameters (the world model also receives
the replay-value loss's gradient when ``repval_grad``); ``update='sequential'`` (the 2023 code)
first updates the world model on its loss, then imagines with the updated one for the sum of
the actor's and critic's. Metrics are named '<loss>/<name>' in one place (``_metrics``).
"""

from __future__ import annotations

import functools
import operator
from typing import Any, NamedTuple

import distrax
import jax
import jax.numpy as jnp
import optax

import rssm
from agents import ac_math, optim
from agents.contract import AgentState, Batch, ObsShapes, check_mode, random_actions
from agents.dreamer_config import DreamerConfig
from agents.model_based import WorldModelAgent, context_out, start_state
from agents.world_model import WorldModel, WorldModelConfig
from rssm.reference import reference_active

Array = jax.Array
Metrics = dict[str, Array]
sg = jax.lax.stop_gradient


class Gradients(NamedTuple):
    """What one update computes, whichever its order ('joint' or 'sequential')."""

    params: dict[str, Any]  # every module after its optimizer step
    opt_state: dict[str, Any]  # their optimizer states after it
    grads: dict[str, Any]  # the gradient each module ('wm', 'actor', 'critic') stepped on
    metrics: Metrics  # '<loss>/<name>'
    retnorm: ac_math.ReturnNorm  # the return normalizer after this batch's returns
    post: rssm.State  # the posterior states of the batch, [B, T]


class Rollout(NamedTuple):
    """Trajectories imagined from N start states and what the losses need of them."""

    feat: Array  # features of s_0 .. s_H, [N, H + 1, F] (stopped unless 'dynamics')
    actions: Array  # a_0 .. a_H, [N, H + 1, A]
    rewards: Array  # r_1 .. r_H, [N, H]
    cont: Array  # c_0 .. c_H, [N, H + 1]
    values: Array  # v_0 .. v_H, [N, H + 1]
    critic: Any  # the critic's distribution at s_0 .. s_H (None where it is not reused)
    returns: Array  # R_0 .. R_{H-1}, [N, H]
    weights: Array  # w_0 .. w_H, [N, H + 1]
    retnorm: ac_math.ReturnNorm
    scale: Array  # S, []


class Dreamer(WorldModelAgent):
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
        cont_target = cfg.gamma if cfg.contdisc else 1.0
        super().__init__(wm_cfg, obs_shapes, action_dim, batch_size, discrete, cont_target)
        cfg.check_actions(discrete)
        opt = opt or optim.OptimConfig()
        self.cfg, self.opt_cfg = cfg, opt
        common = wm_cfg.net_kwargs
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
        self._compile()

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

    def action_prior(self, like: distrax.Distribution) -> Any:
        """The action prior of the entropy bonus, for policies shaped as ``like``."""
        if self.cfg.prior == "uniform":
            return ac_math.UNIFORM
        shape = tuple(like.batch_shape) + tuple(like.event_shape)
        base = distrax.Normal(
            jnp.full(shape, self.cfg.prior_mean), jnp.full(shape, self.cfg.prior_std)
        )
        return distrax.Independent(base, len(like.event_shape))

    # --- acting -------------------------------------------------------------------------------

    def _policy(
        self, state: AgentState, carry: dict, obs: dict, key: Array, mode: str
    ) -> tuple[Array, dict[str, Any]]:
        """Posterior step on o_t from the carried (h, s, a_{t-1}), then a_t ~ pi(. | h_t, s_t)
        ('explore'; 'eval' too with ``eval_sample``, else its mode), or uniform in [-1, 1]
        ('random', prefill). Actions are clipped to the box the environment accepts."""
        check_mode(mode)
        k1, k2 = jax.random.split(key)
        post = self.observe_step(state, carry, obs, k1)
        if mode == "random":
            action = random_actions(k2, post["deter"].shape[0], self.action_dim, self.discrete)
        else:
            dist = self.actor.apply(state.params["actor"], rssm.features(post))
            sample = mode == "explore" or self.cfg.eval_sample
            action = ac_math.sample_action(dist, k2) if sample else ac_math.mode_action(dist)
        action = jnp.clip(action, -1.0, 1.0)
        return action, {"state": post, "action": action}

    # --- imagination --------------------------------------------------------------------------

    def imagine(
        self, wm_params: Any, actor_params: Any, start: Any, key: Array, sample: bool = True
    ) -> tuple[Any, Array]:
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

    def _rollout(
        self, wm_p: Any, params: dict, state: AgentState, post: Any, batch: Batch, key: Array
    ) -> Rollout:
        """Trajectories imagined from every posterior state (``[B * T]`` starts, stopped), their
        rewards, continues, values, lambda-returns, weights and return scale.

        ``wm_p`` carries no gradient; ``params`` holds the actor's and the critic's.
        """
        cfg = self.cfg
        start = jax.tree.map(lambda x: sg(x.reshape(-1, *x.shape[2:])), post)
        dynamics = cfg.estimator == "dynamics"
        traj, actions = self.imagine(wm_p, params["actor"], start, key)
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
        return Rollout(
            feat, actions, rewards, cont, values, critic_dist, rets, weights, retnorm, scale
        )

    # --- losses -------------------------------------------------------------------------------

    def _imagination_losses(
        self, wm_p: Any, params: dict, state: AgentState, post: Any, batch: Batch, key: Array
    ) -> tuple[dict[str, Array], dict[str, Metrics], ac_math.ReturnNorm, Array]:
        """The actor's and the critic's losses over trajectories imagined from every posterior
        state (``_rollout``). Returns ({'actor', 'critic'}, their metrics, the return
        normalizer, the returns R_0 of each start ``[B * T]``)."""
        k_img, k_kl = jax.random.split(key)
        with jax.named_scope("imagination"):
            r = self._rollout(wm_p, params, state, post, batch, k_img)
        with jax.named_scope("actor"):
            pi = self.actor.apply(params["actor"], sg(r.feat[:, :-1]))
            actor_loss, actor_metrics = ac_math.actor_loss(
                pi,
                r.actions[:, :-1],
                r.returns,
                r.values[:, :-1],
                r.weights[:, :-1],
                r.scale,
                estimator=self.cfg.estimator,
                beta=self.cfg.actent,
                prior=self.action_prior(pi),
                key=k_kl,
                entropy_range=self.actor.entropy_range(),
            )
        actor_metrics.update(
            imag_reward=r.rewards.mean(),
            imag_cont=r.cont[:, 1:].mean(),
            imag_return=r.returns.mean(),
            imag_weight=r.weights.mean(),
        )
        with jax.named_scope("critic"):
            feat = sg(r.feat[:, :-1])
            slow_mean = self.critic.apply(state.aux["slow_critic"], feat).mean()
            if r.critic is None:
                critic_dist = self.critic.apply(params["critic"], feat)
            else:
                critic_dist = type(r.critic)(r.critic.logits[:, :-1], r.critic.bins)
            critic_loss, critic_metrics = ac_math.critic_loss(
                critic_dist, sg(r.returns), slow_mean, r.weights[:, :-1], self.cfg.slowreg
            )
        losses = {"actor": actor_loss, "critic": critic_loss}
        metrics = {"actor": actor_metrics, "critic": critic_metrics}
        return losses, metrics, r.retnorm, sg(r.returns[:, 0])

    def _repval_loss(
        self, critic_p: Any, state: AgentState, post: Any, batch: Batch, boot: Array
    ) -> tuple[Array, Metrics]:
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
        return ac_math.critic_loss(
            self.critic.apply(critic_p, feat), sg(rets), slow_mean, weights, cfg.slowreg
        )

    def _wm_loss(
        self, wm_p: Any, batch: Batch, key: Array, start: Any
    ) -> tuple[Array, tuple[Metrics, Any]]:
        """The world model's loss (``WorldModel.loss``): (loss, (metrics, posterior))."""
        with jax.named_scope("world_model"):
            return self.wm.apply(wm_p, batch, key, start, method=WorldModel.loss)

    def _total(self, losses: dict[str, Array]) -> Array:
        """sum_k scale_k loss_k over ``losses``, in their order (``DreamerConfig.loss_scales``)."""
        scales = self.cfg.loss_scales
        return functools.reduce(operator.add, [scales[k] * v for k, v in losses.items()])

    def _joint_loss(
        self, params: dict, state: AgentState, batch: Batch, k_wm: Array, k_ac: Array
    ) -> tuple[Array, tuple[dict[str, Array], dict[str, Metrics], Any, Any]]:
        """The scaled sum of every loss at ``params`` ('joint'); the actor and critic see the
        world model stopped. Aux: (losses, metrics by loss, return normalizer, posterior)."""
        loss_wm, (wm_metrics, post) = self._wm_loss(
            params["wm"], batch, k_wm, start_state(self.wm_cfg, batch)
        )
        ac_losses, metrics, retnorm, boot = self._imagination_losses(
            sg(params["wm"]), params, state, post, batch, k_ac
        )
        losses = {"wm": loss_wm, **ac_losses}
        metrics = {"wm": wm_metrics, **metrics}
        if self.cfg.repval:
            with jax.named_scope("replay_value"):
                losses["repval"], metrics["repval"] = self._repval_loss(
                    params["critic"], state, post, batch, boot.reshape(batch["is_first"].shape)
                )
        return self._total(losses), (losses, metrics, retnorm, post)

    # --- learning -----------------------------------------------------------------------------

    def _gradients(self, state: AgentState, batch: Batch, k_wm: Array, k_ac: Array) -> Gradients:
        """Every module's gradient and optimizer step, and the losses as metrics.

        'joint': one gradient of the scaled sum of all losses, then every module steps.
        'sequential': the world model's gradient and step first; then the actor's and critic's
        gradients of their losses in imagination with the stepped world model, and their steps.
        """
        if self.cfg.update == "joint":
            loss = jax.value_and_grad(self._joint_loss, has_aux=True)
            (_, (losses, metrics, retnorm, post)), grads = loss(
                state.params, state, batch, k_wm, k_ac
            )
            params, opt_state = optim.step(self.opt, grads, state.opt_state, state.params)
            return Gradients(
                params, opt_state, grads, _metrics(losses, metrics, grads), retnorm, post
            )
        start = start_state(self.wm_cfg, batch)
        wm_loss = jax.value_and_grad(self._wm_loss, has_aux=True)
        (loss_wm, (wm_metrics, post)), g_wm = wm_loss(state.params["wm"], batch, k_wm, start)
        params, opt_state = optim.step(self.opt, {"wm": g_wm}, state.opt_state, state.params)
        new_wm = params["wm"]

        def ac_loss(p):
            losses, metrics, retnorm, _ = self._imagination_losses(
                sg(new_wm), p, state, sg(post), batch, k_ac
            )
            return self._total(losses), (losses, metrics, retnorm)

        ac_params = {k: state.params[k] for k in ("actor", "critic")}
        (_, (losses, metrics, retnorm)), g_ac = jax.value_and_grad(ac_loss, has_aux=True)(ac_params)
        ac_new, ac_opt = optim.step(self.opt, g_ac, state.opt_state, state.params)
        params, opt_state = {**params, **ac_new}, {**opt_state, **ac_opt}
        grads = {"wm": g_wm, **g_ac}
        losses, metrics = {"wm": loss_wm, **losses}, {"wm": wm_metrics, **metrics}
        return Gradients(params, opt_state, grads, _metrics(losses, metrics, grads), retnorm, post)

    def _train(self, state: AgentState, batch: Batch) -> tuple[AgentState, Metrics, dict]:
        key, k_wm, k_ac = jax.random.split(state.key, 3)
        out = self._gradients(state, batch, k_wm, k_ac)
        rate = self.cfg.slow_rate
        if self.cfg.slow_copy_first:
            rate = jnp.where(state.updates == 0, 1.0, rate)
        slow = ac_math.ema_update(state.aux["slow_critic"], out.params["critic"], rate)
        new_state = state.replace(
            params=out.params,
            opt_state=out.opt_state,
            aux={"slow_critic": slow, "retnorm": out.retnorm},
            key=key,
            updates=state.updates + 1,
        )
        return new_state, out.metrics, context_out(self.wm_cfg, out.post)


def _metrics(
    losses: dict[str, Array], metrics: dict[str, Metrics], grads: dict[str, Any]
) -> Metrics:
    """The one place metrics get their names: '<loss>/<name>' for each loss's metrics, the
    world model's loss as 'wm/loss' (the actor's and critic's name themselves), and
    '<module>/grad_norm'."""
    groups = {name: dict(values) for name, values in metrics.items()}
    groups["wm"]["loss"] = losses["wm"]
    for name, grad in grads.items():
        groups.setdefault(name, {})["grad_norm"] = optax.tree.norm(grad)
    return {f"{group}/{k}": v for group, values in groups.items() for k, v in values.items()}
