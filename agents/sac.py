"""SAC: maximum-entropy RL as RL regularized by a KL to an action prior.

Soft actor-critic (Haarnoja et al. 2018, with the automatic temperature of the second paper)
maximizes E[sum_t gamma^t (r_t - alpha KL(pi(.|s_t) || prior))]. With the uniform prior on the
action box [-1, 1]^A, KL(pi || U) = E_pi[log pi(a|s)] + A log 2 = A log 2 - H(pi(.|s)), so the
bonus is SAC's entropy bonus up to a constant; any distrax distribution on the box as the prior
gives a KL-regularized objective instead.

- Policy: a = tanh(u), u ~ N(mu(s), sigma(s)), with the log-det-Jacobian correction
  log pi(a|s) = log N(u) - sum_i log(1 - tanh(u_i)^2): its support is the box, so the KL to the
  uniform prior is finite and >= 0.
- Critics: twin Q networks, targets y = r + gamma (1 - terminal) (min_j Q'_j(s', a') - alpha
  KL-term(s', a')) with a' ~ pi(.|s') and Polyak-averaged target critics Q'.
- Temperature: alpha is a Lagrange multiplier holding the policy's entropy at a target (-A by
  default): loss -log alpha * sg(log pi(a|s) + target), i.e. a constraint on the KL to U.

Batches are replay windows ``[B, T >= 2]``: each row's first two steps make the transition
(o_t, a_t = action[:, 1], r_{t+1} = reward[:, 1], terminal, o_{t+1}); a row whose second step
starts a new episode is masked out. Proprioceptive ('vector') observations only.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from agents import ac_math, optim
from agents.contract import AgentState, Batch, CompiledAgent, ObsShapes, check_mode, random_actions

Array = jax.Array
sg = jax.lax.stop_gradient
PRIORS = ("uniform", "tanh_normal")
# The tanh-normal prior's density needs atanh(a), infinite at a = +-1, where a float32 sample of
# tanh saturates: actions are clipped this far inside the box before it.
ATANH_MARGIN = 1e-6


@dataclasses.dataclass(frozen=True)
class SacConfig:
    """SAC hyperparameters; defaults are the SAC papers' (and jaxrl's) for DMC states."""

    units: int = 256  # hidden width of actor and critics
    layers: int = 2  # hidden layers of actor and critics
    lr: float = 3e-4  # Adam learning rate of actor, critics and temperature
    gamma: float = 0.99  # discount
    tau: float = 0.005  # Polyak rate of the target critics
    # 1.0 as the SAC papers and jaxrl. pytorch_sac's DMC value 0.1 reached 829/857
    # (cartpole-swingup) and 725/549 (walker-walk) at 100k steps over 2 seeds here, against 705
    # and 783 with 1.0 (benchmarks/results/learning_sac*).
    init_alpha: float = 1.0  # initial temperature (0.1: pytorch_sac's DMC value, README)
    target_entropy: float = 0.0  # entropy target; 0 means -A (the number of action dims)
    log_std_min: float = -10.0  # lower bound of the pre-tanh Gaussian's log std
    log_std_max: float = 2.0  # upper bound of the pre-tanh Gaussian's log std
    prior: str = "uniform"  # action prior: 'uniform' (standard SAC) or 'tanh_normal'
    prior_std: float = 0.3  # 'tanh_normal' prior: tanh(N(0, prior_std)) per dimension

    def validate(self) -> None:
        if self.prior not in PRIORS:
            raise ValueError(f"sac.prior={self.prior!r}; expected one of {PRIORS}")
        for name in ("units", "layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"sac.{name}={getattr(self, name)}; must be >= 1")
        if not 0 < self.tau <= 1 or not 0 <= self.gamma < 1:
            raise ValueError(
                f"sac.tau={self.tau}, sac.gamma={self.gamma}; need 0 < tau <= 1 and 0 <= gamma < 1"
            )
        if self.lr <= 0 or self.init_alpha <= 0 or self.prior_std <= 0:
            raise ValueError("sac.lr, sac.init_alpha and sac.prior_std must be positive")


def squashed_normal(mean: Array, std: Array) -> distrax.Distribution:
    """a = tanh(u), u ~ N(mean, diag(std^2)); log_prob includes the log-det of tanh."""
    base = distrax.MultivariateNormalDiag(mean, std)
    return distrax.Transformed(base, distrax.Block(distrax.Tanh(), 1))


def uniform_log_prob(action: Array) -> Array:
    """log U[-1, 1]^A (a) = -A log 2 for actions inside the box, ``[...]``."""
    return jnp.full(action.shape[:-1], -action.shape[-1] * math.log(2.0))


class MLP(nn.Module):
    units: int
    layers: int
    out: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        for _ in range(self.layers):
            x = nn.relu(nn.Dense(self.units)(x))
        return nn.Dense(self.out)(x)


class Actor(nn.Module):
    action_dim: int
    units: int
    layers: int
    log_std_min: float
    log_std_max: float

    @nn.compact
    def __call__(self, obs: Array) -> distrax.Distribution:
        out = MLP(self.units, self.layers, 2 * self.action_dim)(obs)
        mean, log_std = jnp.split(out, 2, -1)
        # tanh keeps the log std inside its bounds smoothly (jaxrl, SAC v2 implementations).
        lo, hi = self.log_std_min, self.log_std_max
        log_std = lo + 0.5 * (hi - lo) * (jnp.tanh(log_std) + 1)
        return squashed_normal(mean, jnp.exp(log_std))


class TwinCritic(nn.Module):
    units: int
    layers: int

    @nn.compact
    def __call__(self, obs: Array, action: Array) -> Array:
        """Q_1, Q_2 at (s, a): ``[2, ...]``."""
        x = jnp.concatenate([obs, action], -1)
        make = nn.vmap(
            MLP,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=None,
            out_axes=0,
            axis_size=2,
        )
        return make(self.units, self.layers, 1)(x)[..., 0]


class SAC(CompiledAgent):
    """The SAC agent with the runner's interface: init, init_carry, policy, train."""

    def __init__(
        self, cfg: SacConfig, obs_shapes: ObsShapes, action_dim: int, discrete: bool = False
    ):
        cfg.validate()
        if discrete:
            raise ValueError(
                "agent sac has a tanh-Gaussian policy over a box of actions; this task has "
                "discrete actions: use --agent dreamer"
            )
        names = [name for name, _ in obs_shapes]
        if names != ["vector"]:
            raise ValueError(
                f"agent sac learns from proprioceptive observations only; got {names}: use "
                "--obs proprio"
            )
        self.cfg, self.action_dim = cfg, action_dim
        self.discrete = False
        self.obs_shapes = obs_shapes
        self.obs_dim = int(dict(obs_shapes)["vector"][0])
        self.target_entropy = cfg.target_entropy or -float(action_dim)
        self.actor = Actor(action_dim, cfg.units, cfg.layers, cfg.log_std_min, cfg.log_std_max)
        self.critic = TwinCritic(cfg.units, cfg.layers)
        adam = optax.adam(cfg.lr)
        self.opt = {"actor": adam, "critic": adam, "alpha": adam}
        self._compile()

    def prior_log_prob(self, action: Array) -> Array:
        """log prior(a), ``[...]``, for actions ``[..., A]`` in the box."""
        if self.cfg.prior == "uniform":
            return uniform_log_prob(action)
        zeros = jnp.zeros(action.shape)
        prior = squashed_normal(zeros, jnp.full(action.shape, self.cfg.prior_std))
        return prior.log_prob(jnp.clip(action, -1 + ATANH_MARGIN, 1 - ATANH_MARGIN))

    def prior_log_ratio(self, pi: distrax.Distribution, key: Array) -> tuple[Array, Array, Array]:
        """(a ~ pi, log pi(a), log pi(a) - log prior(a)), each ``[...]``: the last is the
        one-sample log-ratio, an unbiased estimate of KL(pi || prior) (not a KL: it can be
        negative)."""
        action, log_pi = pi.sample_and_log_prob(seed=key)
        return action, log_pi, log_pi - self.prior_log_prob(action)

    def _init(self, key: Array) -> AgentState:
        """params {'actor', 'critic', 'alpha': log temperature []}; aux {'target_critic'}."""
        k1, k2, k3 = jax.random.split(key, 3)
        obs, act = jnp.zeros((1, self.obs_dim)), jnp.zeros((1, self.action_dim))
        params = {
            "actor": self.actor.init(k1, obs),
            "critic": self.critic.init(k2, obs, act),
            "alpha": jnp.asarray(math.log(self.cfg.init_alpha), jnp.float32),
        }
        target = jax.tree.map(jnp.copy, params["critic"])
        return AgentState(
            params=params,
            opt_state={k: self.opt[k].init(v) for k, v in params.items()},
            aux={"target_critic": target},
            key=k3,
            updates=jnp.zeros((), jnp.int32),
        )

    def init_carry(self, num_envs: int) -> dict[str, Any]:
        """No recurrent state: ``{'state': {}, 'action': zeros [N, A]}``."""
        return {"state": {}, "action": jnp.zeros((num_envs, self.action_dim))}

    def _policy(
        self, state: AgentState, carry: dict, obs: dict, key: Array, mode: str
    ) -> tuple[Array, dict[str, Any]]:
        """'explore': a ~ pi(.|s); 'eval': tanh of the Gaussian's mean; 'random': uniform."""
        check_mode(mode)
        x = obs["vector"].astype(jnp.float32)
        if mode == "random":
            action = random_actions(key, x.shape[0], self.action_dim)
        else:
            pi = self.actor.apply(state.params["actor"], x)
            greedy = jnp.tanh(pi.distribution.mean())
            action = pi.sample(seed=key) if mode == "explore" else greedy
        action = jnp.clip(action, -1.0, 1.0)
        return action, {"state": {}, "action": action}

    def _target(self, state: AgentState, tr: Transitions, alpha: Array, key: Array) -> Array:
        """The critics' target y = r + gamma c (min_j Q'_j(s', a') - alpha (log pi(a'|s') -
        log prior(a'))) with a' ~ pi(.|s'), stop-gradient ``[B]``."""
        pi_next = self.actor.apply(state.params["actor"], tr.nxt)
        a_next, _, ratio_next = self.prior_log_ratio(pi_next, key)
        q_next = self.critic.apply(state.aux["target_critic"], tr.nxt, a_next).min(0)
        return sg(tr.reward + self.cfg.gamma * tr.cont * (q_next - alpha * ratio_next))

    def _train(self, state: AgentState, batch: Batch) -> tuple[AgentState, dict, dict]:
        key, k_next, k_pi = jax.random.split(state.key, 3)
        tr = transitions(batch)
        count = jnp.maximum(tr.mask.sum(), 1.0)
        mean = lambda x: (tr.mask * x).sum() / count
        alpha = jnp.exp(state.params["alpha"])
        target = self._target(state, tr, alpha, k_next)

        def critic_loss(p):
            q = self.critic.apply(p, tr.obs, tr.action)
            return mean(((q - target) ** 2).sum(0)), q

        def actor_loss(p):
            a, log_pi, ratio = self.prior_log_ratio(self.actor.apply(p, tr.obs), k_pi)
            q = self.critic.apply(state.params["critic"], tr.obs, a).min(0)
            return mean(alpha * ratio - q), (log_pi, ratio)

        (c_loss, q), c_grad = jax.value_and_grad(critic_loss, has_aux=True)(state.params["critic"])
        (a_loss, (log_pi, ratio)), a_grad = jax.value_and_grad(actor_loss, has_aux=True)(
            state.params["actor"]
        )
        entropy = -mean(sg(log_pi))  # one-sample estimate of H(pi(.|s)), averaged over s

        def alpha_loss(log_alpha):
            # Gradient H - target: alpha falls while the entropy exceeds its target.
            return log_alpha * sg(entropy - self.target_entropy)

        al_loss, al_grad = jax.value_and_grad(alpha_loss)(state.params["alpha"])
        grads = {"actor": a_grad, "critic": c_grad, "alpha": al_grad}
        new_params, opt_state = optim.step(self.opt, grads, state.opt_state, state.params)
        # Polyak averaging: Q' <- (1 - tau) Q' + tau Q.
        target_critic = ac_math.ema_update(
            state.aux["target_critic"], new_params["critic"], self.cfg.tau
        )
        losses = {"critic": c_loss, "actor": a_loss, "alpha": al_loss}
        metrics = _metrics(losses, alpha, mean(q.mean(0)), entropy, mean(sg(ratio)))
        new_state = state.replace(
            params=new_params,
            opt_state=opt_state,
            aux={"target_critic": target_critic},
            key=key,
            updates=state.updates + 1,
        )
        return new_state, metrics, {}


class Transitions(NamedTuple):
    """The transitions of a batch ``[B, T >= 2]``: each row's first two steps, ``[B, ...]``."""

    obs: Array  # o_t
    action: Array  # a_t, executed in o_t
    reward: Array  # r_{t+1}
    cont: Array  # 1 - terminal_{t+1}
    nxt: Array  # o_{t+1}
    mask: Array  # 1 where both steps lie in one episode, 0 where the second starts a new one


def transitions(batch: Batch) -> Transitions:
    """(o_t, a_t, r_{t+1}, 1 - terminal_{t+1}, o_{t+1}, mask) from each row's first two steps."""
    return Transitions(
        obs=batch["vector"][:, 0].astype(jnp.float32),
        action=batch["action"][:, 1],
        reward=batch["reward"][:, 1],
        cont=1.0 - batch["is_terminal"][:, 1].astype(jnp.float32),
        nxt=batch["vector"][:, 1].astype(jnp.float32),
        mask=1.0 - batch["is_first"][:, 1].astype(jnp.float32),
    )


def _metrics(
    losses: dict[str, Array], alpha: Array, q: Array, entropy: Array, ratio: Array
) -> dict[str, Array]:
    """The update's metrics, 'sac/<name>'."""
    metrics = {f"{name}_loss": loss for name, loss in losses.items()}
    metrics.update(
        alpha=alpha,
        q=q,
        policy_entropy=entropy,
        # log pi(a) - log prior(a) at one sample per state: an unbiased estimate of the KL to
        # the prior, not a KL itself (a batch of it can fall below zero).
        prior_log_ratio=ratio,
    )
    return {f"sac/{k}": v for k, v in metrics.items()}
