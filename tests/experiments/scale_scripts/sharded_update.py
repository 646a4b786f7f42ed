"""Run by tests/experiments/test_scale.py with 4 virtual CPU devices: two seeds' Dreamer
updates computed together (vmap) on 4 devices, parameters FSDP-split and each batch split over
the devices, against each seed's update alone on one device, from the same states and
batches."""

import json

import jax
import numpy as np

from experiments import config as config_lib
from experiments.scale import BatchSplit, Topology
from experiments.seeds import SeedBatch, take
from experiments.train import make_agent

assert jax.device_count() == 4, jax.devices()
# The 2023 code's carried state: the training state holds one posterior per sequence.
args = ["--preset", "debug", "--logdir", "-", "--run.batch_size", "8"]
args += ["--model.carry_state", "true", "--model.replay_context", "0"]
cfg, _ = config_lib.parse_args(args)
agent = make_agent(cfg, (("vector", (5,)),), 2)
B, T = 8, 16
rng = np.random.default_rng(0)
batch = {
    "vector": rng.normal(size=(B, T, 5)).astype(np.float32),
    "action": rng.uniform(-1, 1, (B, T, 2)).astype(np.float32),
    "reward": rng.normal(size=(B, T)).astype(np.float32),
    "is_first": np.zeros((B, T), bool),
    "is_last": np.zeros((B, T), bool),
    "is_terminal": np.zeros((B, T), bool),
}
batch["is_first"][:, 0] = True
batch["is_first"][3, 9] = True  # an episode boundary inside one sequence
if cfg.model.replay_context:
    batch["context"] = {
        k: rng.normal(size=v.shape).astype(np.float32) * 0.1
        for k, v in agent.init_carry(B)["state"].items()
        if k in ("deter", "stoch")
    }
key = jax.random.key(3)
keys = jax.random.split(key, 2)
batches = [batch, jax.tree.map(lambda x: x[::-1], batch)]

# Reference: each seed's update alone, on one device.
one = Topology.create(jax.devices()[:1])
single_update = one.jit_train(agent.update, one.abstract_state(agent.init, keys[0]))
alone = []
for k in range(2):
    state, metrics, _ = single_update(one.init_state(agent.init, keys[k]), batches[k])
    alone.append((state, {name: float(v) for name, v in one.to_host(metrics).items()}))

# Both seeds in one vmapped update over 4 devices: the batch axis split (after the seed
# axis), parameters FSDP-split, the carried state split along the batch.
seeds = SeedBatch(agent, 2)
four = Topology.create(jax.devices(), fsdp=True, fsdp_min_size=64, lead=1)
state = four.init_state(seeds.init, keys)
split = sum(not x.sharding.is_fully_replicated for x in jax.tree.leaves(state.params))
update = four.jit_train(seeds.update, four.abstract_state(seeds.init, keys))
stacked = jax.tree.map(lambda *x: np.stack(x), *batches)
both, metrics, _ = update(state, four.global_batch(stacked))
carry_split = all(not x.sharding.is_fully_replicated for x in jax.tree.leaves(both.train_carry))
metrics = four.to_host(metrics)
both = jax.device_get(four.local_view(both).replace(train_carry=both.train_carry))

worst_param, worst_carry, losses = 0.0, 0.0, {}
for k in range(2):
    ref, ref_metrics = alone[k]
    got = take(both, k)
    pairs = zip(jax.tree.leaves(ref.params), jax.tree.leaves(got.params), strict=True)
    for a, b in pairs:
        a, b = np.asarray(a), np.asarray(b)
        worst_param = max(worst_param, float(np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-12)))
    carries = zip(jax.tree.leaves(ref.train_carry), jax.tree.leaves(got.train_carry), strict=True)
    for a, b in carries:
        worst_carry = max(worst_carry, float(np.max(np.abs(np.asarray(a) - np.asarray(b)))))
    for name, v in ref_metrics.items():
        losses[f"{name}[{k}]"] = [v, float(metrics[name][k])]
try:
    Topology.create().check_batch(6)
    refused = ""
except BatchSplit as err:
    refused = str(err)
print(
    json.dumps(
        {
            "split_params": split,
            "losses": losses,
            "worst_param_rel": worst_param,
            "worst_carry_abs": worst_carry,
            "carry_split": carry_split,
            "carry_shapes": [list(x.shape) for x in jax.tree.leaves(both.train_carry)],
            "refused": refused,
        }
    )
)
