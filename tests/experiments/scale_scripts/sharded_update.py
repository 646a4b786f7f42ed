"""Run by tests/experiments/test_scale.py with 4 virtual CPU devices: one Dreamer update on
1 device and on 4 (parameters split, FSDP-style; the training carry split along the batch)
from the same state and global batch, and two seeds' vmapped update on 4 devices against each
seed's update alone."""

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
out = {}
for name, devices, fsdp in (("one", jax.devices()[:1], False), ("four", jax.devices(), True)):
    topo = Topology.create(devices, fsdp=fsdp, fsdp_min_size=64)
    abstract = topo.abstract_state(agent.init, key)
    state = topo.init_state(agent.init, key)
    split = sum(not x.sharding.is_fully_replicated for x in jax.tree.leaves(state.params))
    fn = topo.jit_train(agent.update, abstract)
    if name == "one":
        single_update = fn  # reused below: one compiled single-seed update
    state, metrics, context = fn(state, topo.global_batch(batch))
    out[name] = {
        "split_params": split,
        "metrics": {k: float(v) for k, v in topo.to_host(metrics).items()},
        "params": [np.asarray(x) for x in jax.tree.leaves(topo.local_view(state).params)],
        "carry": [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state.train_carry))],
        "carry_split": all(
            not x.sharding.is_fully_replicated for x in jax.tree.leaves(state.train_carry)
        ),
    }
# Two seeds in one vmapped update (experiments/seeds.py): each equals its own single update.
seeds = SeedBatch(agent, 2)
keys = jax.random.split(key, 2)
batches = [batch, jax.tree.map(lambda x: x[::-1], batch)]
stacked = jax.tree.map(lambda *x: np.stack(x), *batches)
topo = Topology.create(jax.devices(), lead=1)  # [K, B, ...]: the batch axis split over 4 devices
both = topo.jit_train(seeds.update, topo.abstract_state(seeds.init, keys))(
    topo.init_state(seeds.init, keys), topo.global_batch(stacked)
)
worst_seed = 0.0
for k in range(2):
    alone = single_update(agent.init(keys[k]), batches[k])
    pairs = zip(
        jax.tree.leaves(alone[0].params), jax.tree.leaves(take(both[0], k).params), strict=True
    )
    for a, b in pairs:
        a, b = np.asarray(a), np.asarray(b)
        rel = float(np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-12))
        worst_seed = max(worst_seed, rel)
    for name, v in alone[1].items():
        ref = float(v)
        if abs(float(both[1][name][k]) - ref) > 1e-5 * max(abs(ref), 1e-2):
            worst_seed = max(worst_seed, 1.0)  # a metric differs: fail loudly
try:
    Topology.create().check_batch(6)
    refused = ""
except BatchSplit as err:
    refused = str(err)
worst_param = max(
    float(np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-12))
    for a, b in zip(out["one"]["params"], out["four"]["params"], strict=True)
)
worst_carry = max(
    float(np.max(np.abs(a - b)))
    for a, b in zip(out["one"]["carry"], out["four"]["carry"], strict=True)
)
print(
    json.dumps(
        {
            "split_params": [out["one"]["split_params"], out["four"]["split_params"]],
            "losses": {
                k: [out["one"]["metrics"][k], out["four"]["metrics"][k]]
                for k in out["one"]["metrics"]
            },
            "worst_param_rel": worst_param,
            "worst_carry_abs": worst_carry,
            "carry_split": [out["one"]["carry_split"], out["four"]["carry_split"]],
            "carry_shapes": [list(x.shape) for x in out["four"]["carry"]],
            "refused": refused,
            "worst_seed_rel": worst_seed,
        }
    )
)
