"""Load a trained agent from a run directory and act with it.

    python -m experiments.evaluate --logdir runs/x --episodes 10 [--video] [--step N]

Python API::

    from experiments.evaluate import LoadedPolicy
    policy = LoadedPolicy("runs/x")              # latest checkpoint, config from the run
    env = policy.make_env(seed=123)
    obs = env.reset()
    policy.reset()
    while not obs["is_last"]:
        obs = env.step(policy.act(obs))          # the recurrent state is carried inside

``act`` takes one observation dict as the environment returns it (or a batch with a leading
axis) and returns the action; ``is_first`` in the observation resets the recurrent state.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from experiments import envs as envs_lib
from experiments.config import Config, from_dict, make_agent
from experiments.run.checkpoint import Checkpointer, TargetMismatch
from experiments.run.compat import ConfigMismatch, check_layout, restore_state
from experiments.run.eval import run_episode
from experiments.run.logging import write_gif
from experiments.run.seeds import SeedBatch, take

# The default seed of evaluation environments: apart from the seeds a run trained and
# evaluated with (env_seed hashes of the run seed; run.seed + EVAL_SEED_OFFSET + k).
EVALUATE_SEED = 10_000


class LoadedPolicy:
    """A trained agent restored from ``logdir``'s checkpoint, acting step by step."""

    def __init__(self, logdir: str | Path, step: int | None = None, seed: int = 0, member: int = 0):

        self.logdir = Path(logdir)
        if not (self.logdir / "checkpoints").is_dir():
            raise FileNotFoundError(
                f"{self.logdir} holds no checkpoints/ directory; pass the "
                "logdir of a run started by experiments.train"
            )
        with Checkpointer(self.logdir / "checkpoints") as ckpt:
            steps = ckpt.all_steps()
            if not steps:
                raise FileNotFoundError(
                    f"no checkpoint in {self.logdir / 'checkpoints'}; "
                    "train first or pass the run's logdir"
                )
            if step is not None and int(step) not in steps:
                raise FileNotFoundError(
                    f"--step {step}: no complete checkpoint at that env step in "
                    f"{self.logdir / 'checkpoints'}; complete steps: {steps}"
                )
            # Newest first; a damaged one (a killed or failed write, a damaged file) is passed
            # over for the one before, as training falls back (nothing is moved: this only reads).
            candidates = [int(step)] if step is not None else steps[::-1]
            for i, at in enumerate(candidates):
                try:
                    meta = ckpt.restore_meta(at)
                except Exception as err:
                    self._damaged(at, err, candidates[i + 1 :], steps, step is not None)
                    continue
                self._build(meta)
                try:
                    meta = self._restore(ckpt, at, meta, member)
                except (TargetMismatch, ConfigMismatch):
                    raise
                except Exception as err:
                    self._damaged(at, err, candidates[i + 1 :], steps, step is not None)
                    continue
                break
        self.step = meta["counters"]["agent_steps"]
        self.obs_keys = tuple(self.obs_spec)
        self._key = jax.random.key(seed)
        self._t = 0
        self.carry = None

    def _damaged(
        self, at: int, err: BaseException, rest: list[int], steps: list[int], asked: bool
    ) -> None:
        """A checkpoint that does not restore: a warning and the next candidate, or the error
        naming the complete steps when none is left."""
        what = f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
        if asked or not rest:
            others = [s for s in steps if s != at]
            raise ValueError(
                f"checkpoint {at} in {self.logdir / 'checkpoints'} does not restore ({what}); "
                + (f"pass --step with one of {others}" if others else "no other checkpoint")
            ) from err
        print(
            f"warning: checkpoint {at} in {self.logdir / 'checkpoints'} does not restore "
            f"({what}); evaluating checkpoint {rest[0]} instead",
            file=sys.stderr,
        )

    def _build(self, meta: dict) -> None:
        """The config, environment spec and agent of the run whose checkpoint meta is ``meta``."""
        self.layout = check_layout(meta, self.logdir)
        self.cfg: Config = from_dict(meta["config"])
        with self.make_env(seed=0) as probe:
            self.obs_spec, self.act_dim = probe.obs_spec, probe.act_dim
            discrete = probe.discrete
        obs_shapes = tuple((k, tuple(v[0])) for k, v in self.obs_spec.items())
        self.agent = make_agent(self.cfg, obs_shapes, self.act_dim, discrete)

    def _restore(self, ckpt: Checkpointer, at: int, meta: dict, member: int) -> dict:
        """Restores agent ``member``'s state of checkpoint ``at``; returns its meta."""
        seeds = self.cfg.run.seeds
        if not 0 <= member < seeds:
            raise ConfigMismatch(
                f"--member {member}: the run trained {seeds} agent(s) (run.seeds); pick one "
                f"in [0, {seeds})"
            )
        if meta.get("loop") == "device":  # the device loop's checkpoint: its whole carry
            from experiments.run.device_carry import checkpointed_state

            states = checkpointed_state(ckpt, at, meta, self.agent, self.cfg)
            self.state = states if seeds == 1 else take(states, member)
        elif seeds == 1:
            target = jax.eval_shape(self.agent.init, jax.random.key(0))
            self.state, meta = restore_state(ckpt, target, at, self.layout)
        else:  # agent `member` of a --run.seeds K run: the run with seed run.seed + member
            init = SeedBatch(self.agent, seeds).init
            target = jax.eval_shape(init, jax.random.split(jax.random.key(0), seeds))
            states, meta = restore_state(ckpt, target, at, self.layout)
            self.state = take(states, member)
        return meta

    def make_env(self, seed: int) -> envs_lib.Env:
        """An environment like the run's (task, observations, repeat), with its own seed."""
        return envs_lib.make_env(
            self.cfg.env.task, self.cfg.env.obs, seed=seed, **envs_lib.env_kwargs(self.cfg.env)
        )

    def reset(self, num_envs: int = 1) -> None:
        self.carry = self.agent.init_carry(num_envs)

    def act(self, obs: dict[str, Any], mode: str = "eval") -> np.ndarray:
        """Action for one observation dict (``[A]``) or a batch of them (``[N, A]``).

        mode: 'eval' (the default: the agent's evaluation policy, which for Dreamer samples
          unless ``dreamer.eval_sample`` is off), 'explore' (as while collecting) or 'random'.
        """
        single = np.ndim(obs["is_first"]) == 0
        batch = {
            k: jnp.asarray(np.asarray(obs[k]))[None] if single else jnp.asarray(obs[k])
            for k in (*self.obs_keys, "is_first")
        }
        if self.carry is None:
            self.reset(batch["is_first"].shape[0])
        key = jax.random.fold_in(self._key, self._t)
        self._t += 1
        action, self.carry = self.agent.policy(self.state, self.carry, batch, key, mode)
        action = np.asarray(action)
        return action[0] if single else action


def evaluate(
    logdir: str | Path,
    episodes: int = 10,
    seed: int = EVALUATE_SEED,
    step: int | None = None,
    video: bool = False,
    member: int = 0,
) -> dict[str, Any]:
    """Returns of ``episodes`` episodes with the evaluation policy (and a GIF of the first);
    ``member``: which agent of a ``--run.seeds K`` run."""
    if episodes < 1:
        raise ValueError(f"--episodes {episodes}: evaluate at least 1 episode")
    if seed < 0:
        raise ValueError(f"--seed {seed}: the evaluation seed must be >= 0")
    policy = LoadedPolicy(logdir, step, seed, member)
    returns, frames, video_path = [], [], None
    with policy.make_env(seed) as env:
        for ep in range(episodes):
            policy.reset()
            watch = (lambda obs, _: frames.append(_frame(env, obs))) if video and not ep else None
            returns.append(run_episode(env, lambda obs, _: policy.act(obs), watch=watch))
    if video:
        video_path = str(
            write_gif(
                policy.logdir / "videos" / f"eval_{policy.step:09d}_member{member}.gif"
                if policy.cfg.run.seeds > 1
                else policy.logdir / "videos" / f"eval_{policy.step:09d}.gif",
                np.stack(frames),
                fps=25,
            )
        )
    return {
        "logdir": str(logdir),
        "member": member,
        "agent_steps": policy.step,
        "env_steps": policy.step * env.action_repeat,
        "episodes": episodes,
        "returns": [round(r, 2) for r in returns],
        "mean": float(np.mean(returns)),
        "std": float(np.std(returns)),
        "video": video_path,
    }


def _frame(env: envs_lib.Env, obs: dict[str, Any]) -> np.ndarray:
    if "image" in obs:
        return np.asarray(obs["image"])
    if not hasattr(env, "dm_env"):
        raise ValueError(
            f"--video: {env.task} has no image observation to record; drop --video, or wrap "
            "the env so that it observes images"
        )
    return env.dm_env.physics.render(height=128, width=128, camera_id=env.camera)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.evaluate", description="Evaluate a trained run's policy."
    )
    parser.add_argument("--logdir", required=True)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=EVALUATE_SEED)
    parser.add_argument(
        "--step", type=int, default=None, help="checkpoint, in env steps (default: latest)"
    )
    parser.add_argument("--video", action="store_true", help="write a GIF of the first episode")
    parser.add_argument(
        "--member", type=int, default=0, help="agent k of a --run.seeds K run (default 0)"
    )
    args = parser.parse_args(argv)
    try:
        result = evaluate(args.logdir, args.episodes, args.seed, args.step, args.video, args.member)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
