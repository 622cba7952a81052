"""Small helpers shared by the metrics: batching, image checks, file hashing."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch


class MetricInputError(ValueError):
    """Images or settings a metric cannot work with (wrong dtype, shape, size or count)."""


def check_uint8_images(images: torch.Tensor, what: str = "images") -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise MetricInputError(f"{what}: expected a torch.Tensor, got {type(images).__name__}")
    if images.dtype != torch.uint8:
        raise MetricInputError(f"{what}: expected uint8 images in [0, 255], got dtype {images.dtype}")
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise MetricInputError(f"{what}: expected shape [N, 3, H, W] (or [N, 1, H, W]), got {list(images.shape)}")
    return images


def separable_matmul(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """rows.T @ x @ cols over the last two axes of [..., H, W], as plain 2-D GEMMs.

    Linear filters along each axis (blur, decimate, upsample) are written as small dense matrices:
    on CPU this is several times faster than single-channel conv2d, and broadcasting a small matrix
    over batch axes (x @ cols) is slower than reshaping to one big GEMM.
    """
    lead, (h, w) = x.shape[:-2], x.shape[-2:]
    h2, w2 = rows.shape[1], cols.shape[1]
    y = (x.reshape(-1, w) @ cols).reshape(-1, h, w2).transpose(1, 2)      # [*, w2, h]
    y = (y.reshape(-1, h) @ rows).reshape(-1, w2, h2).transpose(1, 2)     # [*, h2, w2]
    return y.reshape(*lead, h2, w2)


def iter_batches(images, batch_size: int) -> Iterator[torch.Tensor]:
    """Yield uint8 batches from one [N, C, H, W] tensor (sliced) or from an iterable of such batches."""
    if batch_size < 1:
        raise MetricInputError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(images, torch.Tensor):
        check_uint8_images(images)
        for start in range(0, images.shape[0], batch_size):
            yield images[start:start + batch_size]
    elif isinstance(images, Iterable):
        for batch in images:
            yield check_uint8_images(batch, "image batch")
    else:
        raise MetricInputError(f"expected a uint8 image tensor or an iterable of them, got {type(images).__name__}")



