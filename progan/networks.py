"""Generator and Discriminator of Progressive Growing of GANs, top to bottom.

Both networks hold every layer up to the final resolution from the start; `lod` (level of detail) picks how much
of them runs. lod = 0 is the final resolution, lod = log2(R) - 2 is 4x4, and a fractional lod fades the newest
block in: alpha = 1 - frac(lod) is the weight of the new block's output against the upsampled (G) or downsampled
(D) output of the previous resolution.

Block i of either network works at resolution 4 * 2^i, so block 0 is the 4x4 one.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from progan.config import ModelConfig
from progan.layers import (SQRT2, EqualizedConv2d, EqualizedLinear, LeakyReLU, downsample2x, minibatch_stddev,
                           pixel_norm, upsample2x)


def level_and_alpha(lod: float, resolution: int) -> tuple[int, float]:
    """lod -> (index of the highest active block, alpha of its fade-in)."""
    max_level = int(math.log2(resolution)) - 2
    if not 0 <= lod <= max_level:
        raise ValueError(f"lod must be in [0, {max_level}] for resolution {resolution}, got {lod}")
    return max_level - math.floor(lod), 1.0 - (lod - math.floor(lod))


class GeneratorBlock(nn.Module):
    """Nearest 2x up + conv3x3, LReLU, PixelNorm, conv3x3, LReLU, PixelNorm."""

    def __init__(self, in_channels: int, out_channels: int, fused: bool):
        super().__init__()
        self.conv0 = EqualizedConv2d(in_channels, out_channels, 3, up=True, fused=fused)
        self.conv1 = EqualizedConv2d(out_channels, out_channels, 3)
        self.act = LeakyReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pixel_norm(self.act(self.conv0(x)))
        return pixel_norm(self.act(self.conv1(x)))


class Generator(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.resolution = cfg.resolution
        self.latent_size = cfg.latent_size
        self.num_classes = cfg.num_classes
        self.lod = 0.0  # the level of detail used when forward() is given none; exported models set it
        resolutions = [2**k for k in range(2, int(math.log2(cfg.resolution)) + 1)]
        c4 = cfg.channels(4)
        # 4x4 block: dense latent -> 4x4 feature map (gain sqrt(2)/4 as in the official code), then conv3x3.
        self.dense = EqualizedLinear(cfg.latent_size + cfg.num_classes, c4 * 16, gain=SQRT2 / 4, bias=False)
        self.dense_bias = nn.Parameter(torch.zeros(c4))
        self.conv4 = EqualizedConv2d(c4, c4, 3)
        self.blocks = nn.ModuleList(
            GeneratorBlock(cfg.channels(r // 2), cfg.channels(r), cfg.fused_scale) for r in resolutions[1:])
        self.to_rgb = nn.ModuleList(EqualizedConv2d(cfg.channels(r), 3, 1, gain=1.0) for r in resolutions)
        self.act = LeakyReLU()

    @property
    def output_resolution(self) -> int:
        return 2 ** (int(math.log2(self.resolution)) - math.floor(self.lod))

    def forward(self, z: torch.Tensor, lod: float | None = None, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Latents [B, latent_size] -> images [B, 3, r, r] in about [-1, 1], r the resolution at `lod`."""
        level, alpha = level_and_alpha(self.lod if lod is None else lod, self.resolution)
        return self.forward_at(z, level, alpha, labels)

    def forward_at(self, z: torch.Tensor, level: int, alpha: float, labels: torch.Tensor | None = None):
        return self.synthesize(self.embed(z, labels), level, alpha)

    def embed(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Latents -> the first 4x4 feature map (after the dense layer, LReLU and PixelNorm).

        Split from `synthesize` because this is where truncation and steering act: z itself is pixel-normalised,
        so scaling it does nothing.
        """
        x = z
        if self.num_classes:
            x = torch.cat([x, F.one_hot(labels, self.num_classes).to(x.dtype)], dim=1)
        x = pixel_norm(x)
        x = self.dense(x).view(x.shape[0], -1, 4, 4) + self.dense_bias.view(1, -1, 1, 1)
        return pixel_norm(self.act(x))

    def synthesize(self, x: torch.Tensor, level: int, alpha: float = 1.0) -> torch.Tensor:
        """First 4x4 feature map -> image at resolution 4 * 2^level, the top block faded in by alpha."""
        x = pixel_norm(self.act(self.conv4(x)))
        prev = x
        for block in self.blocks[:level]:
            prev, x = x, block(x)
        img = self.to_rgb[level](x)
        if level > 0 and alpha < 1.0:
            img = torch.lerp(upsample2x(self.to_rgb[level - 1](prev)), img, alpha)
        return img


class DiscriminatorBlock(nn.Module):
    """conv3x3, LReLU, conv3x3 + 2x2 average pool, LReLU. No normalisation in D."""

    def __init__(self, in_channels: int, out_channels: int, fused: bool):
        super().__init__()
        self.conv0 = EqualizedConv2d(in_channels, in_channels, 3)
        self.conv1 = EqualizedConv2d(in_channels, out_channels, 3, down=True, fused=fused)
        self.act = LeakyReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv1(self.act(self.conv0(x))))


class Discriminator(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.resolution = cfg.resolution
        self.num_classes = cfg.num_classes
        self.mbstd_group = cfg.mbstd_group
        resolutions = [2**k for k in range(2, int(math.log2(cfg.resolution)) + 1)]
        c4 = cfg.channels(4)
        self.from_rgb = nn.ModuleList(EqualizedConv2d(3, cfg.channels(r), 1) for r in resolutions)
        self.blocks = nn.ModuleList(
            DiscriminatorBlock(cfg.channels(r), cfg.channels(r // 2), cfg.fused_scale) for r in resolutions[1:])
        # 4x4 block: minibatch stddev, conv3x3, dense 4x4 -> c4, dense c4 -> 1 (+ class logits).
        self.conv4 = EqualizedConv2d(c4 + 1, c4, 3)
        self.dense0 = EqualizedLinear(c4 * 16, c4)
        self.dense1 = EqualizedLinear(c4, 1 + cfg.num_classes, gain=1.0)
        self.act = LeakyReLU()

    def forward(self, img: torch.Tensor, lod: float) -> torch.Tensor:
        """Images [B, 3, r, r] -> [B, 1 + num_classes]: the critic score, then class logits if any."""
        level, alpha = level_and_alpha(lod, self.resolution)
        if img.shape[-1] != 4 * 2**level:
            raise ValueError(f"D at lod {lod} expects {4 * 2**level}x{4 * 2**level} images, got {tuple(img.shape)}")
        return self.forward_at(img, level, alpha)

    def forward_at(self, img: torch.Tensor, level: int, alpha: float) -> torch.Tensor:
        x = self.act(self.from_rgb[level](img))
        if level > 0:
            x = self.blocks[level - 1](x)
            if alpha < 1.0:
                x = torch.lerp(self.act(self.from_rgb[level - 1](downsample2x(img))), x, alpha)
            for block in reversed(self.blocks[:level - 1]):
                x = block(x)
        x = minibatch_stddev(x, self.mbstd_group)
        x = self.act(self.conv4(x))
        x = self.act(self.dense0(x.flatten(1)))
        # The score in full precision even under bf16 autocast: the bias's gradient is the difference of two nearly
        # equal sums (over fakes and reals) plus the small drift term, which bf16 rounds to exactly 0.
        with torch.autocast(x.device.type, enabled=False):
            return self.dense1(x.to(self.dense1.weight.dtype))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
