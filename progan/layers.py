"""The paper's building blocks: equalized-learning-rate layers, PixelNorm, minibatch stddev, resampling.

Equalized learning rate: weights are stored as N(0, 1) and multiplied at run time by gain / sqrt(fan_in), so
Adam's per-parameter step size acts on every layer at the same dynamic range. Biases start at 0 and are not scaled.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

SQRT2 = math.sqrt(2.0)


class EqualizedConv2d(nn.Module):
    """kxk convolution (stride 1, 'same' padding) with run-time weight scaling.

    `up=True` is nearest-2x upsampling followed by this conv; `down=True` is this conv followed by 2x2 average
    pooling. With `fused=True` either is computed as one stride-2 (transposed) convolution with a 4x4 kernel built
    from the 3x3 one: exactly the same maths, less than half the multiply-adds.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, gain: float = SQRT2,
                 up: bool = False, down: bool = False, fused: bool = True):
        super().__init__()
        assert not (up and down)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.scale = gain / math.sqrt(in_channels * kernel_size * kernel_size)
        self.padding = kernel_size // 2
        self.up, self.down = up, down
        self.fused = fused and kernel_size == 3 and (up or down)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.scale
        if self.fused and self.up:
            return F.conv_transpose2d(x, fused_up_kernel(w), self.bias, stride=2, padding=1)
        if self.fused and self.down:
            return F.conv2d(x, fused_down_kernel(w), self.bias, stride=2, padding=1)
        if self.up:
            x = upsample2x(x)
        x = F.conv2d(x, w, self.bias, padding=self.padding)
        if self.down:
            x = downsample2x(x)
        return x

    def extra_repr(self) -> str:
        o, i, k, _ = self.weight.shape
        return f"{i}, {o}, kernel_size={k}, up={self.up}, down={self.down}, fused={self.fused}"


def _sum_of_shifts(w: torch.Tensor) -> torch.Tensor:
    """[.., 3, 3] -> [.., 4, 4]: the kernel summed over its four 1-pixel shifts (the official code's trick)."""
    w = F.pad(w, (1, 1, 1, 1))
    return w[..., 1:, 1:] + w[..., :-1, 1:] + w[..., 1:, :-1] + w[..., :-1, :-1]


def fused_up_kernel(w: torch.Tensor) -> torch.Tensor:
    """Kernel for conv_transpose2d(stride 2, padding 1) equal to conv3x3(nearest_up2x(x)).

    conv_transpose2d correlates with the flipped kernel, hence the flip; its weight layout is [in, out, k, k].
    """
    return _sum_of_shifts(w).flip(-1, -2).transpose(0, 1)


def fused_down_kernel(w: torch.Tensor) -> torch.Tensor:
    """Kernel for conv2d(stride 2, padding 1) equal to avgpool2x2(conv3x3(x))."""
    return _sum_of_shifts(w) * 0.25


class EqualizedLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, gain: float = SQRT2, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.scale = gain / math.sqrt(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


def pixel_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Normalise each pixel's feature vector to unit RMS across channels (dim 1)."""
    return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + eps)


def minibatch_stddev(x: torch.Tensor, group_size: int) -> torch.Tensor:
    """Append one feature map: the std of each feature over a group of samples, averaged to one value per group.

    Groups are contiguous runs of `group_size` samples; the batch must divide evenly (checked at config time).
    Computed in fp32 with the biased variance, as the official code does.
    """
    n, c, h, w = x.shape
    g = min(group_size, n)
    y = x.float().reshape(n // g, g, c, h, w)
    y = (y - y.mean(dim=1, keepdim=True)).square().mean(dim=1)      # [n/g, c, h, w] biased variance
    y = torch.sqrt(y + 1e-8).mean(dim=(1, 2, 3))                   # [n/g]
    y = y.to(x.dtype).repeat_interleave(g).reshape(n, 1, 1, 1).expand(n, 1, h, w)
    return torch.cat([x, y], dim=1)


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour 2x upsampling."""
    return F.interpolate(x, scale_factor=2, mode="nearest")


def downsample2x(x: torch.Tensor) -> torch.Tensor:
    """2x2 box average."""
    return F.avg_pool2d(x, 2)


def leaky_relu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)
