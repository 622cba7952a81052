"""Differentiable augmentation of everything D sees (DiffAugment, Zhao et al. 2020): reals and fakes alike, in D's
step and in G's, so that G is never taught to produce the augmentations, only D is kept from memorising a small
dataset. Off unless a run asks for it (TrainConfig.augment, its policy read by config.parse_augment); the paper
trains without.

The transforms and their ranges are the reference implementation's (github.com/mit-han-lab/data-efficient-gans,
DiffAugment_pytorch.py), for images in [-1, 1]:
- color: brightness + U(-0.5, 0.5); saturation x U(0, 2) around the pixel's channel mean; contrast x U(0.5, 1.5)
  around the image's mean.
- translation: a whole-pixel shift of up to 1/8 of the side in each direction, zeros (mid grey) shifted in.
- cutout: a square of half the side set to zero at a random place (it may overhang the border).

Every random draw is made for the global batch from the step's generator and sliced to this rank's rows (`rows`), as
the step's latents are: N processes augment exactly as one process would, and a run is reproducible.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

class Draws:
    """Uniform and integer draws of shape (global batch, ...) from `gen`, sliced to this rank's rows."""

    def __init__(self, gen: torch.Generator, global_batch: int, rows: slice, device: torch.device):
        self.gen, self.n, self.rows, self.device = gen, global_batch, rows, device

    def uniform(self, *shape: int) -> torch.Tensor:
        return torch.rand(self.n, *shape, generator=self.gen, device=self.device)[self.rows]

    def integers(self, low: int, high: int) -> torch.Tensor:
        """One integer in [low, high) per row, shape (rows, 1, 1)."""
        return torch.randint(low, high, (self.n, 1, 1), generator=self.gen, device=self.device)[self.rows]


def color(x: torch.Tensor, draw: Draws) -> torch.Tensor:
    x = x + (draw.uniform(1, 1, 1).to(x.dtype) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (draw.uniform(1, 1, 1).to(x.dtype) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (draw.uniform(1, 1, 1).to(x.dtype) + 0.5) + mean


def translation(x: torch.Tensor, draw: Draws, ratio: float = 0.125) -> torch.Tensor:
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty, tx = draw.integers(-sh, sh + 1), draw.integers(-sw, sw + 1)
    # Gather from a copy padded with one ring of zeros: a source index outside the image lands on the ring.
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + ty + 1).clamp(0, h + 1)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + tx + 1).clamp(0, w + 1)
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    padded = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)
    return padded[batch, rows, cols].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, draw: Draws, ratio: float = 0.5) -> torch.Tensor:
    _, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy, ox = draw.integers(0, h + (1 - ch % 2)), draw.integers(0, w + (1 - cw % 2))
    rows = torch.arange(h, device=x.device).view(1, h, 1) - oy + ch // 2
    cols = torch.arange(w, device=x.device).view(1, 1, w) - ox + cw // 2
    inside = (rows >= 0) & (rows < ch) & (cols >= 0) & (cols < cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


TRANSFORMS = {"color": color, "translation": translation, "cutout": cutout}  # one per config.AUGMENTATIONS


def augment(x: torch.Tensor, policy: tuple[str, ...], draw: Draws) -> torch.Tensor:
    """x with each transform of `policy` applied in order; x itself when the policy is empty."""
    for name in policy:
        x = TRANSFORMS[name](x, draw)
    return x
