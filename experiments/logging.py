"""Metrics and videos: console and ``metrics.jsonl`` always, Weights & Biases and TensorBoard
optionally.

``Logger`` writes every scalar up to four ways: one JSON line per call to
``<logdir>/metrics.jsonl`` (the record tools and tests read), one compact console line, wandb
when enabled, and TensorBoard event files under ``<logdir>/tb`` with ``tensorboard=True``
(``tensorboard --logdir <logdir>/tb``). wandb runs in ``online``, ``offline`` (files under
``<logdir>/wandb``, upload later with ``wandb sync``) or ``disabled`` mode (wandb is not touched
at all). ``WANDB_SILENT=true`` silences wandb's own messages; the console line is this module's
and always printed.

The x axis is the run's step (environment steps in the runner). wandb gets it as the metric
``env_steps``, declared the step metric of every other one, and never as wandb's own ``step=``:
a run resumed from a checkpoint logs steps below the last ones its killed predecessor sent,
which wandb would drop as non-monotonic; as a metric they are kept and drawn at their place.

Videos are animated GIFs written with pillow, so wandb needs no moviepy to show them.

``read_offline_run`` parses an offline run's ``run-<id>.wandb`` file (wandb's LevelDB-style record
log) back into its config and history, for tests and tools: wandb 0.31 has no command that
prints an offline run.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import string
import struct
import sys
import time
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Logger", "drop_rows_after", "openloop_grid", "read_jsonl", "read_offline_run"]

_WANDB_MODES = ("online", "offline", "disabled")
STEP_METRIC = "env_steps"  # wandb's x axis (see the module doc)
_FLUSH_TIMEOUT_S = 60.0
_RUN_ID_CHARS = string.ascii_lowercase + string.digits


def _new_run_id() -> str:
    # wandb's own format (8 lowercase letters and digits); wandb 0.31 no longer exports
    # wandb.util.generate_id. Run ids must differ between runs, so they come from the OS, not
    # from the experiment seed.
    return "".join(secrets.choice(_RUN_ID_CHARS) for _ in range(8))


class Logger:
    """Writes scalars and videos of one run to the console, ``metrics.jsonl`` and wandb.

    Args:
      logdir: the run directory; ``metrics.jsonl``, ``videos/`` and ``wandb/`` go inside it.
      config: the resolved config dict, handed to ``wandb.init(config=...)``.
      wandb_mode: ``'online'``, ``'offline'`` or ``'disabled'``.
      project, entity, group, name, tags: passed to ``wandb.init``.
      run_id: the wandb run id to resume (``wandb.init(id=run_id, resume='allow')``); a new
        one is generated when None. Either way it is ``self.run_id``, for the checkpoint.
      tensorboard: also write TensorBoard event files to ``<logdir>/tb`` (scalars only).
    """

    run_id: str

    def __init__(
        self,
        logdir: str | os.PathLike,
        config: dict,
        *,
        wandb_mode: str = "disabled",
        project: str = "rssm-jax",
        entity: str | None = None,
        group: str | None = None,
        name: str | None = None,
        tags: Sequence[str] = (),
        run_id: str | None = None,
        tensorboard: bool = False,
    ):
        if wandb_mode not in _WANDB_MODES:
            raise ValueError(f"wandb_mode must be one of {_WANDB_MODES}, got {wandb_mode!r}")
        if isinstance(tags, str):
            raise TypeError(f"tags must be a sequence of strings, got the string {tags!r}")
        if run_id is not None and (not isinstance(run_id, str) or not run_id):
            raise ValueError(f"run_id must be a non-empty string or None, got {run_id!r}")
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.wandb_mode = wandb_mode
        self.run_id = run_id if run_id is not None else _new_run_id()
        self._closed = False
        # Appending keeps the earlier lines of a resumed run.
        self._jsonl = open(self.logdir / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        self._run: Any = None
        self._run_file: Path | None = None
        if wandb_mode != "disabled":
            import wandb

            self._wandb = wandb
            init = functools.partial(
                wandb.init,
                project=project,
                entity=entity,
                group=group,
                name=name,
                tags=list(tags),
                config=config,
                resume="allow",
                dir=str(self.logdir.resolve()),
                # Each Logger owns its run, so several can live in one process.
                reinit="create_new",
            )
            try:
                try:
                    self._run = init(mode=wandb_mode, id=self.run_id)
                except Exception as err:
                    if wandb_mode != "online":
                        raise
                    # No login or no network: the run goes on and logs offline, with nothing
                    # lost (``wandb sync`` uploads it later), rather than dying hours in or
                    # never starting for want of a connection.
                    self.wandb_mode = "offline"
                    # A new id: wandb's service may still hold the one that failed.
                    self.run_id = _new_run_id()
                    self._run = init(mode="offline", id=self.run_id)
                    print(
                        f"warning: wandb online failed ({type(err).__name__}: "
                        f"{str(err).splitlines()[0][:200]}); logging offline to "
                        f"{self.logdir / 'wandb'} instead. Upload it later with `wandb sync "
                        f"{self.logdir / 'wandb'}/offline-run-*`",
                        file=sys.stderr,
                    )
            except BaseException:
                self._jsonl.close()
                raise
            self._run_file = Path(self._run.settings.sync_file).resolve()
            self._run.define_metric(STEP_METRIC)
            self._run.define_metric("*", step_metric=STEP_METRIC)
        self._tb: Any = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(self.logdir / "tb"))

    def __enter__(self) -> Logger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def wandb_run(self) -> Any:
        """The ``wandb.Run`` of this logger, or None when wandb is disabled."""
        return self._run

    def scalars(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Logs scalar metrics at ``step``.

        Values may be Python, numpy or jax scalars (0-d arrays); each becomes ``float(value)``.
        ``metrics.jsonl`` gets ``{"step": step, **metrics}`` as one line, flushed at once.
        Non-finite values are kept: the line holds ``NaN``/``Infinity``, which Python's ``json``
        (and ``read_jsonl``) reads back as floats.
        """
        self._check_open()
        step = int(step)
        values: dict[str, float] = {}
        for key, value in metrics.items():
            if not isinstance(key, str):
                raise TypeError(f"metric names must be strings, got {key!r}")
            if key == "step":
                raise ValueError("'step' is reserved for the step column; rename the metric")
            array = np.asarray(value)
            if array.ndim != 0:
                raise TypeError(
                    f"metric {key!r} has shape {array.shape}; log scalars only (reduce it first, "
                    f"e.g. with .mean())"
                )
            values[key] = float(array)
        self._jsonl.write(json.dumps({"step": step, **values}) + "\n")
        self._jsonl.flush()
        print(_console_line(step, values), flush=True)
        if self._run is not None:
            self._run.log({**values, STEP_METRIC: step})
        if self._tb is not None:
            for key, value in values.items():
                self._tb.add_scalar(key, value, step)
            self._tb.flush()

    def video(self, step: int, name: str, frames: np.ndarray, fps: int = 10) -> str:
        """Writes ``frames`` as an animated GIF and logs it to wandb; returns the GIF path.

        Args:
          frames: ``[T, H, W, 3]`` (or ``[T, H, W, 1]``) uint8, or floats in [0, 1].
          fps: playback rate; GIF stores delays in 10 ms units, so it is rounded to that.

        The file is ``<logdir>/videos/{name}_{step:09d}.gif`` (``/`` in ``name`` becomes ``_``).
        Pillow merges identical consecutive frames into one longer frame.
        """
        self._check_open()
        frames = _to_uint8(np.asarray(frames), "frames")
        if frames.ndim != 4 or frames.shape[-1] not in (1, 3) or frames.shape[0] < 1:
            raise ValueError(f"frames must have shape [T, H, W, 3] with T >= 1, got {frames.shape}")
        if isinstance(fps, bool) or not isinstance(fps, int) or fps < 1:
            raise ValueError(f"fps must be a positive int, got {fps!r}")
        path = self.logdir / "videos" / f"{name.replace('/', '_')}_{int(step):09d}.gif"
        write_gif(path, frames, fps)
        if self._run is not None:
            video = self._wandb.Video(str(path), format="gif")
            self._run.log({name: video, STEP_METRIC: int(step)})
        return str(path)

    def close(self) -> None:
        """Finishes the wandb run and closes ``metrics.jsonl``; safe to call twice.

        In offline mode it returns once the run file is complete on disk, so the run can be read
        back (``read_offline_run``) or synced right away.
        """
        if self._closed:
            return
        self._closed = True
        try:
            if self._tb is not None:
                self._tb.close()
            if self._run is not None:
                self._run.finish()
                if self.wandb_mode == "offline" and self._run_file is not None:
                    _wait_for_exit_record(self._run_file, _FLUSH_TIMEOUT_S)
        finally:
            self._jsonl.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"Logger for {self.logdir} is closed; create a new one")


def write_gif(path: str | os.PathLike, frames: np.ndarray, fps: int = 10) -> Path:
    """Writes ``frames [T, H, W, 3 or 1]`` (uint8, or floats in [0, 1]) as a looping GIF."""
    frames = _to_uint8(np.asarray(frames), "frames")
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3) or frames.shape[0] < 1:
        raise ValueError(f"frames must have shape [T, H, W, 3] with T >= 1, got {frames.shape}")
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(frame) for frame in frames]
    images[0].save(
        path, save_all=True, append_images=images[1:], duration=max(10, round(1000 / fps)), loop=0
    )
    return path


def _console_line(step: int, values: Mapping[str, float]) -> str:
    return f"[step {step}] " + " | ".join(f"{key} {value:.4g}" for key, value in values.items())


def _to_uint8(x: np.ndarray, what: str) -> np.ndarray:
    """uint8 stays; floats in [0, 1] map to round(255 * clip(x, 0, 1))."""
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.floating):
        return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)
    raise TypeError(f"{what} must be uint8 or floats in [0, 1], got dtype {x.dtype}")


def _to_unit_float(x: np.ndarray, what: str) -> np.ndarray:
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    if np.issubdtype(x.dtype, np.floating):
        return np.clip(x.astype(np.float32), 0.0, 1.0)
    raise TypeError(f"{what} must be uint8 or floats in [0, 1], got dtype {x.dtype}")


def openloop_grid(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Tiles open-loop predictions into video frames: truth | prediction | error per row.

    Args:
      truth: ``[B, T, H, W, C]`` observed frames, floats in [0, 1] or uint8.
      pred: ``[B, T, H, W, C]`` model frames (posterior reconstructions, then prior imagination).

    Returns:
      ``[T, B*H, 3*W, C]`` uint8 frames; row ``b`` is ``[truth_b, pred_b, err_b]`` with
      ``err = |pred - truth|`` on the [0, 1] scale, shown as ``round(255 * err)``.
    """
    truth, pred = np.asarray(truth), np.asarray(pred)
    if truth.ndim != 5 or truth.shape != pred.shape:
        raise ValueError(
            f"truth and pred must both be [B, T, H, W, C] of one shape, got {truth.shape} and "
            f"{pred.shape}"
        )
    t = _to_unit_float(truth, "truth")
    p = _to_unit_float(pred, "pred")
    grid = np.concatenate([t, p, np.abs(p - t)], axis=3)  # [B, T, H, 3W, C]
    b, steps, h, w3, c = grid.shape
    grid = grid.transpose(1, 0, 2, 3, 4).reshape(steps, b * h, w3, c)
    return np.round(grid * 255.0).astype(np.uint8)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """All records of a JSON-lines file, in order (blank lines skipped). A last line cut short
    (a process killed while writing it: no newline and no JSON) is left out with a warning; a
    damaged line before it raises ValueError naming the file and line."""
    return [record for _, record in _jsonl_lines(Path(path))[0]]


def _jsonl_lines(path: Path) -> tuple[list[tuple[str, dict]], bool]:
    """(the (line, record) pairs of a JSON-lines file, whether its last line was cut short)."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    out, cut = [], False
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append((line, json.loads(line)))
        except json.JSONDecodeError as err:
            if i == len(lines) - 1 and not line.endswith("\n"):
                cut = True
                print(
                    f"warning: {path}: the last line is cut short (a run killed while writing "
                    f"it); left out: {line[:80]!r}",
                    file=sys.stderr,
                )
                continue
            raise ValueError(
                f"{path}, line {i + 1}: not JSON ({err.msg}): {line[:80]!r}. Repair or remove "
                "that line"
            ) from None
    return out, cut


def drop_rows_after(path: str | os.PathLike, step: int) -> int:
    """Removes the lines of a ``metrics.jsonl`` logged after ``step`` (by a run killed after its
    last checkpoint, whose resumption logs those steps again) and a last line cut short;
    returns how many lines were removed."""
    path = Path(path)
    if not path.exists():
        return 0
    lines, cut = _jsonl_lines(path)
    keep = [line for line, record in lines if record["step"] <= step]
    if len(keep) < len(lines) or cut:
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(keep), encoding="utf-8")
        tmp.replace(path)  # atomic: a kill leaves the old file or the new one
    return len(lines) - len(keep) + cut


# wandb's transaction log (the `.wandb` file) is a LevelDB log: a 7-byte file header, then
# 32 KiB blocks of records. Each record has a 7-byte header: the plain CRC-32 (zlib) of
# type byte + payload, payload length (uint16 LE), type. A payload larger than the space left
# in a block is split FIRST, MIDDLE..., LAST; a block tail shorter than a header is zero padding.
_WANDB_MAGIC = b":W&B"
_FILE_HEADER = struct.Struct("<4sHB")
_RECORD_HEADER = struct.Struct("<IHB")
_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _read_wandb_records(data: bytes) -> list[bytes]:
    """Payloads of the records in a ``.wandb`` log, in order.

    A truncated final record (a writer killed mid-record) ends the log; a checksum mismatch or
    an out-of-order fragment raises ValueError.
    """
    if len(data) < _FILE_HEADER.size:
        raise ValueError(f"not a wandb log: {len(data)} bytes, shorter than its header")
    ident, magic, version = _FILE_HEADER.unpack_from(data, 0)
    if ident != _WANDB_MAGIC or magic != 0xBEE1 or version != 0:
        raise ValueError(f"not a wandb log (header {data[:7]!r}, expected b':W&B\\xe1\\xbe\\x00')")
    payloads: list[bytes] = []
    pending: list[bytes] | None = None
    pos = _FILE_HEADER.size
    while pos < len(data):
        left_in_block = _BLOCK - pos % _BLOCK
        if left_in_block < _RECORD_HEADER.size:
            pos += left_in_block
            continue
        if pos + _RECORD_HEADER.size > len(data):
            break
        crc, length, kind = _RECORD_HEADER.unpack_from(data, pos)
        start = pos + _RECORD_HEADER.size
        if start + length > len(data):
            break
        if kind == 0 and length == 0 and crc == 0:
            # Zero fill: the writer pre-allocated or padded the rest of the block.
            pos += left_in_block
            continue
        payload = data[start : start + length]
        if zlib.crc32(payload, zlib.crc32(bytes([kind]))) != crc:
            raise ValueError(f"wandb log checksum mismatch in the record at byte {pos}")
        pos = start + length
        if kind == _FULL and pending is None:
            payloads.append(payload)
        elif kind == _FIRST and pending is None:
            pending = [payload]
        elif kind == _MIDDLE and pending is not None:
            pending.append(payload)
        elif kind == _LAST and pending is not None:
            pending.append(payload)
            payloads.append(b"".join(pending))
            pending = None
        else:
            raise ValueError(f"wandb log record of type {kind} out of sequence at byte {pos}")
    return payloads


def _wait_for_exit_record(path: Path, timeout_s: float) -> None:
    """Blocks until the run file at ``path`` holds wandb's exit record.

    ``Run.finish()`` returns when wandb-core has processed the exit, but the core flushes and
    closes the run file afterwards, asynchronously: read at once, the file can still be only
    its 7-byte header.
    """
    from wandb.proto import wandb_internal_pb2

    deadline = time.monotonic() + timeout_s
    while True:
        if path.exists() and path.stat().st_size > _FILE_HEADER.size:
            # The exit record is among the last few; parsing only those keeps polling cheap.
            for payload in _read_wandb_records(path.read_bytes())[-16:]:
                record = wandb_internal_pb2.Record()
                record.ParseFromString(payload)
                if record.WhichOneof("record_type") == "exit":
                    return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"wandb did not finish writing {path} within {timeout_s:.0f} s after the run "
                f"finished; the file may be incomplete (check {path.parent / 'logs'})"
            )
        time.sleep(0.02)


def _item_name(item: Any) -> str:
    return item.key if item.key else ".".join(item.nested_key)


def _history_value(item: Any) -> Any:
    which = item.WhichOneof("value")
    if which is None:
        return json.loads(item.value_json)
    if which == "none":
        return None
    if which == "json":
        return json.loads(item.json)
    return getattr(item, which)


def read_offline_run(run_dir: str | os.PathLike) -> dict:
    """Reads an offline wandb run back: its id, config and logged history.

    Args:
      run_dir: an ``offline-run-*`` directory (holding ``run-<id>.wandb``) or that file.

    Returns:
      ``{"run_id": str, "config": dict, "history": [{"step": int, name: value, ...}, ...]}``;
      one history row per committed step, wandb's internal ``_``-prefixed fields left out.
      Values are as wandb stored them in JSON (a float 2.0 may come back as the int 2); media
      values are wandb's descriptions (``{"_type": "video-file", "path": ..., ...}``, the path
      relative to the run's ``files/`` directory).
    """
    from wandb.proto import wandb_internal_pb2

    path = Path(run_dir)
    if path.is_dir():
        files = sorted(path.glob("run-*.wandb"))
        if len(files) != 1:
            raise ValueError(f"expected one run-*.wandb file in {path}, found {len(files)}")
        path = files[0]
    run_id: str | None = None
    config: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    for payload in _read_wandb_records(path.read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run_id = record.run.run_id
            for item in record.run.config.update:
                config[_item_name(item)] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                config[_item_name(item)] = json.loads(item.value_json)
            for item in record.config.remove:
                config.pop(_item_name(item), None)
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                keys = [item.key] if item.key else list(item.nested_key)
                if keys == ["_step"]:
                    row.setdefault("step", int(_history_value(item)))
                elif not keys[0].startswith("_"):
                    # Media objects arrive as one item per field (nested_key ['video', 'path']).
                    node = row
                    for key in keys[:-1]:
                        node = node.setdefault(key, {})
                    node[keys[-1]] = _history_value(item)
            if record.history.HasField("step"):
                row["step"] = int(record.history.step.num)
            history.append(row)
    if run_id is None:
        raise ValueError(f"{path} holds no run record; is it a complete wandb run file?")
    config.pop("_wandb", None)
    return {"run_id": run_id, "config": config, "history": history}
