"""Frames as the studio sends them: generator output -> uint8 pictures, grids of them, and their JPEG and PNG bytes."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from progan.data.dataset import to_uint8


def frames_to_uint8(images: torch.Tensor) -> np.ndarray:
    """[B, 3, H, W] floats in about [-1, 1] -> [B, H, W, 3] uint8 (NHWC, as image files want)."""
    return to_uint8(images).permute(0, 2, 3, 1).contiguous().cpu().numpy()


def tile(images: np.ndarray, n: int) -> np.ndarray:
    """[n*n, H, W, 3] -> one [n*H, n*W, 3] grid, row-major."""
    _, h, w, c = images.shape
    return images.reshape(n, n, h, w, c).transpose(0, 2, 1, 3, 4).reshape(n * h, n * w, c)


def encode_jpeg(image: np.ndarray, quality: int = 80) -> bytes:
    """No optimize/progressive (they cost time for a frame seen once). 4:4:4 chroma: the page shows small images
    enlarged pixel for pixel, where 4:2:0 would smear every colour over 2x2 pixels."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


def encode_png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    return buf.getvalue()
