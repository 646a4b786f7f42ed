"""Image conversions every environment shares: resizing (Pillow, bilinear) and gray frames.

Both follow DreamerV3's Atari wrapper (f8817c4 ``embodied/envs/atari.py``): frames are resized
with ``PIL.Image.resize(..., BILINEAR)`` and made gray as the weighted sum of the channels with
ITU-R 601 luma weights, truncated to uint8.
"""

from __future__ import annotations

import numpy as np

# Luma weights of ITU-R BT.601 (R, G, B); the blue weight is written as 1 - (r + g), as the
# reference does, so the three sum to exactly 1. Equal weights would map a red object on a green
# background to one gray level.
GRAY_WEIGHTS = np.array([0.299, 0.587, 1.0 - (0.299 + 0.587)])


def to_gray(image: np.ndarray) -> np.ndarray:
    """``[H, W, 3] uint8 -> [H, W, 1] uint8``: floor(sum_c w_c x_c) with ``GRAY_WEIGHTS``."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"to_gray expects an [H, W, 3] image, got shape {image.shape}")
    return (image * GRAY_WEIGHTS).sum(-1).astype(np.uint8)[:, :, None]


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``[H, W, C] uint8 -> [h, w, C] uint8`` with ``size = (h, w)``, bilinear through Pillow;
    an image already of that size is returned unchanged."""
    from PIL import Image  # Pillow is an `experiments` dependency; import it only when resizing

    image = np.asarray(image)
    h, w = (int(s) for s in size)
    if image.shape[:2] == (h, w):
        return image
    channels = image.shape[-1] if image.ndim == 3 else 0
    if channels == 1:  # Pillow's mode 'L' takes [H, W]
        image = image[:, :, 0]
    # Pillow's size is (width, height).
    out = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    return out[:, :, None] if channels == 1 else out
