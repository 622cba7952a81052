"""Frames as the studio sends them: grids and JPEG bytes."""

import io

import numpy as np
from PIL import Image

from progan.studio.frames import encode_jpeg, tile


def test_tile_and_jpeg():
    images = np.arange(4 * 2 * 2 * 3, dtype=np.uint8).reshape(4, 2, 2, 3)
    grid = tile(images, 2)
    assert grid.shape == (4, 4, 3)
    assert np.array_equal(grid[:2, 2:], images[1]) and np.array_equal(grid[2:, :2], images[2])
    jpeg = encode_jpeg(np.zeros((8, 8, 3), np.uint8))
    assert Image.open(io.BytesIO(jpeg)).size == (8, 8)
