"""rssm-plot: seeds aggregated on one grid, DreamerV3's curves read from the packaged files, the
figure drawn from logdirs (one seed each, or a --run.seeds K run's seed<k>/ folders) and from a
learning-benchmark result, and every bad input refused before anything is drawn."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from experiments import plot as plot_lib
from experiments.curves import CurveError, aggregate, curve, cut, read_logdir, read_result
from experiments.reference_scores import load_reference, reference_name

PACKAGED = Path(plot_lib.__file__).parent / "reference_scores"


def _logdir(path: Path, task: str, rows: list[dict], obs: str = "proprio", seeds: int = 0) -> Path:
    """A run directory as the runner leaves it: config.json, and metrics.jsonl (or, with
    ``seeds`` K, the same rows in each seed<k>/metrics.jsonl)."""
    path.mkdir(parents=True)
    cfg = {"agent": "dreamer", "env": {"task": task, "obs": obs}, "run": {"seeds": max(seeds, 1)}}
    (path / "config.json").write_text(json.dumps(cfg))
    text = "".join(json.dumps(row) + "\n" for row in rows)
    for folder in [path / f"seed{k}" for k in range(seeds)] or [path]:
        folder.mkdir(exist_ok=True)
        (folder / "metrics.jsonl").write_text(text)
    return path


def _rows(points: list[tuple[int, float, float]]) -> list[dict]:
    """(step, eval return, training return) -> rows as the runner logs them, other metrics
    between."""
    rows = []
    for step, eval_return, train_return in points:
        rows.append({"step": step, "episode/return": train_return, "episode/length": 1000.0})
        rows.append({"step": step, "train/loss": 1.0, "replay/steps": step})
        rows.append({"step": step, "eval/return": eval_return})
    return rows


def test_aggregate_mean_and_std_on_the_merged_steps():
    a = (np.array([0.0, 10.0, 20.0]), np.array([0.0, 10.0, 20.0]))
    b = (np.array([0.0, 20.0]), np.array([10.0, 30.0]))  # 20 at step 10, interpolated
    band = aggregate([a, b])
    assert band.seeds == 2
    np.testing.assert_allclose(band.steps, [0, 10, 20])
    np.testing.assert_allclose(band.mean, [5, 15, 25])
    np.testing.assert_allclose(band.low, [0, 10, 20])  # std 5 at every step
    np.testing.assert_allclose(band.high, [10, 20, 30])


def test_aggregate_keeps_to_the_steps_every_seed_reached():
    a = (np.array([0.0, 10.0, 20.0, 30.0]), np.array([0.0, 1.0, 2.0, 3.0]))
    b = (np.array([5.0, 25.0]), np.array([0.0, 0.0]))
    band = aggregate([a, b])
    np.testing.assert_allclose(band.steps, [5, 10, 20, 25])
    np.testing.assert_allclose(band.mean, [0.25, 0.5, 1.0, 1.25])
    np.testing.assert_allclose(band.high - band.mean, [0.25, 0.5, 1.0, 1.25])
    one = aggregate([a])
    np.testing.assert_allclose(one.low, one.high)  # one seed: no spread
    with pytest.raises(CurveError, match="share no steps"):
        aggregate([a, (np.array([40.0, 50.0]), np.array([1.0, 1.0]))])


def test_aggregate_spaces_a_long_grid_evenly():
    steps = np.arange(1000.0)
    band = aggregate([(steps, steps * 2), (steps + 0.5, steps)], max_points=11)
    np.testing.assert_allclose(band.steps, np.linspace(0.5, 999, 11))
    # at step s: 2s and s - 0.5 -> mean 1.5 s - 0.25
    np.testing.assert_allclose(band.mean, 1.5 * band.steps - 0.25)


def test_curve_drops_nan_and_averages_a_repeated_step():
    steps, values = curve([10, 0, 10, 5], [4.0, 1.0, 6.0, float("nan")])
    np.testing.assert_allclose(steps, [0, 10])
    np.testing.assert_allclose(values, [1, 5])


def test_cut_ends_the_band_at_a_step():
    band = aggregate([(np.array([10.0, 20.0, 30.0]), np.array([0.0, 10.0, 30.0]))])
    short = cut(band, 25.0)
    np.testing.assert_allclose(short.steps, [10, 20, 25])
    np.testing.assert_allclose(short.mean, [0, 10, 20])
    assert cut(band, 30.0).steps.tolist() == [10, 20, 30]
    assert cut(band, 5.0) is None


def test_walker_walk_reference_read_straight_from_the_file():
    with gzip.open(PACKAGED / "dmc_proprio-dreamerv3.json.gz") as f:
        runs = json.load(f)
    walker = [r for r in runs if r["task"] == "dmc_walker_walk"]
    final = np.mean([r["ys"][r["xs"].index(max(r["xs"]))] for r in walker])
    curves = load_reference("walker-walk", "proprio")
    assert len(curves) == len(walker) == 5
    assert all(xs[-1] == 490_000 for xs, _ in curves)
    assert np.mean([ys[-1] for _, ys in curves]) == pytest.approx(final)
    band = aggregate(curves)
    assert band.steps[-1] == 490_000 and band.mean[-1] == pytest.approx(final)
    assert 800 < final < 1000  # DreamerV3 all but solves walker-walk from states


def test_task_names_map_to_the_papers():
    assert reference_name("ball_in_cup-catch", "pixels") == (
        "dmc_vision-dreamerv3.json.gz",
        "dmc_ball_in_cup_catch",
    )
    assert reference_name("cup-catch", "proprio")[1] == "dmc_ball_in_cup_catch"
    assert reference_name("cartpole-swingup_sparse", "proprio")[1] == "dmc_cartpole_swingup_sparse"
    assert reference_name("atari:MsPacman", "pixels") == (
        "atari100k-dreamerv3.json.gz",
        "atari_ms_pacman",
    )
    pong = load_reference("atari:pong", "pixels")
    assert len(pong) == 5 and max(xs[-1] for xs, _ in pong) <= 400_000  # frames
    assert len(load_reference("walker-walk", "pixels")) == 10
    assert reference_name("gym:CartPole-v1", "proprio") is None
    assert load_reference("humanoid-walk", "proprio") is None  # not in the paper's DMC set


def test_seeds_of_a_many_seed_run_are_its_seed_folders(tmp_path):
    logdir = _logdir(tmp_path / "run", "walker-walk", _rows([(1000, 1.0, 2.0)]), seeds=3)
    (logdir / "seed10").mkdir()
    (logdir / "seed10" / "metrics.jsonl").write_text(json.dumps({"step": 5, "eval/return": 3}))
    seeds = read_logdir(logdir)
    assert [Path(s.source).parent.name for s in seeds] == ["seed0", "seed1", "seed2", "seed10"]
    assert {(s.task, s.obs, s.label) for s in seeds} == {("walker-walk", "proprio", "dreamer")}
    one = read_logdir(logdir / "seed1")  # one seed's folder: the config is its parent's
    assert one[0].curves["eval/return"][1].tolist() == [1.0]


def test_two_logdirs_and_a_task_without_reference_draw_a_png_and_svg(tmp_path, capsys):
    a = _logdir(tmp_path / "a", "walker-walk", _rows([(0, 0, 0), (10_000, 100, 50)]))
    b = _logdir(tmp_path / "b", "walker-walk", _rows([(0, 20, 0), (10_000, 300, 70)]))
    c = _logdir(tmp_path / "c", "gym:CartPole-v1", _rows([(0, 9, 9), (500, 200, 100)]))
    out = tmp_path / "figs" / "curves.png"
    assert plot_lib.main([str(a), str(b), str(c), "--out", str(out), "--title", "t"]) == 0
    assert capsys.readouterr().out.split() == [str(out), str(out.with_suffix(".svg"))]
    with Image.open(out) as image:
        assert image.format == "PNG"
        assert image.size == (2 * 500, 2 * 350)  # 2 tasks x (eval, train), 5 x 3.5 in at 100 dpi
    assert "<svg" in out.with_suffix(".svg").read_text()[:1000]

    fig = plot_lib.draw(read_logdir(a) + read_logdir(b) + read_logdir(c))
    walker_eval, gym_eval = fig.axes[0], fig.axes[1]
    labels = [t.get_text() for t in walker_eval.get_legend().get_texts()]
    assert labels == ["dreamer, 2 seeds", "DreamerV3, published, 5 seeds"]
    np.testing.assert_allclose(walker_eval.lines[0].get_ydata(), [10, 200])  # means of a, b
    ref_x = walker_eval.lines[1].get_xdata()
    assert ref_x[0] == 10_000 and ref_x[-1] == 10_000  # cut at our last step
    assert [t.get_text() for t in gym_eval.get_legend().get_texts()] == ["dreamer, 1 seed"]
    assert walker_eval.get_xlabel() == "environment steps"
    assert fig.axes[2].get_ylabel() == "training episode return"


def test_no_reference_and_one_metric(tmp_path):
    a = _logdir(tmp_path / "a", "walker-walk", _rows([(0, 0, 0), (20_000, 100, 50)]))
    fig = plot_lib.draw(read_logdir(a), ("eval",), reference=False)
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["dreamer, 1 seed"]
    out = tmp_path / "eval.png"
    assert plot_lib.main([str(a), "--out", str(out), "--metric", "eval", "--no-reference"]) == 0
    with Image.open(out) as image:
        assert image.size == (500, 350)


def test_a_run_that_ends_before_the_reference_starts_draws_without_it(tmp_path, capsys):
    a = _logdir(tmp_path / "a", "walker-walk", _rows([(0, 0, 0), (5000, 100, 50)]))
    fig = plot_lib.draw(read_logdir(a), ("eval",))
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["dreamer, 1 seed"]
    assert "starts at step 10000, after the last step drawn (5000)" in capsys.readouterr().err


def test_a_learning_result_is_one_seed(tmp_path):
    result = {
        "benchmark": "learning",
        "task": "cartpole-swingup",
        "agent": "dreamer",
        "preset": "dreamerv3-cpu",
        "overrides": ["--obs", "pixels"],
        "eval_return": [{"env_steps": 2500, "return": 10.0}, {"env_steps": 5000, "return": 30.0}],
        "train_episode_return": [{"env_steps": 1000, "return": 5.0}],
    }
    path = tmp_path / "result.json"
    path.write_text(json.dumps(result))
    seed = read_result(path)
    assert (seed.task, seed.obs) == ("cartpole-swingup", "pixels")
    assert seed.label == "dreamer (dreamerv3-cpu)"
    assert seed.curves["eval/return"][0].tolist() == [2500, 5000]
    result["overrides"] = ["env.obs=proprio"]
    path.write_text(json.dumps(result))
    assert read_result(path).obs == "proprio"
    path.write_text(json.dumps({"benchmark": "update"}))
    with pytest.raises(CurveError, match="not a learning curve"):
        read_result(path)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no_metrics", "holds no metrics.jsonl"),
        ("no_eval_rows", "has no rows of 'eval/return': draw --metric train only"),
        ("jpg", "must end in .png"),
        ("no_config", "holds no config.json"),
        ("missing", "no such directory"),
    ],
)
def test_bad_inputs_are_refused_before_drawing(tmp_path, capsys, case, message):
    good = _logdir(tmp_path / "good", "walker-walk", _rows([(0, 0, 0), (1000, 1, 1)]))
    out = tmp_path / "out" / "curves.png"
    bad = tmp_path / "bad"
    if case == "no_metrics":
        _logdir(bad, "walker-walk", [])
        (bad / "metrics.jsonl").unlink()
    elif case == "no_eval_rows":
        _logdir(bad, "walker-walk", [{"step": 5, "episode/return": 1.0}])
    elif case == "no_config":
        bad.mkdir()
        (bad / "metrics.jsonl").write_text(json.dumps({"step": 5, "eval/return": 1.0}) + "\n")
    elif case == "jpg":
        bad, out = good, out.with_suffix(".jpg")
    assert plot_lib.main([str(good), str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not out.parent.exists()  # nothing drawn
