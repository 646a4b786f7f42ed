"""Run by tests/experiments/test_scale.py with 4 virtual CPU devices: one Dreamer update on
1 device and on 4 (parameters split, FSDP-style) from the same state and global batch."""

import json

import jax
import numpy as np

from experiments import config as config_lib
from experiments.scale import BatchSplit, Topology
from experiments.seeds import SeedBatch, take
from experiments.train import make_agent

assert jax.device_count() == 4, jax.devices()
cfg, _ = config_lib.parse_args(["--preset", "debug", "--logdir", "-", "--run.batch_size", "8"])
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
        "context": {k: np.asarray(v) for k, v in topo.local_rows(context).items()},
    }
# Two seeds in one vmapped update (experiments/seeds.py): each equals its own single update.
seeds = SeedBatch(agent, 2)
keys = jax.random.split(key, 2)
batches = [batch, jax.tree.map(lambda x: x[::-1], batch)]
both = jax.jit(seeds.update)(seeds.init(keys), jax.tree.map(lambda *x: np.stack(x), *batches))
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
worst_context = max(
    [
        float(np.max(np.abs(out["one"]["context"][k] - out["four"]["context"][k])))
        for k in out["one"]["context"]
    ],
    default=0.0,
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
            "worst_context_abs": worst_context,
            "refused": refused,
            "worst_seed_rel": worst_seed,
            "context_shape": [list(v.shape) for v in out["four"]["context"].values()],
        }
    )
)
