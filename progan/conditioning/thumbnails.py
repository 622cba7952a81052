"""The captioned image's thumbnail, carried in a text model's condition rows beside the caption's vector.

A caption says what to draw; across 1,000-odd captions of one image each, a small GAN learns the words' meaning far
slower than their colours. The thumbnail (the image at 4x4 or 8x8) gives G the layout and colours of what a caption
names as an input, and D something it can check a pair against, so training spends its images on the drawing. A
prompt is read as a mixture of training captions, and each caption names training images: generation takes the
thumbnail of one image its drawn caption names (progan.conditioning.rows).
"""

from __future__ import annotations

import math

import torch

from progan.data.dataset import to_float


def image_thumbnails(dataset, size: int) -> torch.Tensor:
    """float [N, 3 * size * size]: every image of `dataset` at size x size, averaged with its mirror image (training
    shows the reals mirrored at random, so one orientation would be a condition the reals contradict half the time),
    scaled by 1 / sqrt(3 * size^2) so that a row has about the unit norm of a caption vector."""
    x = to_float(dataset.images(size, torch.arange(dataset.count)))
    x = 0.5 * (x + x.flip(-1))
    return x.flatten(1) / math.sqrt(x[0].numel())
