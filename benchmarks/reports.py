"""What a run's pictures cost: one open-loop report and one evaluation video, printed as JSON.

    python benchmarks/reports.py [--presets debug,dreamerv3] [--repeats 3] [--out FILE]

Open-loop report (``Reports.log_openloop``), per preset and observation kind, on a batch of the
preset's B x T: the compiled ``openloop`` call (first call = compile + run, then the median
of ``--repeats`` runs), the errors by horizon, the curves' picture (matplotlib), and for images
the video grid and its GIF; and one update on the same batch, so that ``report_over_update``
says what a report costs in updates (a ratio that holds across machines better than seconds).
Evaluation video: rendering a dm-control proprio task's camera per agent step at 64x64 and
writing the GIF of a 1000-step episode. A report is due every ``run.report_every`` environment
steps, an evaluation video with every evaluation, so each cost is paid once per interval, not
per step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from experiments.config import compose, make_agent, replace
from experiments.envs import make_env
from experiments.run import openloop as ol
from experiments.run.logging import write_gif, write_png

ACTION_DIM = 6
VECTOR_DIM = 24  # walker-walk's state vector


def _median_s(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def openloop_cost(preset: str, obs: str, repeats: int) -> dict[str, Any]:
    """Seconds of each part of one open-loop report for ``preset`` observing ``obs``."""
    cfg = replace(compose(preset), {"env.obs": obs})
    shape = (64, 64, 3) if obs == "pixels" else (VECTOR_DIM,)
    key = "image" if obs == "pixels" else "vector"
    agent = make_agent(cfg, ((key, shape),), ACTION_DIM)
    state = agent.init(jax.random.key(0))
    b, t = cfg.run.batch_size, cfg.run.batch_length
    batch = {k: np.asarray(v) for k, v in agent.dummy_batch(b, t).items() if k != "context"}
    rng = np.random.default_rng(0)
    if obs == "pixels":
        batch["image"] = rng.integers(0, 256, batch["image"].shape, dtype=np.uint8)
    else:
        batch["vector"] = rng.normal(size=batch["vector"].shape).astype(np.float32)
    run = lambda: jax.device_get(agent.openloop(state, batch, jax.random.key(1)))
    start = time.perf_counter()
    pred = run()
    first = time.perf_counter() - start
    truth = ol.targets(batch)
    out = {
        "batch": [b, t],
        "openloop_first_call_s": first,
        "openloop_s": _median_s(run, repeats),
        "errors_s": _median_s(lambda: ol.openloop_errors(truth, pred), repeats),
        "curves_picture_s": _median_s(lambda: ol.openloop_figure(truth, pred), repeats),
    }
    with tempfile.TemporaryDirectory() as tmp:
        picture = ol.openloop_figure(truth, pred)
        out["curves_png_s"] = _median_s(lambda: write_png(Path(tmp) / "c.png", picture), repeats)
        if obs == "pixels":
            grid = ol.openloop_grid(truth["image"][:4], pred["image"][:4])
            out["video_gif_s"] = _median_s(lambda: write_gif(Path(tmp) / "v.gif", grid), repeats)
    parts = ("openloop_s", "errors_s", "curves_picture_s", "curves_png_s", "video_gif_s")
    out["report_s"] = sum(out.get(k, 0.0) for k in parts)
    out["update_s"] = update_seconds(agent, b, t, repeats)
    out["report_over_update"] = out["report_s"] / out["update_s"]
    return out


def update_seconds(agent: Any, b: int, t: int, repeats: int) -> float:
    """Median seconds of one compiled update on a B x T batch of zeros (after a warm-up)."""
    full = agent.dummy_batch(b, t)
    box = [agent.init(jax.random.key(0))]

    def one() -> None:
        box[0], metrics, _ = agent.train(box[0], full)
        jax.block_until_ready(metrics)

    one()
    return _median_s(one, repeats)


def eval_video_cost(steps: int = 1000) -> dict[str, Any]:
    """Seconds per rendered frame of a proprio dm-control task at 64x64, and for the GIF of a
    ``steps``-frame episode."""
    env = make_env("walker-walk", "proprio", seed=0, action_repeat=2)
    env.reset()
    env.render()  # the first render creates the OpenGL context
    frames = []
    start = time.perf_counter()
    for _ in range(steps):
        if env.step(np.zeros(env.act_dim))["is_last"]:
            env.reset()
        frames.append(env.render())
    step_and_render = time.perf_counter() - start
    env.reset()
    start = time.perf_counter()
    for _ in range(steps):
        if env.step(np.zeros(env.act_dim))["is_last"]:
            env.reset()
    step_only = time.perf_counter() - start
    env.close()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        write_gif(Path(tmp) / "e.gif", np.stack(frames), 20)
        gif = time.perf_counter() - start
    return {
        "task": "walker-walk",
        "frames": steps,
        "render_s_per_frame": (step_and_render - step_only) / steps,
        "gif_s": gif,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="debug,dreamerv3")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    report: dict[str, Any] = {"device": jax.devices()[0].device_kind, "openloop": {}}
    for preset in args.presets.split(","):
        for obs in ("proprio", "pixels"):
            report["openloop"][f"{preset}/{obs}"] = openloop_cost(preset, obs, args.repeats)
    report["eval_video"] = eval_video_cost()
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
