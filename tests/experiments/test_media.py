"""The open-loop report's numbers and picture, images and videos in every sink, the frames of
evaluation videos (dm-control and Gymnasium)."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from wandb_reader import read_offline_run

from experiments.envs import make_env
from experiments.run.eval import Camera
from experiments.run.logging import Logger
from experiments.run.openloop import MAX_PANELS, openloop_errors, openloop_figure, targets


def test_openloop_errors_by_horizon_hand_computed() -> None:
    # B = 2 sequences of T = 12 steps, D = 2: truth 0, the prediction off by (t + 1) at step t in
    # sequence 0 and by 0 in sequence 1 (both dimensions).
    truth = {"vector": np.zeros((2, 12, 2), np.float32)}
    pred = {"vector": np.zeros((2, 12, 2), np.float32)}
    pred["vector"][0] = (np.arange(12) + 1.0)[:, None]
    out = openloop_errors(truth, pred, context=5)
    # Mean over B and D of the squared error at step context + h - 1: (context + h)^2 / 2.
    assert out == {
        "openloop/vector_mse_context": (1 + 4 + 9 + 16 + 25) / 5 / 2,
        "openloop/vector_mse_h1": 36 / 2,
        "openloop/vector_mse_h5": 100 / 2,
    }  # h = 10 needs T >= 15
    with pytest.raises(ValueError, match="differ"):
        openloop_errors(truth, {"vector": np.zeros((2, 11, 2))})


def test_targets_are_the_heads_targets() -> None:
    batch = {
        "vector": np.ones((1, 3, 2)),
        "image": np.full((1, 3, 2, 2, 3), 255, np.uint8),
        "reward": np.array([[0.0, 1.5, -2.0]]),
        "is_terminal": np.array([[False, False, True]]),
        "action": np.zeros((1, 3, 1)),
    }
    out = targets(batch, cont_target=0.99)
    np.testing.assert_allclose(out["cont"], [[0.99, 0.99, 0.0]])
    np.testing.assert_allclose(out["reward"], [[0.0, 1.5, -2.0]])
    assert out["image"].dtype == np.float32 and out["image"].max() == 1.0
    assert set(out) == {"vector", "image", "reward", "cont"}


def test_openloop_figure_has_a_panel_per_dimension_up_to_the_cap() -> None:
    t = 16
    curves = {
        "vector": np.zeros((1, t, 40), np.float32),
        "reward": np.zeros((1, t)),
        "cont": np.ones((1, t)),
    }
    image = openloop_figure(curves, curves)
    # MAX_PANELS + reward + continue = 32 panels: 6 columns x 6 rows of 2.2 x 1.6 inches (+ 0.4
    # for the title) at 80 dpi.
    assert MAX_PANELS == 30
    assert image.shape == (round((1.6 * 6 + 0.4) * 80), round(2.2 * 6 * 80), 3)
    small = openloop_figure({k: v for k, v in curves.items() if k != "vector"}, curves)
    assert small.shape == (round((1.6 + 0.4) * 80), round(2.2 * 2 * 80), 3)  # reward, continue
    # The prediction is drawn in red, the truth in black.
    red = (small[..., 0] > 180) & (small[..., 1] < 80) & (small[..., 2] < 80)
    assert red.any()


def test_image_goes_to_png_wandb_and_tensorboard(tmp_path: Path) -> None:
    image = np.zeros((6, 10, 3), np.uint8)
    image[:, 5:] = (255, 0, 0)
    with Logger(tmp_path, {}, wandb_mode="offline", tensorboard=True) as logger:
        path = logger.image(300, "openloop/curves", image)
        run_id = logger.run_id
    assert path == str(tmp_path / "images" / "openloop_curves_000000300.png")
    np.testing.assert_array_equal(np.asarray(Image.open(path)), image)
    (run,) = (tmp_path / "wandb").glob(f"offline-run-*-{run_id}")
    (row,) = [r for r in read_offline_run(run)["history"] if "openloop/curves" in r]
    assert row["openloop/curves"]["_type"] == "image-file"
    assert row["env_steps"] == 300
    events = b"".join(p.read_bytes() for p in (tmp_path / "tb").glob("events.out.*"))
    assert Path(path).read_bytes() in events  # the PNG itself, as TensorBoard shows it


def test_dm_control_renders_the_task_camera_in_a_proprio_run() -> None:
    env = make_env("cartpole-balance", "proprio", seed=0, size=(48, 40))
    obs = env.reset()
    frame = Camera(env).frame(obs)
    assert "image" not in obs and frame.shape == (48, 40, 3) and frame.dtype == np.uint8
    assert frame.std() > 0  # a scene, not a blank buffer
    env.close()


def test_gymnasium_renders_rgb_array_only_when_asked() -> None:
    quiet = make_env("gym:CartPole-v1", seed=0)
    assert Camera(quiet).frame(quiet.reset()) is None  # made without render_mode
    env = make_env("gym:CartPole-v1", seed=0, render=True)
    before = env.reset(seed=3)
    frame = Camera(env).frame(before)
    assert frame.shape == (400, 600, 3)  # CartPole's screen
    # Rendering leaves the episode as it was: same steps as an env that never renders.
    quiet.reset(seed=3)
    for _ in range(5):
        a, b = env.step(np.array([1.0, 0.0])), quiet.step(np.array([1.0, 0.0]))
        np.testing.assert_array_equal(a["vector"], b["vector"])
        Camera(env).frame(a)


def test_an_env_that_fails_to_render_costs_the_video_only(capsys) -> None:
    class Broken:
        task = "broken-task"

        def render(self):
            raise RuntimeError("no OpenGL")

    camera = Camera(Broken())
    assert camera.frame({"vector": np.zeros(2)}) is None
    assert camera.frame({"vector": np.zeros(2)}) is None
    err = capsys.readouterr().err
    assert err.count("broken-task cannot render (RuntimeError: no OpenGL)") == 1
