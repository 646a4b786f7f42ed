"""Images of any size, colour or gray: the conversions (experiments/envs/images.py) and what
dm-control and Gymnasium envs deliver for env.size and env.gray."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.envs.registration import EnvSpec

from experiments import envs
from experiments.config import EnvConfig
from experiments.envs import DMCEnv
from experiments.envs.gym import from_gymnasium
from experiments.envs.images import resize, to_gray
from experiments.envs.vec import make_envs


def test_to_gray_is_the_truncated_bt601_luma():
    pixels = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [10, 20, 30]]])
    gray = to_gray(pixels.astype(np.uint8))
    assert gray.shape == (1, 5, 1) and gray.dtype == np.uint8
    # floor(255 * 0.299) = 76, floor(255 * 0.587) = 149, floor(255 * 0.114) = 29; white stays
    # 255 (the weights sum to exactly 1); 10 * 0.299 + 20 * 0.587 + 30 * 0.114 = 18.15 -> 18.
    assert gray[0, :, 0].tolist() == [76, 149, 29, 255, 18]
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        to_gray(np.zeros((4, 4, 1), np.uint8))


def test_resize_is_pillow_bilinear_with_height_first():
    # Upscaling [2, 2] to width 4: output centres at x = 0.25, 0.75, 1.25, 1.75 between the
    # input centres 0.5 (value 0) and 1.5 (value 100): 0 (clamped), 25, 75, 100.
    image = np.zeros((2, 2, 1), np.uint8)
    image[:, 1] = 100
    out = resize(image, (2, 4))
    assert out.shape == (2, 4, 1) and out.dtype == np.uint8
    assert out[:, :, 0].tolist() == [[0, 25, 75, 100]] * 2
    # Downscaling 4 -> 2 widens the triangle to 2 input pixels: the left output pixel weighs
    # columns 0, 1, 2 by 0.75, 0.75, 0.25, so 200 * 0.25 / 1.75 = 28.6 -> 29, the right one
    # 200 * 1.5 / 1.75 = 171.4 -> 171.
    image = np.zeros((4, 4, 3), np.uint8)
    image[:, 2:] = 200
    out = resize(image, (2, 2))
    assert out.shape == (2, 2, 3)
    assert out[:, :, 0].tolist() == [[29, 171]] * 2
    # (height, width), not Pillow's (width, height): a non-square target keeps its order.
    assert resize(np.zeros((84, 84, 3), np.uint8), (48, 64)).shape == (48, 64, 3)


class Frames84(gymnasium.Env):
    """84x84 RGB frames: a horizontal red ramp, green rising by 10 per step."""

    observation_space = spaces.Box(0, 255, (84, 84, 3), np.uint8)
    action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)

    def _frame(self) -> np.ndarray:
        frame = np.zeros((84, 84, 3), np.uint8)
        frame[:, :, 0] = np.arange(84, dtype=np.uint8)[None, :] * 3
        frame[:, :, 1] = 10 * self.t
        return frame

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._frame(), {}

    def step(self, action):
        self.t += 1
        return self._frame(), 0.0, False, self.t >= 20, {}


def test_gymnasium_images_are_resized_and_made_gray():
    raw = Frames84()
    frame = raw.reset()[0]
    env = from_gymnasium(Frames84(), size=(64, 64), gray=True)
    assert env.obs_spec["image"] == ((64, 64, 1), np.dtype(np.uint8))
    image = env.reset()["image"]
    assert image.shape == (64, 64, 1) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, to_gray(resize(frame, (64, 64))))
    # The ramp survives: gray rises from left to right (red only: 0.299 * 3 * column).
    assert int(image[0, 0, 0]) < 5 and int(image[0, -1, 0]) > 70
    step = env.step(np.zeros(1))["image"]
    np.testing.assert_array_equal(step, to_gray(resize(raw.step(0)[0], (64, 64))))
    # In colour at another size, and untouched without a size.
    colour = from_gymnasium(Frames84(), size=(48, 96))
    assert colour.obs_spec["image"][0] == (48, 96, 3)
    np.testing.assert_array_equal(colour.reset()["image"], resize(frame, (48, 96)))
    own = from_gymnasium(Frames84())
    assert own.obs_spec["image"][0] == (84, 84, 3)
    np.testing.assert_array_equal(own.reset()["image"], frame)


def test_a_gymnasium_task_follows_the_env_section(monkeypatch):
    # Registered for this test only (monkeypatch removes the id afterwards).
    spec = EnvSpec(id="RssmFrames84-v0", entry_point=Frames84, max_episode_steps=20)
    monkeypatch.setitem(gymnasium.registry, spec.id, spec)
    task = "gym:RssmFrames84-v0"
    kwargs = envs.env_kwargs(EnvConfig(task=task, size=(64, 64), gray=True))
    assert kwargs["size"] == (64, 64) and kwargs["gray"] is True
    with envs.make_env(task, **kwargs) as env:
        assert env.reset()["image"].shape == (64, 64, 1)
    with make_envs(task, num_envs=2, size=(96, 96), gray=True) as vec:
        assert vec.obs_spec["image"] == ((96, 96, 1), np.dtype(np.uint8))
        assert vec.reset()["image"].shape == (2, 96, 96, 1)


def test_dm_control_pixels_gray_at_96():
    env = DMCEnv("cartpole-swingup", obs="pixels", seed=0, size=(96, 96), gray=True)
    assert env.obs_spec == {"image": ((96, 96, 1), np.dtype(np.uint8))}
    image = env.reset()["image"]
    assert image.shape == (96, 96, 1) and image.dtype == np.uint8
    assert image.std() > 10.0, "blank frame"
    # The frame rendered at 96x96 (render() stays in colour), made gray.
    colour = env.render()
    assert colour.shape == (96, 96, 3)
    np.testing.assert_array_equal(image, to_gray(colour))
    env.close()
