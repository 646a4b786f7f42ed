"""Learning curves of runs next to DreamerV3's published ones, drawn into a PNG and an SVG.

    python -m experiments.plot LOGDIR [LOGDIR ...] --out curves.png [--metric both|eval|train]
        [--no-reference] [--title TEXT] [--from-result FILE ...]

``rssm-plot`` is the same command. It writes ``curves.png`` and ``curves.svg`` beside it.

What it draws:

- x: environment steps, the ``step`` column of ``metrics.jsonl`` (agent steps x action repeat).
- y: the evaluation return (``eval/return``) and the training episodes' return
  (``episode/return``), one row of panels each (``--metric eval`` or ``train``: that row only).
- One column of panels per task and observation mode (``env.task``, ``env.obs`` of each
  logdir's ``config.json``); in a panel, one line per agent (``config.json``'s ``agent``).
- Seeds: each logdir of the same task, observation mode and agent is one seed, and so is each
  ``seed<k>/`` of a ``--run.seeds K`` run (rows in ``<logdir>/seed<k>/metrics.jsonl``, config in
  ``<logdir>/config.json``). ``aggregate`` puts the seeds on one grid of steps by linear
  interpolation; the line is their mean, the shaded band the mean ± one standard deviation over
  seeds (population, ddof 0: no band for one seed).
- Reference: DreamerV3's published curve of the same task and observation mode
  (``experiments.reference_scores``), aggregated the same way over its seeds, gray and dashed,
  cut at the panel's last step of ours. Tasks the paper did not run have none.

``--from-result FILE`` adds a curve from the JSON that ``benchmarks/learning.py`` prints (its
``eval_return`` and ``train_episode_return``), labelled with its agent and preset.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from experiments.curves import (
    METRICS,
    Band,
    CurveError,
    Seed,
    aggregate,
    cut,
    read_logdir,
    read_result,
)
from experiments.reference_scores import SOURCE, load_reference

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["draw", "main", "plot"]

METRIC_CHOICES = {"both": ("eval", "train"), "eval": ("eval",), "train": ("train",)}
PANEL_INCHES = (5.0, 3.5)
DPI = 100
REFERENCE_COLOR = "0.35"
REFERENCE_LABEL = "DreamerV3, published"


def _check_metrics(seeds: Sequence[Seed], metrics: Sequence[str]) -> None:
    """Every seed has points of every metric drawn; else an error naming the seed."""
    for seed in seeds:
        for name in metrics:
            key = METRICS[name][0]
            if key not in seed.curves:
                others = [m for m in METRICS if METRICS[m][0] in seed.curves]
                fix = f"draw --metric {others[0]} only" if others else "pass a run that logged one"
                raise CurveError(f"{seed.source} has no rows of {key!r}: {fix}")


def _panels(seeds: Sequence[Seed]) -> dict[tuple[str, str], dict[str, list[Seed]]]:
    """Seeds by (task, observation mode), then by label, in the order they came."""
    panels: dict[tuple[str, str], dict[str, list[Seed]]] = {}
    for seed in seeds:
        panels.setdefault((seed.task, seed.obs), {}).setdefault(seed.label, []).append(seed)
    return panels


def _draw_band(ax: Axes, band: Band, color: str, label: str, dashed: bool = False) -> None:
    """The mean as a line (a dot where the band is one step) and the spread shaded."""
    marker = "o" if len(band.steps) == 1 else None
    style = "--" if dashed else "-"
    ax.plot(band.steps, band.mean, color=color, ls=style, marker=marker, lw=1.8, label=label)
    ax.fill_between(band.steps, band.low, band.high, color=color, alpha=0.18, lw=0)


def _steps_text(x: float) -> str:
    """An axis tick in steps: 0, 2.5k, 500k, 1M."""
    if abs(x) >= 1e6:
        return f"{x / 1e6:g}M"
    return f"{x / 1e3:g}k" if x else "0"


def _seeds_label(label: str, seeds: int) -> str:
    return f"{label}, {seeds} seed{'s' if seeds != 1 else ''}"


def _draw_panel(
    ax: Axes, groups: dict[str, list[Seed]], key: str, reference: Band | None, stop: float
) -> None:
    """One task's curves of one metric: each label's band, then the reference's."""
    for i, (label, seeds) in enumerate(groups.items()):
        try:
            band = aggregate([seed.curves[key] for seed in seeds])
        except CurveError as err:
            sources = ", ".join(seed.source for seed in seeds)
            raise CurveError(f"{key} of {sources}: {err}") from None
        _draw_band(ax, band, f"C{i}", _seeds_label(label, band.seeds))
    if reference is not None:
        label = _seeds_label(REFERENCE_LABEL, reference.seeds)
        _draw_band(ax, reference, REFERENCE_COLOR, label, dashed=True)
    ax.set_xlim(0, max(stop, 1.0))
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_formatter(lambda x, _: _steps_text(x))
    ax.legend(title="line: mean; band: ± 1 std", fontsize="small", title_fontsize="small")


def draw(
    seeds: Sequence[Seed],
    metrics: Sequence[str] = ("eval", "train"),
    reference: bool = True,
    title: str | None = None,
) -> Figure:
    """A matplotlib ``Figure``: one row per metric name of ``METRICS``, one column per task and
    observation mode, each panel the seeds' bands and, with ``reference``, DreamerV3's."""
    from matplotlib.figure import Figure  # no pyplot: no display and no global state

    panels = _panels(seeds)
    size = (PANEL_INCHES[0] * len(panels), PANEL_INCHES[1] * len(metrics))
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    axes = fig.subplots(len(metrics), len(panels), squeeze=False)
    for col, ((task, obs), groups) in enumerate(panels.items()):
        keys = [METRICS[name][0] for name in metrics]
        stop = max(s.curves[k][0][-1] for g in groups.values() for s in g for k in keys)
        ref = _reference(task, obs, stop) if reference else None
        for row, name in enumerate(metrics):
            key, axis_label = METRICS[name]
            ax = axes[row, col]
            _draw_panel(ax, groups, key, ref, stop)
            ax.set_xlabel("environment steps")
            ax.set_ylabel(axis_label)
            ax.set_title(f"{task} ({obs})", fontsize="medium")
    if title:
        fig.suptitle(title)
    return fig


def _reference(task: str, obs: str, stop: float) -> Band | None:
    """DreamerV3's band for a panel, cut at its last step (None where there is none)."""
    curves = load_reference(task, obs)
    if curves is None:
        return None
    whole = aggregate(curves)
    band = cut(whole, stop)
    if band is None:
        print(
            f"note: {SOURCE}'s curve of {task} ({obs}) starts at step {whole.steps[0]:g}, "
            f"after the last step drawn ({stop:g}): not drawn",
            file=sys.stderr,
        )
    return band


def plot(
    logdirs: Sequence[str | Path],
    out: str | Path,
    *,
    results: Sequence[str | Path] = (),
    metric: str = "both",
    reference: bool = True,
    title: str | None = None,
) -> tuple[Path, Path]:
    """Draws the runs of ``logdirs`` (and of ``results``, learning-benchmark JSONs) into
    ``out`` (.png) and the SVG beside it; returns the two paths. Every input is read and
    checked before anything is drawn."""
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise CurveError(f"--out {out}: the file must end in .png (the SVG goes beside it)")
    if metric not in METRIC_CHOICES:
        raise CurveError(f"--metric {metric!r}: choose one of {sorted(METRIC_CHOICES)}")
    if not logdirs and not results:
        raise CurveError("nothing to draw: pass a LOGDIR or --from-result FILE")
    seeds = [seed for logdir in logdirs for seed in read_logdir(logdir)]
    seeds += [read_result(path) for path in results]
    metrics = METRIC_CHOICES[metric]
    _check_metrics(seeds, metrics)
    fig = draw(seeds, metrics, reference=reference, title=title)
    out.parent.mkdir(parents=True, exist_ok=True)
    svg = out.with_suffix(".svg")
    fig.savefig(out, format="png")
    fig.savefig(svg, format="svg")
    return out, svg


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (see the module doc); exit status 2 with one line on a bad input."""
    parser = argparse.ArgumentParser(
        prog="rssm-plot",
        description="Learning curves of runs next to DreamerV3's published ones (PNG and SVG).",
    )
    parser.add_argument("logdirs", nargs="*", metavar="LOGDIR", help="run directories")
    parser.add_argument("--out", required=True, help="the PNG to write; the SVG goes beside it")
    parser.add_argument(
        "--from-result",
        action="append",
        default=[],
        metavar="FILE",
        help="a JSON printed by benchmarks/learning.py, drawn as one seed (repeatable)",
    )
    parser.add_argument(
        "--metric",
        choices=sorted(METRIC_CHOICES),
        default="both",
        help="eval: eval/return; train: episode/return; both: one row of panels each",
    )
    parser.add_argument("--no-reference", action="store_true", help="leave DreamerV3's out")
    parser.add_argument("--title", default=None, help="a title above the panels")
    args = parser.parse_args(argv)
    try:
        paths = plot(
            args.logdirs,
            args.out,
            results=args.from_result,
            metric=args.metric,
            reference=not args.no_reference,
            title=args.title,
        )
    except CurveError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(" ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
