"""Run by tests/experiments/test_scale.py with 4 virtual CPU devices: two seeds' Dreamer
updates computed together (vmap) on 4 devices, parameters FSDP-split and each batch split over
the devices, against each seed's update alone on one device, from the same states and
batches."""

import json

import jax
import numpy as np

from experiments import config as config_lib
from experiments.config import make_agent
from experiments.run.scale import BatchSplit, Topology
from experiments.run.seeds import SeedBatch, take

assert jax.device_count() == 4, jax.devices()
# With replay context: each sequence starts from a stored state, and the update returns the
# refreshed posterior of every step ([B, T, ...], split along the batch like the batch).
args = ["--preset", "debug", "--logdir", "-", "--run.batch_size", "8"]
cfg, _ = config_lib.parse_args(args)
assert cfg.model.replay_context == 1
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
    state, metrics, context = single_update(one.init_state(agent.init, keys[k]), batches[k])
    metrics = {name: float(v) for name, v in one.to_host(metrics).items()}
    alone.append((state, metrics, jax.device_get(context)))

# Both seeds in one vmapped update over 4 devices: the batch axis split (after the seed
# axis), parameters FSDP-split.
seeds = SeedBatch(agent, 2)
four = Topology.create(jax.devices(), fsdp=True, fsdp_min_size=64, lead=1)
state = four.init_state(seeds.init, keys)
split = sum(not x.sharding.is_fully_replicated for x in jax.tree.leaves(state.params))
update = four.jit_train(seeds.update, four.abstract_state(seeds.init, keys))
stacked = jax.tree.map(lambda *x: np.stack(x), *batches)
both, metrics, contexts = update(state, four.global_batch(stacked))
metrics = four.to_host(metrics)
both = jax.device_get(four.local_view(both))
contexts = jax.device_get(contexts)

worst_param, worst_context, losses = 0.0, 0.0, {}
for k in range(2):
    ref, ref_metrics, ref_context = alone[k]
    got = take(both, k)
    pairs = zip(jax.tree.leaves(ref.params), jax.tree.leaves(got.params), strict=True)
    for a, b in pairs:
        a, b = np.asarray(a), np.asarray(b)
        worst_param = max(worst_param, float(np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-12)))
    pairs = zip(jax.tree.leaves(ref_context), jax.tree.leaves(take(contexts, k)), strict=True)
    for a, b in pairs:
        worst_context = max(worst_context, float(np.max(np.abs(np.asarray(a) - np.asarray(b)))))
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
            "worst_context_abs": worst_context,
            "context_shapes": [list(x.shape) for x in jax.tree.leaves(contexts)],
            "refused": refused,
        }
    )
)
