"""The open-loop report: what the world model predicts from a few observed steps and the actions
alone, against what happened.

On a batch of sequences ``[B, T, ...]`` the model observes the first ``CONTEXT`` steps, then
imagines the rest from the actions. Three views of the same predictions:

- ``openloop_grid``: image observations as video frames, truth | prediction | error per row;
- ``openloop_figure``: vector observations (one panel per dimension, first sequence), the reward
  and the continue probability as curves against the truth, the imagined part shaded;
- ``openloop_errors``: scalars of the squared error at a few horizons after the context.
"""

from __future__ import annotations

import io
import math

import numpy as np

__all__ = [
    "CONTEXT",
    "HORIZONS",
    "MAX_PANELS",
    "openloop_errors",
    "openloop_figure",
    "openloop_grid",
    "targets",
]

CONTEXT = 5  # observed steps before the model predicts open loop (DreamerV3's report uses 5)
HORIZONS = (1, 5, 10, 25, 50)  # imagined steps after the context at which errors are logged
MAX_PANELS = 30  # vector dimensions drawn (the first ones); the errors average over all


def _unit_float(x: np.ndarray, what: str) -> np.ndarray:
    """uint8 as x / 255, floats clipped to [0, 1]."""
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
    t = _unit_float(truth, "truth")
    p = _unit_float(pred, "pred")
    grid = np.concatenate([t, p, np.abs(p - t)], axis=3)  # [B, T, H, 3W, C]
    b, steps, h, w3, c = grid.shape
    grid = grid.transpose(1, 0, 2, 3, 4).reshape(steps, b * h, w3, c)
    return np.round(grid * 255.0).astype(np.uint8)


def targets(batch: dict[str, np.ndarray], cont_target: float = 1.0) -> dict[str, np.ndarray]:
    """What the predictions of ``WorldModel.openloop`` are compared with, ``[B, T, ...]``:
    observations (images on the [0, 1] scale), ``reward`` r_t and ``cont`` =
    (1 - is_terminal_t) * cont_target (the continue head's target)."""
    out = {}
    for key in ("image", "vector"):
        if key in batch:
            x = np.asarray(batch[key])
            out[key] = _unit_float(x, key) if key == "image" else x.astype(np.float32)
    out["reward"] = np.asarray(batch["reward"], np.float32)
    out["cont"] = (1.0 - np.asarray(batch["is_terminal"], np.float32)) * cont_target
    return out


def openloop_errors(
    truth: dict[str, np.ndarray], pred: dict[str, np.ndarray], context: int = CONTEXT
) -> dict[str, float]:
    """Mean squared error of the open-loop predictions h steps after the context.

    For every key of ``truth`` (``[B, T, ...]``) and every h in HORIZONS with context + h <= T:
    ``openloop/<key>_mse_h<h>`` = mean over the batch and the key's dimensions of
    (pred[:, context + h - 1] - truth[:, context + h - 1])^2 (images on the [0, 1] scale).
    ``openloop/<key>_mse_context`` is the same over the observed steps (reconstruction).
    """
    out: dict[str, float] = {}
    for key, true in truth.items():
        guess = np.asarray(pred[key], np.float32)
        if guess.shape != true.shape:
            raise ValueError(f"{key}: prediction {guess.shape} and truth {true.shape} differ")
        sq = (guess - true) ** 2
        out[f"openloop/{key}_mse_context"] = float(sq[:, :context].mean())
        for h in HORIZONS:
            if context + h <= true.shape[1]:
                out[f"openloop/{key}_mse_h{h}"] = float(sq[:, context + h - 1].mean())
    return out


def openloop_figure(
    truth: dict[str, np.ndarray], pred: dict[str, np.ndarray], context: int = CONTEXT
) -> np.ndarray:
    """The first sequence's predictions as curves: one panel per vector dimension (the first
    MAX_PANELS), then reward and continue; truth solid, prediction dashed, the imagined steps
    shaded. Returns the picture as ``[H, W, 3]`` uint8 (rendered with matplotlib's Agg)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    series = []
    if "vector" in truth:
        dims = truth["vector"].shape[-1]
        for d in range(min(dims, MAX_PANELS)):
            series.append((f"vector[{d}]", truth["vector"][0, :, d], pred["vector"][0, :, d]))
    series.append(("reward", truth["reward"][0], pred["reward"][0]))
    series.append(("continue", truth["cont"][0], pred["cont"][0]))
    cols = min(6, len(series))
    rows = math.ceil(len(series) / cols)
    fig = Figure(figsize=(2.2 * cols, 1.6 * rows + 0.4), dpi=80)
    steps = np.arange(len(series[0][1]))
    for i, (name, true, guess) in enumerate(series):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.axvspan(context - 0.5, steps[-1] + 0.5, color="0.92", lw=0)
        ax.plot(steps, true, color="black", lw=1.2, label="truth")
        ax.plot(steps, guess, color="tab:red", lw=1.2, ls="--", label="prediction")
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=6)
        ax.locator_params(nbins=4)
    fig.axes[0].legend(fontsize=6, loc="best")
    dims = truth["vector"].shape[-1] if "vector" in truth else 0
    shown = f" (first {MAX_PANELS} of {dims} dimensions)" if dims > MAX_PANELS else ""
    fig.suptitle(
        f"open loop: {context} steps observed, the rest (shaded) imagined from the actions" + shown,
        fontsize=9,
    )
    # Fixed margins: matplotlib's tight_layout measures every tick label and costs more than
    # drawing the figure.
    top = 1.0 - 0.4 / fig.get_figheight()
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.08, top=top - 0.06, hspace=0.6, wspace=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    from PIL import Image

    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))
