"""Metrics, images and videos: console and ``metrics.jsonl`` always, Weights & Biases and
TensorBoard optionally.

``Logger`` writes every scalar up to four ways: one JSON line per call to
``<logdir>/metrics.jsonl`` (the record tools and tests read), a short console line (returns,
losses and throughput: ``console_line``), wandb when enabled, and TensorBoard event files under
``<logdir>/tb`` with ``tensorboard=True`` (``tensorboard --logdir <logdir>/tb``). wandb runs in
``online``, ``offline`` (files under ``<logdir>/wandb``, upload later with ``wandb sync``) or
``disabled`` mode (wandb is not touched at all). ``WANDB_SILENT=true`` silences wandb's own
messages; the console line is this module's and always printed.

The x axis is the run's step (environment steps in the runner). wandb gets it as the metric
``env_steps``, declared the step metric of every other one, and never as wandb's own ``step=``:
a run resumed from a checkpoint logs steps below the last ones its killed predecessor sent,
which wandb would drop as non-monotonic; as a metric they are kept and drawn at their place.

Videos are animated GIFs and images PNGs written with pillow (wandb needs no moviepy to show
them) under ``<logdir>/videos`` and ``<logdir>/images``; wandb and TensorBoard get the same
files (TensorBoard shows a GIF as an animated image).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from experiments.envs.contract import check_int
from experiments.run.identity import new_run_id
from experiments.run.wandb_file import wait_for_exit_record

__all__ = ["Logger", "drop_rows_after", "read_jsonl", "write_gif", "write_png"]

_WANDB_MODES = ("online", "offline", "disabled")
STEP_METRIC = "env_steps"  # wandb's x axis (see the module doc)
SUMMARY_MAX_LAST = ("eval/return", "episode/return")  # summarized as their max and last value
_FLUSH_TIMEOUT_S = 60.0


class Logger:
    """Writes scalars, images and videos of one run to the console, ``metrics.jsonl`` and wandb.

    Args:
      logdir: the run directory; ``metrics.jsonl``, ``videos/`` and ``wandb/`` go inside it.
      config: the resolved config dict, handed to ``wandb.init(config=...)``.
      wandb_mode: ``'online'``, ``'offline'`` or ``'disabled'``.
      project, entity, group, name, tags: passed to ``wandb.init``.
      run_id: the wandb run id to resume (``wandb.init(id=run_id, resume='allow')``); a new
        one is generated when None. Either way it is ``self.run_id``, for the checkpoint.
      tensorboard: also write TensorBoard event files to ``<logdir>/tb`` (scalars, images and
        videos).
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
        self.run_id = run_id if run_id is not None else new_run_id()
        self._closed = False
        # Appending keeps the earlier lines of a resumed run.
        self._jsonl = open(self.logdir / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        self._run: Any = None
        self._run_file: Path | None = None
        if wandb_mode != "disabled":
            try:
                self._start_wandb(
                    project=project,
                    entity=entity,
                    group=group,
                    name=name,
                    tags=list(tags),
                    config=config,
                )
            except BaseException:
                self._jsonl.close()
                raise
        self._tb: Any = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(self.logdir / "tb"))

    def _start_wandb(self, **kwargs: Any) -> None:
        """``wandb.init`` (resuming ``self.run_id``); online without a login or a network, the
        run goes on offline with a warning."""
        # wandb suggests its LLM tracer (Weave) when a module named like an LLM library is
        # imported, and this project's package is called `agents`: the banner means nothing here.
        os.environ.setdefault("WANDB_DISABLE_WEAVE", "true")
        import wandb

        self._wandb = wandb
        # Each Logger owns its run (reinit), so several can live in one process.
        init = functools.partial(
            wandb.init,
            resume="allow",
            dir=str(self.logdir.resolve()),
            reinit="create_new",
            **kwargs,
        )
        try:
            self._run = init(mode=self.wandb_mode, id=self.run_id)
        except Exception as err:
            if self.wandb_mode != "online":
                raise
            # Nothing is lost (``wandb sync`` uploads it later), rather than dying hours in or
            # never starting for want of a connection.
            self.wandb_mode = "offline"
            # A new id: wandb's service may still hold the one that failed.
            self.run_id = new_run_id()
            self._run = init(mode="offline", id=self.run_id)
            print(
                f"warning: wandb online failed ({type(err).__name__}: "
                f"{str(err).splitlines()[0][:200]}); logging offline to "
                f"{self.logdir / 'wandb'} instead. Upload it later with `wandb sync "
                f"{self.logdir / 'wandb'}/offline-run-*`",
                file=sys.stderr,
            )
        self._run_file = Path(self._run.settings.sync_file).resolve()
        self._run.define_metric(STEP_METRIC)
        self._run.define_metric("*", step_metric=STEP_METRIC)
        # The run table shows the best and the final evaluation, not only the last.
        for name in SUMMARY_MAX_LAST:
            self._run.define_metric(name, step_metric=STEP_METRIC, summary="max,last")

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
        line = console_line(step, values)
        if line is not None:
            print(line, flush=True)
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
        fps = check_int("fps", fps, 1, fix="frames per second of the GIF")
        path = self.logdir / "videos" / f"{name.replace('/', '_')}_{int(step):09d}.gif"
        write_gif(path, frames, fps)
        if self._run is not None:
            video = self._wandb.Video(str(path), format="gif")
            self._run.log({name: video, STEP_METRIC: int(step)})
        if self._tb is not None:
            # TensorBoard's image dashboard plays an animated GIF: the encoded file as it is.
            self._tb_encoded(name, step, path, frames.shape[1:3], frames.shape[-1])
        return str(path)

    def image(self, step: int, name: str, image: np.ndarray) -> str:
        """Writes ``image`` ``[H, W, 3]`` (uint8, or floats in [0, 1]) as a PNG and logs it to
        wandb and TensorBoard; returns the path ``<logdir>/images/{name}_{step:09d}.png``."""
        self._check_open()
        image = _to_uint8(np.asarray(image), "image")
        if image.ndim != 3 or image.shape[-1] not in (1, 3):
            raise ValueError(f"image must have shape [H, W, 3], got {image.shape}")
        path = self.logdir / "images" / f"{name.replace('/', '_')}_{int(step):09d}.png"
        write_png(path, image)
        if self._run is not None:
            self._run.log({name: self._wandb.Image(str(path)), STEP_METRIC: int(step)})
        if self._tb is not None:
            self._tb_encoded(name, step, path, image.shape[:2], image.shape[-1])
        return str(path)

    def _tb_encoded(self, name: str, step: int, path: Path, size: tuple, channels: int) -> None:
        """An encoded image file (PNG, or GIF for a video) as a TensorBoard image summary."""
        from tensorboardX.proto.summary_pb2 import Summary

        picture = Summary.Image(
            height=int(size[0]),
            width=int(size[1]),
            colorspace=int(channels),
            encoded_image_string=path.read_bytes(),
        )
        summary = Summary(value=[Summary.Value(tag=name, image=picture)])
        self._tb.file_writer.add_summary(summary, int(step))
        self._tb.flush()

    def artifact(self, directory: str | os.PathLike, step: int) -> None:
        """Uploads a checkpoint ``directory`` as the wandb artifact ``checkpoint-<run id>`` (type
        'model'), aliased ``step-<step>`` and ``latest``; nothing when wandb is disabled."""
        self._check_open()
        if self._run is None:
            return
        art = self._wandb.Artifact(
            f"checkpoint-{self.run_id}", type="model", metadata={STEP_METRIC: int(step)}
        )
        art.add_dir(str(directory))
        self._run.log_artifact(art, aliases=[f"step-{int(step)}", "latest"])

    def close(self) -> None:
        """Finishes the wandb run and closes ``metrics.jsonl``; safe to call twice.

        In offline mode it returns once the run file is complete on disk, so the run can be read
        back or synced right away.
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
                    wait_for_exit_record(self._run_file, _FLUSH_TIMEOUT_S)
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
    # Each frame gets its own 256-colour palette from the fast octree quantizer: the default
    # (median cut) costs about 40x as long for the same picture.
    images = [Image.fromarray(f).quantize(256, method=Image.Quantize.FASTOCTREE) for f in frames]
    images[0].save(
        path, save_all=True, append_images=images[1:], duration=max(10, round(1000 / fps)), loop=0
    )
    return path


def write_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Writes ``image [H, W, 3 or 1]`` uint8 as a PNG (creating its folder)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.asarray(image)
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(path)
    return path


# What the console shows of a row, in this order, with its label; metrics.jsonl has them all.
CONSOLE_RETURNS = {"episode/return": "return", "eval/return": "eval return"}
CONSOLE_RATES = {"run/env_steps_per_s": "env steps/s", "run/updates_per_s": "updates/s"}


def console_line(step: int, values: Mapping[str, float]) -> str | None:
    """The console's short form of a row: returns, then every loss (a name whose last part is
    ``loss`` or ends in ``_loss``), then throughput; None for a row without any of them.

    ``[step 4000] return 202.4 | wm/loss 2.14  actor/actor_loss 0.708 | 157 env steps/s``
    """
    parts = [
        f"{label} {values[key]:.4g}" for key, label in CONSOLE_RETURNS.items() if key in values
    ]
    losses = [
        f"{key} {value:.3g}"
        for key, value in values.items()
        if key.rsplit("/", 1)[-1] == "loss" or key.endswith("_loss")
    ]
    if losses:
        parts.append("  ".join(losses))
    rates = [f"{values[key]:.3g} {label}" for key, label in CONSOLE_RATES.items() if key in values]
    if rates:
        parts.append(", ".join(rates))
    return f"[step {step}] " + " | ".join(parts) if parts else None


def _to_uint8(x: np.ndarray, what: str) -> np.ndarray:
    """uint8 stays; floats in [0, 1] map to round(255 * clip(x, 0, 1))."""
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.floating):
        return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)
    raise TypeError(f"{what} must be uint8 or floats in [0, 1], got dtype {x.dtype}")


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
