"""Shared fixtures: a tiny prepared dataset of coloured shapes, made once per session through the real preparation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from progan.data.prepare import prepare_dataset


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> str:
    """64 images at 16x16: discs and squares of random colours on white (structure a GAN can learn a bit of)."""
    src = tmp_path_factory.mktemp("shapes")
    rng = np.random.default_rng(0)
    for i in range(64):
        img = Image.new("RGB", (40, 40), "white")
        draw = ImageDraw.Draw(img)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y, r = (int(v) for v in rng.integers(8, 32, 2)), None, int(rng.integers(5, 12))
        cx, cy = x
        box = (cx - r, cy - r, cx + r, cy + r)
        (draw.ellipse if i % 2 else draw.rectangle)(box, fill=colour)
        img.save(src / f"{i:03d}.png")
    out = tmp_path_factory.mktemp("data") / "shapes16"
    prepare_dataset(src, out, 16, progress=False)
    return str(out)


@pytest.fixture(scope="module")
def one_torch_thread():
    """What the studio runs with on a 2-core box (run_studio leaves a core to the event loop); restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
