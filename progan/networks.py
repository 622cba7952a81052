"""Generator and Discriminator of Progressive Growing of GANs, top to bottom.

Both networks hold every layer up to the final resolution from the start; `lod` (level of detail, progan/lod.py)
picks how much of them runs: blocks 0 (4x4) to `level`, the top one faded in by alpha against the upsampled (G) or
downsampled (D) output of the one below it.

Conditioning (ModelConfig.num_classes or .text_size): both networks see condition vectors `cond`, float rows
[B, cond_size], never labels or text.
- Classes, as the official code: one-hot (or soft, for blending) rows concatenated to z before the pixel norm; D's
  last dense layer has 1 + C outputs, the score then the class logits (AC-GAN).
- Text: rows are caption embeddings. G maps them through conditioning augmentation (StackGAN: a dense layer gives
  mu and log sigma of a small code, sampled with explicitly passed noise, mu without) and concatenates the code to
  z; D is a projection discriminator (Miyato & Koyama 2018): score = psi(h) + <embed(cond), h>, h its last hidden
  features.
- Conditioned blocks (ModelConfig.cond_blocks): the condition code also scales and shifts every resolution's
  features per channel (FiLM), so that it reaches the scales where shape is decided, not only the 4x4 input. The
  code both paths take is `G.style(cond)`; its layers start at zero, so a new model starts as one without them.
- Transitional conditioning: `lod.condition_weight(cfg, lod)` scales G's condition code and D's projection, 0 at
  the low resolutions and 1 from a configured one on, a pure function of the level of detail.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from progan.config import ModelConfig, resolutions_up_to
from progan.layers import (SQRT2, EqualizedConv2d, EqualizedLinear, LeakyReLU, downsample2x, minibatch_stddev,
                           pixel_norm, upsample2x)
from progan.lod import condition_weight, level_and_alpha, lod_of, resolution_at, resolution_of


def check_cond(cond: torch.Tensor | None, size: int, what: str) -> None:
    """A clear message for a condition the network cannot take."""
    if not size:
        if cond is not None:
            raise ValueError(f"this {what} is unconditional; it takes no cond (got a {tuple(cond.shape)} tensor)")
        return
    if cond is None:
        raise ValueError(f"this {what} is conditional: pass cond, float rows [B, {size}] (one-hot or soft class rows, "
                         "or caption embeddings)")
    if not cond.is_floating_point():
        raise TypeError(f"cond must be float rows [B, {size}], got {cond.dtype}: "
                        f"turn class indices into rows with F.one_hot(labels, {size}).float()")
    if cond.dim() != 2 or cond.shape[1] != size:
        raise ValueError(f"cond must be [B, {size}], got {tuple(cond.shape)}")


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


CONDITION_MAPPING_WIDTH = 256


def condition_mapping(text_size: int, layers: int) -> nn.Module:
    """G's hidden layers between a unit caption vector and its conditioning augmentation (nn.Identity for none).
    A linear map places captions whose vectors are close (a monkey's face, a smiling face) close in the code too; a
    small MLP can pull them apart. D's projection stays linear: the same layers there lost on the words
    (docs/text-conditioning.md). The first layer's gain sqrt(2 * text_size) makes its pre-activations
    unit-variance per component from a unit-norm input, as the paper's He-scaled layers from unit-variance ones."""
    if not layers:
        return nn.Identity()
    mods = []
    for i in range(layers):
        fan_in, gain = (text_size, SQRT2 * math.sqrt(text_size)) if i == 0 else (CONDITION_MAPPING_WIDTH, SQRT2)
        mods += [EqualizedLinear(fan_in, CONDITION_MAPPING_WIDTH, gain=gain), LeakyReLU()]
    return nn.Sequential(*mods)


class Generator(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.resolution = cfg.resolution
        self.latent_size = cfg.latent_size
        self.num_classes = cfg.num_classes
        self.text_size = cfg.text_size
        self.cond_size = cfg.cond_size  # the width of the cond rows forward() takes; 0: unconditional
        self.lod = 0.0  # the level of detail used when forward() is given none; exported models set it
        resolutions = resolutions_up_to(cfg.resolution)
        c4 = cfg.channels(4, generator=True)
        if cfg.ca_size:
            # Conditioning augmentation: caption embedding -> (mu, log sigma) of the code concatenated to z. The
            # embedding has unit norm, so the gain sqrt(text_size) makes mu start at unit scale, as loud as the
            # noise it is blurred with (gain 1 started it at 1 / sqrt(text_size) of the noise: a code of noise,
            # which G learnt to ignore). log sigma starts at 0 (sigma 1) rather than at unit scale (sigma up to e^3).
            self.cond_map = condition_mapping(cfg.text_size, cfg.cond_mlp)
            width = CONDITION_MAPPING_WIDTH if cfg.cond_mlp else cfg.text_size
            # the mapping's features are unit scale per component already: gain 1 for the same unit-scale mu
            self.ca = EqualizedLinear(width, 2 * cfg.ca_size, gain=1.0 if cfg.cond_mlp else math.sqrt(cfg.text_size))
            with torch.no_grad():
                self.ca.weight[cfg.ca_size:].zero_()
        code_size = cfg.ca_size or cfg.cond_size
        # 4x4 block: dense latent -> 4x4 feature map (gain sqrt(2)/4 as in the official code), then conv3x3.
        self.dense = EqualizedLinear(cfg.latent_size + code_size, c4 * 16, gain=SQRT2 / 4, bias=False)
        self.dense_bias = nn.Parameter(torch.zeros(c4))
        self.conv4 = EqualizedConv2d(c4, c4, 3)
        self.blocks = nn.ModuleList(
            GeneratorBlock(cfg.channels(r // 2, generator=True), cfg.channels(r, generator=True), cfg.fused_scale)
            for r in resolutions[1:])
        self.to_rgb = nn.ModuleList(EqualizedConv2d(cfg.channels(r, generator=True), 3, 1, gain=1.0)
                                    for r in resolutions)
        self.modulate = None
        if cfg.cond_blocks:
            self.modulate = nn.ModuleList(EqualizedLinear(code_size, 2 * cfg.channels(r, generator=True))
                                          for r in resolutions)
            with torch.no_grad():
                for layer in self.modulate:
                    layer.weight.zero_()
        self.act = LeakyReLU()

    @property
    def output_resolution(self) -> int:
        return resolution_at(self.lod, self.resolution)

    def forward(self, z: torch.Tensor, lod: float | None = None, cond: torch.Tensor | None = None,
                noise: torch.Tensor | None = None) -> torch.Tensor:
        """Latents [B, latent_size] (+ cond [B, cond_size] for a conditional G; + the conditioning augmentation's
        noise [B, ca_size] when training, none for its mean) -> images [B, 3, r, r] in about [-1, 1], r the
        resolution at `lod`."""
        level, alpha = level_and_alpha(self.lod if lod is None else lod, self.resolution)
        return self.forward_at(z, level, alpha, cond, noise)

    def forward_at(self, z: torch.Tensor, level: int, alpha: float, cond: torch.Tensor | None = None,
                   noise: torch.Tensor | None = None) -> torch.Tensor:
        check_cond(cond, self.cond_size, "generator")
        style = self.style(cond, noise, lod_of(level, alpha, self.resolution)) if self.cond_size else None
        return self.synthesize(self.embed(z, style=style), level, alpha, style)

    def style(self, cond: torch.Tensor, noise: torch.Tensor | None = None, lod: float | None = None) -> torch.Tensor:
        """The condition code G's layers take: cond rows through conditioning augmentation (condition_code), times
        the transitional weight at `lod` (default: self.lod)."""
        check_cond(cond, self.cond_size, "generator")
        code = self.condition_code(cond, noise)[0]
        return code * condition_weight(self.cfg, self.lod if lod is None else lod)

    def condition_code(self, cond: torch.Tensor, noise: torch.Tensor | None = None):
        """cond rows -> (the code concatenated to z, mu, log sigma); mu and log sigma are None without conditioning
        augmentation, where the code is cond itself. With it the code is mu + exp(log sigma) * noise, or mu when
        `noise` is None (inference)."""
        if not self.cfg.ca_size:
            return cond, None, None
        mu, log_sigma = self.ca(self.cond_map(cond)).chunk(2, dim=1)
        if noise is None:
            return mu, mu, log_sigma
        if noise.shape != mu.shape:
            raise ValueError(f"conditioning-augmentation noise must be {tuple(mu.shape)}, got {tuple(noise.shape)}")
        return mu + log_sigma.exp() * noise, mu, log_sigma

    def embed(self, z: torch.Tensor, cond: torch.Tensor | None = None, lod: float | None = None,
              noise: torch.Tensor | None = None, style: torch.Tensor | None = None) -> torch.Tensor:
        """Latents (and condition rows, or their `style` when already computed) -> the first 4x4 feature map (after
        the dense layer, LReLU and PixelNorm).

        Split from `synthesize` because this is where truncation and steering act: z itself is pixel-normalised,
        so scaling it does nothing. `lod` only sets the transitional condition weight (default: self.lod).
        """
        x = z
        if self.cond_size:
            if style is None:
                style = self.style(cond, noise, lod)
            x = torch.cat([x, style.to(x.dtype)], dim=1)
        elif cond is not None or style is not None:
            check_cond(cond if cond is not None else style, 0, "generator")
        x = pixel_norm(x)
        x = self.dense(x).view(x.shape[0], -1, 4, 4) + self.dense_bias.view(1, -1, 1, 1)
        return pixel_norm(self.act(x))

    def synthesize(self, x: torch.Tensor, level: int, alpha: float = 1.0,
                   style: torch.Tensor | None = None) -> torch.Tensor:
        """First 4x4 feature map -> image at resolution_of(level), the top block faded in by alpha. A generator
        with conditioned blocks needs the `style` its embedding was made with (G.style(cond))."""
        if self.modulate is not None and style is None:
            raise ValueError("this generator's blocks are conditioned: pass style=G.style(cond) to synthesize")
        x = self.modulated(pixel_norm(self.act(self.conv4(x))), 0, style)
        prev = x
        for i, block in enumerate(self.blocks[:level]):
            prev, x = x, self.modulated(block(x), i + 1, style)
        img = self.to_rgb[level](x)
        if level > 0 and alpha < 1.0:
            img = torch.lerp(upsample2x(self.to_rgb[level - 1](prev)), img, alpha)
        return img

    def modulated(self, x: torch.Tensor, level: int, style: torch.Tensor | None) -> torch.Tensor:
        """x * (1 + scale) + shift per channel, from the style (FiLM); x itself without conditioned blocks."""
        if self.modulate is None:
            return x
        scale, shift = self.modulate[level](style.to(x.dtype)).chunk(2, dim=1)
        return x * (1 + scale[:, :, None, None]) + shift[:, :, None, None]


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
        self.text_size = cfg.text_size
        self.mbstd_group = cfg.mbstd_group
        resolutions = resolutions_up_to(cfg.resolution)
        c4 = cfg.channels(4)
        self.from_rgb = nn.ModuleList(EqualizedConv2d(3, cfg.channels(r), 1) for r in resolutions)
        self.blocks = nn.ModuleList(
            DiscriminatorBlock(cfg.channels(r), cfg.channels(r // 2), cfg.fused_scale) for r in resolutions[1:])
        # 4x4 block: minibatch stddev, conv3x3, dense 4x4 -> c4, dense c4 -> 1 (+ class logits).
        self.conv4 = EqualizedConv2d(c4 + 1, c4, 3)
        self.dense0 = EqualizedLinear(c4 * 16, c4)
        self.dense1 = EqualizedLinear(c4, 1 + cfg.num_classes, gain=1.0)
        if cfg.text_size:
            # Projection: embed(cond) acts as a per-condition addition to dense1's weight row, in the same units
            # (N(0, 1) weights times 1 / sqrt(c4) at run time); cond has unit norm, hence no 1 / sqrt(fan_in) here.
            self.project = EqualizedLinear(cfg.text_size, c4, gain=math.sqrt(cfg.text_size), bias=False)
        self.act = LeakyReLU()

    def forward(self, img: torch.Tensor, lod: float, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Images [B, 3, r, r] (+ caption embeddings [B, text_size] for a projection D) -> [B, 1 + num_classes]:
        the critic score, then class logits if any. A class-conditional D predicts the class: it takes no cond."""
        return self.head(self.features(img, lod), lod, cond)

    def features(self, img: torch.Tensor, lod: float) -> torch.Tensor:
        """Images -> the features [B, c4] the last layer scores. They never see the condition, so one image's
        features serve every caption it is scored with (the loss's mismatched pairs reuse the reals')."""
        level, alpha = level_and_alpha(lod, self.resolution)
        res = resolution_of(level)
        if img.shape[-1] != res:
            raise ValueError(f"D at lod {lod} expects {res}x{res} images, got {tuple(img.shape)}")
        return self.features_at(img, level, alpha)

    def forward_at(self, img: torch.Tensor, level: int, alpha: float, cond: torch.Tensor | None = None):
        return self.head(self.features_at(img, level, alpha), lod_of(level, alpha, self.resolution), cond)

    def features_at(self, img: torch.Tensor, level: int, alpha: float) -> torch.Tensor:
        x = self.act(self.from_rgb[level](img))
        if level > 0:
            x = self.blocks[level - 1](x)
            if alpha < 1.0:
                x = torch.lerp(self.act(self.from_rgb[level - 1](downsample2x(img))), x, alpha)
            for block in reversed(self.blocks[:level - 1]):
                x = block(x)
        x = minibatch_stddev(x, self.mbstd_group)
        x = self.act(self.conv4(x))
        return self.act(self.dense0(x.flatten(1)))

    def head(self, x: torch.Tensor, lod: float, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Features [B, c4] -> [B, 1 + num_classes]; a projection D adds <project(cond), features>."""
        check_cond(cond, self.text_size, "discriminator")
        # The score in full precision even under bf16 autocast: the bias's gradient is the difference of two nearly
        # equal sums (over fakes and reals) plus the small drift term, which bf16 rounds to exactly 0.
        with torch.autocast(x.device.type, enabled=False):
            x = x.to(self.dense1.weight.dtype)
            out = self.dense1(x)
            if self.text_size:
                proj = (self.project(cond.to(x.dtype)) * x).sum(1, keepdim=True) * self.dense1.scale
                out = out + condition_weight(self.cfg, lod) * proj
            return out


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
