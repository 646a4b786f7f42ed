"""PlaNet: model-predictive control by the cross-entropy method over the RSSM prior.

Acting, one step (Hafner et al. 2019, Algorithm 2), replanned from scratch every step:

1. Filter: posterior step on o_t from the carried (h_{t-1}, s_{t-1}, a_{t-1}).
2. Plan: CEM over action sequences a_{t:t+H} ~ N(mu, sigma^2), clipped to [-1, 1]. Each of the
   J candidates is scored by rolling the prior forward from the posterior state,

       R(a_{t:t+H}) = sum_{k=0}^{H-1} E[r | h_{t+k+1}, s_{t+k+1}],
       s_{t+k+1} ~ p(s | h_{t+k+1}),  h_{t+k+1} = f(h_{t+k}, s_{t+k}, a_{t+k}),

   and (mu, sigma) is refitted to the mean and standard deviation of the top-k candidates.
3. Act: a_t = mu_0 of the final fit (plus Gaussian exploration noise while collecting).
   Only mu_0 is used; the whole plan is discarded and made afresh at t + 1.

Returns are the plain sum of predicted rewards, as in PlaNet: no discount and no weighting by the
continue head. On the dm-control tasks PlaNet targets episodes never terminate, so the continue
head carries no information there; a planner for terminating tasks would multiply each reward by
the product of the predicted continue probabilities before it.

The world model is trained alone on the negative ELBO, exactly as by ``RandomAgent``; only the
policy differs. The planner touches the model only through ``img_step`` and the reward head, so
it works with either latent family (Gaussian or categorical).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

import rssm
from agents import optim
from agents.baselines import RandomAgent
from agents.contract import AgentState, ObsShapes, check_mode, random_actions
from agents.world_model import WorldModel, WorldModelConfig

Array = jax.Array
State = dict[str, Array]
ScoreFn = Callable[..., Array]


@dataclasses.dataclass(frozen=True)
class PlanetConfig:
    """CEM planner hyperparameters; the defaults are PlaNet's (Hafner et al. 2019)."""

    horizon: int = 12  # planning horizon H (imagined steps per candidate)
    candidates: int = 1000  # action sequences J sampled per CEM iteration
    top_k: int = 100  # elite sequences K the belief is refitted to
    iterations: int = 10  # CEM iterations I
    explore_noise: float = 0.3  # std of Gaussian noise added to the action while collecting

    def validate(self) -> None:
        for name in ("horizon", "candidates", "top_k", "iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"planet.{name}={getattr(self, name)}; must be >= 1")
        if self.top_k > self.candidates:
            raise ValueError(
                f"planet.top_k={self.top_k} exceeds planet.candidates={self.candidates}; "
                "lower top_k or raise candidates"
            )
        if self.explore_noise < 0:
            raise ValueError(f"planet.explore_noise={self.explore_noise}; must be >= 0")


# --- the cross-entropy method ------------------------------------------------------------------


def cem_plan(
    score_fn: ScoreFn,
    mean0: Array,
    std0: Array,
    key: Array,
    iterations: int = 10,
    candidates: int = 1000,
    top_k: int = 100,
    action_low: float = -1.0,
    action_high: float = 1.0,
    keyed: bool = False,
) -> tuple[Array, dict[str, Array]]:
    """Cross-entropy method over action sequences; pure and jit-able (one ``lax.scan``).

    Iteration i, from the belief N(mu_i, diag(sigma_i^2)) over sequences ``[H, A]``:

        a^j = clip(mu_i + sigma_i * eps^j, low, high),  eps^j ~ N(0, I),  j = 1..J
        E   = indices of the top_k largest score_fn(a^1..a^J)
        mu_{i+1} = mean_{j in E} a^j,   sigma_{i+1} = std_{j in E} a^j   (population std)

    Args:
      score_fn: ``action_seqs [J, H, A] -> returns [J]`` (higher is better); with ``keyed`` it
        is called as ``score_fn(action_seqs, key)`` with a fresh key every iteration, for
        stochastic scores such as sampled model rollouts.
      mean0, std0: the initial belief, ``[H, A]`` each (PlaNet: zeros and ones).
      key: PRNG key; the same key gives the same plan.
      iterations, candidates, top_k: I, J and K above.
      action_low, action_high: bounds the samples are clipped to.
    Returns:
      (mu_I ``[H, A]``, info) with info ``{'std': sigma_I [H, A], 'best_score': [I] the best
      score of each iteration's samples, 'elite_score': [I] the mean score of each elite set}``.
    """
    mean0 = jnp.asarray(mean0, jnp.float32)
    std0 = jnp.asarray(std0, jnp.float32)
    _check_cem(mean0, std0, iterations, candidates, top_k, action_low, action_high)

    def step(belief: tuple[Array, Array], k: Array):
        mean, std = belief
        k_sample, k_score = jax.random.split(k)
        eps = jax.random.normal(k_sample, (candidates, *mean.shape), mean.dtype)
        seqs = jnp.clip(mean + std * eps, action_low, action_high)
        scores = score_fn(seqs, k_score) if keyed else score_fn(seqs)
        if scores.shape != (candidates,):
            raise ValueError(
                f"score_fn returned shape {scores.shape}; expected ({candidates},), one score "
                "per action sequence"
            )
        elite_scores, idx = jax.lax.top_k(scores, top_k)
        elite = seqs[idx]
        info = {"best_score": elite_scores[0], "elite_score": elite_scores.mean()}
        return (elite.mean(0), elite.std(0)), info

    keys = jax.random.split(key, iterations)
    (mean, std), info = jax.lax.scan(step, (mean0, std0), keys)
    return mean, {"std": std, **info}


def _check_cem(
    mean0: Array,
    std0: Array,
    iterations: int,
    candidates: int,
    top_k: int,
    action_low: float,
    action_high: float,
) -> None:
    """Rejects a belief that is not two ``[H, A]`` arrays and counts or bounds out of range."""
    if mean0.ndim != 2 or mean0.shape != std0.shape:
        raise ValueError(
            f"mean0 {mean0.shape} and std0 {std0.shape} must both be [H, A] of one shape"
        )
    if not 1 <= top_k <= candidates:
        raise ValueError(f"top_k={top_k} must lie in [1, candidates={candidates}]")
    if iterations < 1:
        raise ValueError(f"iterations={iterations}; must be >= 1")
    if not action_low < action_high:
        raise ValueError(f"action_low={action_low} must be below action_high={action_high}")


# --- scoring by the world model ----------------------------------------------------------------


def rssm_returns(
    wm: WorldModel, wm_params: Any, start_state: State, action_seqs: Array, key: Array
) -> Array:
    """Sum of predicted rewards along prior rollouts from one state, one per action sequence.

        R^j = sum_{t=0}^{H-1} E[r | h_{t+1}, s_{t+1}],
        (h_{t+1}, s_{t+1}) = img_step(h_t, s_t, a^j_t)

    with (h_0, s_0) = ``start_state`` and s_{t+1} sampled from the prior (independently for every
    candidate and step). The reward of a_t is the one predicted on arriving in s_{t+1}, as in the
    training batches. No discount, no continue weighting (see the module docstring).

    Args:
      wm, wm_params: the world model and its parameters.
      start_state: the state of one environment, unbatched (``deter [D]``) or ``[1]``.
      action_seqs: ``[J, H, A]`` candidate action sequences.
      key: PRNG key for the prior samples.
    Returns:
      ``[J]`` float32 returns.
    """
    if action_seqs.ndim != 3:
        raise ValueError(f"action_seqs has shape {action_seqs.shape}; expected [J, H, A]")
    num, horizon = action_seqs.shape[:2]
    deter = start_state["deter"]
    if deter.ndim == 2 and deter.shape[0] != 1:
        raise ValueError(
            f"start_state is a batch of {deter.shape[0]}; rssm_returns scores one state "
            "(unbatched or [1]); vmap it over environments (see ``plan``)"
        )
    if deter.ndim not in (1, 2):
        raise ValueError(f"start_state['deter'] has shape {deter.shape}; expected [D] or [1, D]")
    single = jax.tree.map(lambda x: x[0] if deter.ndim == 2 else x, start_state)
    state = jax.tree.map(lambda x: jnp.broadcast_to(x, (num, *x.shape)), single)

    def step(s: State, x: tuple[Array, Array]):
        a, k = x
        nxt = wm.apply(wm_params, s, a, k, method=WorldModel.img_step)
        return nxt, rssm.features(nxt)

    keys = jax.random.split(key, horizon)
    _, feats = jax.lax.scan(step, state, (jnp.swapaxes(action_seqs, 0, 1), keys))  # [H, J, F]
    reward, _ = wm.apply(wm_params, feats, method=WorldModel.heads)
    return reward.mean().astype(jnp.float32).sum(0)


def plan(wm: WorldModel, wm_params: Any, states: State, key: Array, cfg: PlanetConfig) -> Array:
    """First action of the CEM plan from each of N states: ``states [N] -> actions [N, A]``.

    Each environment runs its own CEM (``vmap`` over N, one key each) from the belief
    N(0, I) over ``[H, A]``, scoring candidates with ``rssm_returns`` under fresh prior samples
    every iteration, and acts with mu_0 of the final belief (replanning every step, PlaNet).
    """
    num = states["deter"].shape[0]
    shape = (cfg.horizon, wm.action_dim)

    def one(state: State, k: Array) -> Array:
        def score(seqs: Array, k_score: Array) -> Array:
            return rssm_returns(wm, wm_params, state, seqs, k_score)

        mean, _ = cem_plan(
            score,
            jnp.zeros(shape),
            jnp.ones(shape),
            k,
            iterations=cfg.iterations,
            candidates=cfg.candidates,
            top_k=cfg.top_k,
            keyed=True,
        )
        return mean[0]

    return jax.vmap(one)(states, jax.random.split(key, num))


# --- the agent ---------------------------------------------------------------------------------


class PlanetAgent(RandomAgent):
    """World model on the negative ELBO (as ``RandomAgent``); actions by CEM planning.

    ``policy(state, carry, obs, key, mode) -> (action [N, A], carry)`` with carry
    ``{'state': posterior State [N], 'action': the previous action [N, A]}`` and the static
    ``mode`` 'explore' (plan + noise), 'eval' (plan) or 'random' (uniform, prefill).
    """

    def __init__(
        self,
        wm_cfg: WorldModelConfig,
        cfg: PlanetConfig,
        obs_shapes: ObsShapes,
        action_dim: int,
        opt: optim.OptimConfig | None = None,
        batch_size: int = 16,
        discrete: bool = False,
    ):
        cfg.validate()
        if discrete:
            raise ValueError(
                "agent planet plans continuous actions with CEM (a Gaussian over action "
                "sequences); this task has discrete actions: use --agent dreamer"
            )
        super().__init__(wm_cfg, obs_shapes, action_dim, opt, batch_size)
        self.cfg, self.wm_cfg = cfg, wm_cfg

    def _policy(
        self, state: AgentState, carry: dict, obs: dict, key: Array, mode: str
    ) -> tuple[Array, dict[str, Any]]:
        """Posterior step on o_t, then the first action of a CEM plan from it ('eval'), plus
        N(0, explore_noise^2) noise, clipped ('explore'), or uniform in [-1, 1] ('random',
        prefill: no planning, but the posterior still advances)."""
        check_mode(mode)
        k_obs, k_plan, k_noise = jax.random.split(key, 3)
        post = self.observe_step(state, carry, obs, k_obs)
        if mode == "random":
            action = random_actions(k_plan, post["deter"].shape[0], self.action_dim)
        else:
            action = plan(self.wm, state.params["wm"], post, k_plan, self.cfg)
        if mode == "explore" and self.cfg.explore_noise > 0:
            noise = self.cfg.explore_noise * jax.random.normal(k_noise, action.shape)
            action = jnp.clip(action + noise, -1.0, 1.0)
        return action, {"state": post, "action": action}
