"""Scaling out: one run over every device of every host, data parallel.

A run sees all devices of all processes as one ``jax.sharding.Mesh`` with one axis, ``data``.
``run.batch_size`` is the *global* batch: each update trains on ``batch_size`` sequences split
evenly over the devices, so a run's results do not depend on how many devices it has (a
checkpoint written on 4 devices resumes on 1 or 2). Each process samples its share,
``batch_size / process_count`` sequences, from its own replay, and the shares form one global
array (``jax.make_array_from_process_local_data``).

Placement of the training state (``state_shardings``):
- parameters, optimizer state, RNG key, counters: replicated on every device; with ``fsdp``,
  every leaf of at least ``fsdp_min_size`` elements (65,536) is instead split along its
  largest axis that the device count divides (its optimizer moments follow, having the same
  shapes), and XLA gathers it where the update needs it.

The update is jitted with these shardings as ``in_shardings`` and ``out_shardings`` and donates
its state; XLA inserts the gradient all-reduce. Random numbers do not depend on the sharding
(JAX's partitionable threefry), so 1 and N devices compute the same update up to the order of
floating-point reductions.

Acting stays local: each process steps its own environments and runs the policy on one of its
own devices with a local copy of the state (``local_view``), so environment steps need no
communication; the processes meet only in the update, where they run in lockstep.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "data"
FSDP_MIN_SIZE = 2**16  # leaves smaller than this stay replicated under fsdp (not worth a gather)


class BatchSplit(ValueError):
    """The global batch does not split evenly over the run's devices."""


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    auto: bool = False,
) -> None:
    """Joins a multi-process run (``jax.distributed.initialize``) before any JAX computation.

    Arguments default to the environment variables ``JAX_COORDINATOR_ADDRESS``,
    ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``. With ``auto`` and none given, JAX detects the
    cluster itself (TPU pods, SLURM, Open MPI). Nothing happens for a single process. On CPUs
    the collectives run over gloo.
    """
    env = os.environ
    coordinator = coordinator or env.get("JAX_COORDINATOR_ADDRESS") or None
    if num_processes is None and env.get("JAX_NUM_PROCESSES"):
        num_processes = int(env["JAX_NUM_PROCESSES"])
    if process_id is None and env.get("JAX_PROCESS_ID"):
        process_id = int(env["JAX_PROCESS_ID"])
    if coordinator is None and num_processes is None and process_id is None and not auto:
        return
    if not auto:
        missing = [
            name
            for name, value in (
                ("--coordinator", coordinator),
                ("--num-processes", num_processes),
                ("--process-id", process_id),
            )
            if value is None
        ]
        if missing:
            raise ValueError(
                f"a multi-process run needs a coordinator address, the process count and this "
                f"process's id; missing {', '.join(missing)} (or JAX_COORDINATOR_ADDRESS, "
                "JAX_NUM_PROCESSES, JAX_PROCESS_ID). On TPU pods and SLURM use --distributed "
                "auto instead."
            )
        if not 0 <= process_id < num_processes:
            raise ValueError(
                f"--process-id {process_id} is outside [0, --num-processes {num_processes})"
            )
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator, num_processes=num_processes, process_id=process_id
    )


@dataclasses.dataclass(frozen=True)
class Topology:
    """The mesh of a run and where each part of its data lives."""

    mesh: Mesh
    fsdp: bool = False
    fsdp_min_size: int = FSDP_MIN_SIZE
    lead: int = 0  # axes before the batch axis (1 with many seeds: [K, B, ...])

    @classmethod
    def create(
        cls,
        devices: list | None = None,
        fsdp: bool = False,
        fsdp_min_size: int = FSDP_MIN_SIZE,
        lead: int = 0,
    ) -> Topology:
        """A one-axis mesh over ``devices`` (default: every device of every process)."""
        # jax.devices() lists each process's devices together (by process index), which the
        # assembly of a global batch from per-process shares expects.
        devices = jax.devices() if devices is None else list(devices)
        return cls(Mesh(np.array(devices), (AXIS,)), fsdp, fsdp_min_size, lead)

    @property
    def size(self) -> int:
        return self.mesh.size

    @property
    def process_index(self) -> int:
        return jax.process_index()

    @property
    def process_count(self) -> int:
        return jax.process_count()

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, P())

    @property
    def batched(self) -> NamedSharding:
        """Split along the batch axis (after ``lead`` axes) over every device."""
        return NamedSharding(self.mesh, P(*[None] * self.lead, AXIS))

    def check_batch(self, batch_size: int) -> None:
        if batch_size % self.size:
            raise BatchSplit(
                f"run.batch_size={batch_size} is the global batch and must split evenly over "
                f"the {self.size} devices of this run ({self.process_count} process(es)): use a "
                f"multiple of {self.size}, e.g. --run.batch_size "
                f"{max(self.size, batch_size // self.size * self.size)}"
            )

    def local_batch_size(self, batch_size: int) -> int:
        """Sequences this process samples per update: its share of the global batch."""
        self.check_batch(batch_size)
        return batch_size // self.process_count

    # --- the training state -------------------------------------------------------------------

    def state_shardings(self, abstract_state: Any) -> Any:
        """A sharding per leaf of a state (arrays or ``jax.ShapeDtypeStruct``), as above."""

        def place(leaf) -> NamedSharding:
            shape = tuple(getattr(leaf, "shape", ()))
            if self.fsdp and int(np.prod(shape, dtype=np.int64)) >= self.fsdp_min_size:
                for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
                    if shape[axis] % self.size == 0:
                        spec = [None] * len(shape)
                        spec[axis] = AXIS
                        return NamedSharding(self.mesh, P(*spec))
            return self.replicated

        return jax.tree.map(place, abstract_state)

    def init_state(self, init_fn, key: jax.Array) -> Any:
        """``init_fn(key)`` computed once, placed by ``state_shardings`` (every process calls it
        with the same key and gets its part of the same global state)."""
        shardings = self.state_shardings(jax.eval_shape(init_fn, key))
        return jax.jit(init_fn, out_shardings=shardings)(key)

    def abstract_state(self, init_fn, key: jax.Array) -> Any:
        """``jax.ShapeDtypeStruct`` leaves with this topology's shardings: a restore target."""
        abstract = jax.eval_shape(init_fn, key)
        shardings = self.state_shardings(abstract)
        return jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
        )

    def jit_train(self, train_fn, abstract_state: Any):
        """``train_fn(state, batch) -> (state, metrics, context)`` jitted over the mesh: state in
        and out by ``state_shardings`` (donated), batch and per-sequence context split along the
        batch, metrics replicated."""
        state_sh = self.state_shardings(abstract_state)
        return jax.jit(
            train_fn,
            in_shardings=(state_sh, self.batched),
            out_shardings=(state_sh, self.replicated, self.batched),
            donate_argnums=0,
        )

    # --- moving data in and out ---------------------------------------------------------------

    def global_batch(self, local: Mapping[str, Any]) -> dict[str, jax.Array]:
        """This process's ``[B / processes, ...]`` arrays -> global ``[B, ...]`` arrays split
        along the batch (every process calls it with its own share)."""

        def put(x):
            x = np.asarray(x)
            shape = list(x.shape)
            shape[self.lead] *= self.process_count
            return jax.make_array_from_process_local_data(self.batched, x, tuple(shape))

        return jax.tree.map(put, dict(local))

    def local_rows(self, tree: Any) -> Any:
        """Global arrays split along the batch -> this process's rows as numpy (the inverse of
        ``global_batch``)."""
        if self.process_count == 1:
            return jax.tree.map(np.asarray, tree)
        return jax.tree.map(
            np.asarray,
            multihost_utils.global_array_to_host_local_array(tree, self.mesh, self.batched.spec),
        )

    def local_view(self, state: Any) -> Any:
        """The state as arrays on this process's first device, for acting and evaluating
        without collectives. Replicated leaves are views of the local replica (no copy, valid until
        the state is donated to the next update); FSDP-split leaves are gathered, a collective
        that every process must run at the same point."""
        device = self.mesh.local_devices[0]
        leaves, tree = jax.tree.flatten(state)
        split = [
            i
            for i, x in enumerate(leaves)
            if isinstance(x, jax.Array) and not x.sharding.is_fully_replicated
        ]
        if split:
            gathered = _gather([leaves[i] for i in split], self.replicated)
            for i, x in zip(split, gathered, strict=True):
                leaves[i] = x
        out = []
        for x in leaves:
            if isinstance(x, jax.Array) and len(x.sharding.device_set) > 1:
                x = next(s.data for s in x.addressable_shards if s.device == device)
            out.append(x)
        return jax.tree.unflatten(tree, out)

    def to_host(self, tree: Any) -> Any:
        """Replicated global arrays (metrics) -> numpy, from the local replica."""

        def get(x):
            if isinstance(x, jax.Array) and not x.is_fully_addressable:
                return np.asarray(x.addressable_data(0))
            return np.asarray(x)

        return jax.tree.map(get, tree)

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true in any process (a collective: every process calls it)."""
        if self.process_count == 1:
            return bool(flag)
        return bool(np.any(multihost_utils.process_allgather(np.asarray(flag))))

    def gather_json(self, text: str) -> list[str]:
        """Every process's string, in process order (a collective)."""
        if self.process_count == 1:
            return [text]
        data = np.frombuffer(text.encode(), np.uint8)
        sizes = multihost_utils.process_allgather(np.asarray(len(data), np.int64))
        padded = np.zeros(int(np.max(sizes)), np.uint8)
        padded[: len(data)] = data
        rows = multihost_utils.process_allgather(padded)
        return [bytes(r[: int(n)]).decode() for r, n in zip(rows, np.ravel(sizes), strict=True)]


_gather_cache: dict = {}


def _gather(arrays: list[jax.Array], replicated: NamedSharding) -> list[jax.Array]:
    fn = _gather_cache.get(replicated)
    if fn is None:
        fn = _gather_cache[replicated] = jax.jit(lambda xs: xs, out_shardings=replicated)
    return fn(arrays)
