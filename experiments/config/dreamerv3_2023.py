"""DreamerV3 as published in 2023 (arXiv v1 and its code at danijar/dreamerv3 8fa35f8): the
``dreamerv3-2023`` preset and the world model and actor-critic it is made of."""

from __future__ import annotations

from agents.dreamer import DreamerConfig
from agents.optim import OptimConfig
from agents.world_model import WorldModelConfig
from experiments.config.schema import Config, EnvConfig, RunConfig


def dreamerv3_2023() -> Config:
    """DreamerV3 as in arXiv v1 (2023) and its code (danijar/dreamerv3 at 8fa35f8, configs.yaml
    ``defaults`` + ``dmc_proprio``), the configuration behind the published DMC proprio scores.

    RSSM: dense GRU (deter 512) on a 512-unit embedding of (s, a), 32 x 32 categoricals, learned
    h_0, LayerNorm without biases, fan-avg init. The ``dmc_proprio`` overrides ``.*\\.layers: 2``
    and ``.*\\.units: 512`` reach the RSSM and the reward, continue, actor and critic MLPs, but
    not the encoder and decoder, whose keys are ``mlp_layers`` / ``mlp_units``: those stay 5 x 1024.
    Training: the world model is updated first, imagination uses the updated one; the actor
    backpropagates through the dynamics (continuous actions; discrete ones are a one-hot head
    mixed with 1% uniform); continues are the head's mode with c_0 from the data and an
    explicit discount 1 - 1/333; the slow critic copies the critic at the first update, then
    follows it at rate 0.02; Adam 1e-4 / 3e-5 / 3e-5, clip 1000 / 100; 4 envs, action repeat
    2, train ratio 512, replay 1e6.

    Sequences start from h_0: the reference carries the previous batch's last posterior into
    the next update, but its replay marks every sampled window's first step ``is_first``
    (``embodied/replay/generic.py``), which replaces the carried state by h_0 and the carried
    action by zeros; replay here marks them the same way. Prefill: uniform random actions
    until replay holds B x T windows of T steps (``embodied/run/train.py``: ``len(replay) <
    max(batch_steps, train_fill)`` with train_fill 0, checked every 100 transitions), 2,600
    environment steps on walker-walk with 4 envs.

    Not reproduced: the reference computes in float16 on GPUs.
    """
    return Config(
        env=EnvConfig(task="walker-walk", obs="proprio", action_repeat=2, envs=4),
        run=RunConfig(
            steps=1_000_000,
            prefill=0,
            prefill_to_batch=True,
            train_ratio=512.0,
            batch_size=16,
            batch_length=64,
            replay_capacity=1_000_000,
        ),
        model=_v3_2023_model(),
        dreamer=_v3_2023_actor_critic(),
        opt=OptimConfig(
            kind="adam",
            lr=1e-4,
            actor_lr=3e-5,
            critic_lr=3e-5,
            warmup=0,
            eps=1e-8,
            ac_eps=1e-5,
            clip=1000.0,
            ac_clip=100.0,
        ),
    )


def _v3_2023_actor_critic() -> DreamerConfig:
    """The 2023 code's actor-critic (``dreamerv3_2023``'s docstring gives the sources)."""
    return DreamerConfig(
        contdisc=False,
        imag_cont="mode",
        first_cont="data",
        estimator="dynamics",
        layers=2,
        units=512,
        outscale=1.0,
        actor_unimix=0.01,
        slow_copy_first=True,
        value_dist="symlog_twohot",
        repval=False,
        update="sequential",
    )


def _v3_2023_model() -> WorldModelConfig:
    """The 2023 code's world model (``dreamerv3_2023``'s docstring gives the sources)."""
    return WorldModelConfig(
        classes=32,
        deter=512,
        hidden=512,
        core="gru",
        img_layers=1,
        initial="learned",
        units=1024,
        layers=5,
        head_layers=2,
        head_units=512,
        cnn="strided",
        depth=32,
        mults=(1, 2, 4, 8),
        kernel=4,
        norm="layer",
        bias=False,
        winit="fan_avg",
        reward_dist="symlog_twohot",
        beta_dyn=0.5,
        beta_rep=0.1,
        replay_context=0,
    )
