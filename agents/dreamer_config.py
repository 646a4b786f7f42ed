"""Dreamer's actor-critic hyperparameters: ``DreamerConfig`` (DreamerV3's 2024 release by
default), validated before anything is built."""

from __future__ import annotations

import dataclasses

from agents.ac_math import ESTIMATORS

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

    @property
    def loss_scales(self) -> dict[str, float]:
        """The weight of each loss in the sum that is differentiated: the world model's, the
        actor's and the critic's 1, the replay-value loss's ``repval_scale``."""
        return {"wm": 1.0, "actor": 1.0, "critic": 1.0, "repval": self.repval_scale}

    def validate(self) -> None:
        choices = {
            "estimator": ESTIMATORS,
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

    def check_actions(self, discrete: bool) -> None:
        """Rejects what discrete (one-hot) actions do not allow."""
        if discrete and self.estimator == "dynamics":
            raise ValueError(
                "dreamer.estimator=dynamics backpropagates through sampled actions, which "
                "one-hot categorical samples do not allow: use --dreamer.estimator reinforce "
                "for discrete actions"
            )
        if discrete and self.prior != "uniform":
            raise ValueError(
                f"dreamer.prior={self.prior!r} is a Normal over continuous actions; discrete "
                "actions take the uniform categorical prior: --dreamer.prior uniform"
            )
