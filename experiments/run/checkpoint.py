"""Checkpoints with orbax: atomic saves, keep-last-k, exact resume.

One checkpoint step is one orbax step directory holding two items:

- ``state``: the training-state pytree (a ``flax.struct.dataclass`` of params, optax states,
  RNG key and counters), written by ``StandardSave``;
- ``meta``: a JSON dict (resolved config, host-side counters, replay state, wandb run id),
  written by ``JsonSave``.

Atomicity comes from orbax: a step is written into ``<step>.orbax-checkpoint-tmp`` and renamed to
``<step>`` only once every file is on disk, so a process killed mid-save leaves a temporary
directory that is never listed as a step (and is removed when the next ``Checkpointer`` opens the
directory). Saves are asynchronous by default: ``save`` returns once the arrays are copied to host
memory, and the write continues in a background thread; ``wait`` blocks until it is done.

Typed PRNG keys (``jax.random.key``) are stored by orbax as their raw ``uint32`` key data and
come back as typed keys of the target's implementation; raw ``jax.random.PRNGKey`` arrays are
plain ``uint32`` arrays. Both round-trip bit-exactly.

Restoring needs a target of the same structure (concrete arrays, or ``jax.ShapeDtypeStruct``
from ``jax.eval_shape``): without one orbax returns optax's NamedTuple states as plain lists.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from experiments.envs.contract import check_int
from experiments.run import pause
from experiments.run.quiet import STORAGE_ERRNOS, quiet_failed_writes

__all__ = ["STORAGE_ERRNOS", "Checkpointer", "StorageError", "TargetMismatch"]

_STATE = "state"
_META = "meta"


class StorageError(OSError):
    """Writing to the logdir failed (a full disk, a quota, a file size limit); what was
    complete before stays unchanged."""


class TargetMismatch(ValueError):
    """A checkpoint's tree paths, shapes or dtypes differ from the restore target's."""


class _MetaHandler(ocp.JsonCheckpointHandler):
    """orbax's JSON handler, with the pause point ``checkpoint_write`` (experiments/pause.py)
    after the meta file is written into the step's temporary directory."""

    async def _save_fn(self, x, directory):
        await super()._save_fn(x, directory)
        if os.environ.get(pause.ENV):
            step = int(os.path.basename(os.path.dirname(str(directory))).split(".")[0])
            pause.point("checkpoint_write", step)


@ocp.args.register_with_handler(_MetaHandler, for_save=True)
@dataclasses.dataclass
class _MetaSave(ocp.args.JsonSave):
    pass


@ocp.args.register_with_handler(_MetaHandler, for_restore=True)
@dataclasses.dataclass
class _MetaRestore(ocp.args.JsonRestore):
    pass


class Checkpointer:
    """Saves and restores (state pytree, meta dict) pairs under one directory.

    Args:
      directory: where the step directories live (created if absent).
      keep: how many of the most recent steps to keep; older ones are deleted after each save.
      async_save: write in a background thread (``save`` returns after the device-to-host copy).
    """

    def __init__(self, directory: str | os.PathLike, keep: int = 3, async_save: bool = True):
        keep = check_int("keep", keep, 1, fix="the number of checkpoints to keep")
        quiet_failed_writes()
        self.directory = os.path.abspath(os.fspath(directory))
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            create=True,
            # Leftovers of an interrupted save are never steps; removing them keeps the
            # directory tidy and frees the step number for the next save.
            cleanup_tmp_directories=True,
            enable_async_checkpointing=async_save,
        )
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=options,
            item_handlers={
                _STATE: ocp.StandardCheckpointHandler(),
                _META: _MetaHandler(),
            },
        )
        self._closed = False
        self._in_flight: int | None = None  # the step an asynchronous save is writing

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def save(self, step: int, state: Any, meta: dict) -> None:
        """Saves ``state`` (pytree of arrays) and ``meta`` (JSON-able dict) as step ``step``.

        Raises:
          TypeError: ``meta`` is not a JSON-serializable dict.
          ValueError: ``step`` is not newer than the latest saved step (orbax would skip it).
        """
        self._check_open()
        if not isinstance(meta, Mapping):
            raise TypeError(f"meta must be a dict of JSON values, got {type(meta).__name__}")
        try:
            json.dumps(meta)
        except (TypeError, ValueError) as e:
            raise TypeError(
                f"meta must be JSON-serializable (convert arrays with .tolist(), dataclasses "
                f"with dataclasses.asdict): {e}"
            ) from e
        step = int(step)
        with self._writing():  # orbax first waits for the previous save: its error shows here
            saved = self._manager.save(
                step,
                args=ocp.args.Composite(
                    **{_STATE: ocp.args.StandardSave(state), _META: _MetaSave(dict(meta))}
                ),
            )
        self._in_flight = step
        if not saved:
            raise ValueError(
                f"checkpoint step {step} was not saved: {self.directory} already holds step "
                f"{self._manager.latest_step()}, and steps must increase. Save a later step, or "
                f"use a new directory."
            )

    def latest_step(self) -> int | None:
        """The newest complete step, or None when the directory holds none."""
        self._check_open()
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """Every complete step on disk, ascending."""
        self._check_open()
        return sorted(self._manager.all_steps())

    def set_aside(self, step: int, where: str | os.PathLike) -> str:
        """Moves step ``step`` out of the directory into ``where/<step>`` (kept, never
        deleted: a damaged checkpoint may still be worth reading by hand); returns the path."""
        self._check_open()
        self.wait()
        dest = os.path.join(os.fspath(where), str(step))
        os.makedirs(os.fspath(where), exist_ok=True)
        if os.path.exists(dest):
            dest = f"{dest}-{len(os.listdir(os.fspath(where)))}"
        os.replace(os.path.join(self.directory, str(step)), dest)
        self._manager.reload()
        return dest

    def reload(self) -> None:
        """Re-reads the steps on disk (after another process changed the directory)."""
        self._check_open()
        self._manager.reload()

    def restore(self, target: Any, step: int | None = None) -> tuple[Any, dict]:
        """Restores ``(state, meta)`` of ``step`` (default: the latest) into ``target``'s structure.

        Args:
          target: a pytree with the saved structure; leaves are arrays or ``jax.ShapeDtypeStruct``
            (e.g. ``jax.eval_shape(init_fn, key)``). Only shapes, dtypes and shardings are read.

        Raises:
          FileNotFoundError: the directory holds no complete step, or not ``step``.
          ValueError: the target's tree paths, shapes or dtypes differ from the checkpoint's.
        """
        step = self._resolve_step(step)
        self._check_target(target, step)
        abstract = jax.tree.map(_abstract_leaf, target)
        try:
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(
                    **{_STATE: ocp.args.StandardRestore(abstract), _META: _MetaRestore()}
                ),
            )
        except ValueError as e:
            raise ValueError(
                f"checkpoint step {step} in {self.directory} does not match the restore target: "
                f"{e}\nBuild the target from the configuration the checkpoint was saved with "
                f"(restore_meta() returns it), or start in a new directory."
            ) from e
        return restored[_STATE], restored[_META]

    def restore_meta(self, step: int | None = None) -> dict:
        """Restores only the meta dict of ``step`` (default: the latest); no state is read."""
        step = self._resolve_step(step)
        restored = self._manager.restore(step, args=ocp.args.Composite(**{_META: _MetaRestore()}))
        return restored[_META]

    def wait(self) -> None:
        """Blocks until every asynchronous save has been committed to disk.

        Raises:
          StorageError: the write failed (a full disk, a quota, a file size limit).
        """
        self._check_open()
        with self._writing():
            self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases orbax's threads; safe to call twice."""
        if self._closed:
            return
        try:
            with self._writing():
                self._manager.wait_until_finished()
        finally:
            self._manager.close()
            self._closed = True

    @contextlib.contextmanager
    def _writing(self):
        """Turns a failed write of the checkpoint in flight into a StorageError that names it
        and the complete ones, which orbax never touches when a later save fails."""
        try:
            yield
        except (OSError, ValueError) as err:
            text = str(err)
            if not isinstance(err, OSError) and "os_error_code" not in text:
                raise
            step, self._in_flight = self._in_flight, None
            # From the directory: orbax's own list already leaves out what it meant to delete.
            done = sorted(int(n) for n in os.listdir(self.directory) if n.isdigit())
            code = re.search(r"os_error_code='?(\d+)", text)
            if isinstance(err, OSError) and err.errno:
                cause = f"{err.strerror} (errno {err.errno})"
            elif code:
                cause = f"{os.strerror(int(code.group(1)))} (errno {code.group(1)})"
            else:
                cause = text.splitlines()[0][:300]
            raise StorageError(
                f"writing checkpoint {step} to {self.directory} failed: {cause}. The "
                f"complete checkpoints {done} are unchanged; free disk space (or raise the "
                "quota) and re-run the same command to resume from the latest"
            ) from err

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"Checkpointer for {self.directory} is closed; create a new one")

    def _resolve_step(self, step: int | None) -> int:
        self._check_open()
        steps = self.all_steps()
        if not steps:
            raise FileNotFoundError(
                f"no complete checkpoint in {self.directory}: nothing to restore. Check the "
                f"directory, or start from scratch (Checkpointer.latest_step() is None)."
            )
        if step is None:
            return steps[-1]
        if int(step) not in steps:
            raise FileNotFoundError(
                f"checkpoint step {step} not found in {self.directory}; available steps: {steps}"
            )
        return int(step)

    def _check_target(self, target: Any, step: int) -> None:
        """Compares the target's leaves with the on-disk metadata and names every difference.

        Orbax would otherwise cast a dtype mismatch silently, which breaks exact resumption.
        """
        metadata = self._manager.item_metadata(step)[_STATE]
        tree = getattr(metadata, "tree", metadata)
        if tree is None:
            return  # No metadata written (older format): orbax's own checks still apply.
        saved = {
            _path_name(path): leaf
            for path, leaf in jax.tree_util.tree_flatten_with_path(
                tree, is_leaf=lambda x: hasattr(x, "shape") and hasattr(x, "dtype")
            )[0]
        }
        wanted = {
            _path_name(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(target)[0]
        }
        problems = []
        for name in sorted(saved.keys() - wanted.keys()):
            problems.append(f"  {name}: in the checkpoint, missing from the target")
        for name in sorted(wanted.keys() - saved.keys()):
            problems.append(f"  {name}: in the target, missing from the checkpoint")
        for name in sorted(saved.keys() & wanted.keys()):
            expected = _stored_shape_dtype(wanted[name])
            if expected is None:
                continue  # Python scalars: orbax restores their saved value and type.
            have = (tuple(saved[name].shape), np.dtype(saved[name].dtype))
            if have != expected:
                problems.append(
                    f"  {name}: checkpoint has shape {have[0]} dtype {have[1]}, "
                    f"target has shape {expected[0]} dtype {expected[1]}"
                )
        if problems:
            raise TargetMismatch(
                f"checkpoint step {step} in {self.directory} does not match the restore target "
                f"({len(problems)} difference(s)):\n"
                + "\n".join(problems)
                + "\nBuild the target from the configuration the checkpoint was saved with "
                "(restore_meta() returns it), or start in a new directory."
            )


def _path_name(path: tuple) -> str:
    """Dotted name of a jax key path: ``.opt[0].mu['w']`` -> ``opt.0.mu.w``."""
    parts = []
    for key in path:
        for attr in ("name", "key", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return ".".join(parts)


def _is_prng_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _stored_shape_dtype(leaf: Any) -> tuple[tuple[int, ...], np.dtype] | None:
    """(shape, dtype) a target leaf has on disk; typed keys are stored as their key data."""
    if _is_prng_key(leaf):
        data = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(leaf.shape, leaf.dtype))
        return tuple(data.shape), np.dtype(data.dtype)
    if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
        return tuple(leaf.shape), np.dtype(leaf.dtype)
    return None


def _abstract_leaf(leaf: Any) -> Any:
    """Replaces a jax array with its ShapeDtypeStruct, so donated (deleted) buffers are fine.

    A leaf without a sharding is restored onto this process's first device: orbax would
    otherwise ask for the devices the checkpoint was written from, which a run saved on 4
    devices and read on 1 does not have."""
    if isinstance(leaf, jax.Array):
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding)
    if isinstance(leaf, jax.ShapeDtypeStruct) and leaf.sharding is None:
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device)
    return leaf
