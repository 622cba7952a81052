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
    from the 3x3 one: exactly the same maths, less than half the multiply-adds. On a CPU the fused form is taken
    only where it is also faster (`FUSED_MIN_POSITIONS_CPU`).
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
        self.plain = False  # the textbook computation: the speed benchmark's reference (see `set_plain`)
        if self.fused:
            # The 3x3 -> 4x4 map with the run-time scale (and the pooling's 1/4) folded in: the fused kernel is then
            # one small matmul, not a scaling pass, a pad, three adds and a flip over the whole weight.
            shifts = shift_sum_matrix(flip=up) * (self.scale if up else self.scale * 0.25)
            self.register_buffer("shifts", shifts, persistent=False)

    def use_fused(self, x: torch.Tensor) -> bool:
        if not self.fused or self.plain:
            return False
        if x.device.type != "cpu":
            return True
        low_res_positions = x.shape[0] * x.shape[-2] * x.shape[-1] // (4 if self.down else 1)
        return low_res_positions >= FUSED_MIN_POSITIONS_CPU

    def fused_kernel(self) -> torch.Tensor:
        """The fused form's 4x4 kernel, scale included. In full precision even under autocast: a bf16 matmul would
        round the scale itself, the same error in every weight of the layer."""
        o, i = self.weight.shape[:2]
        with torch.autocast(self.weight.device.type, enabled=False):
            if self.up:  # conv_transpose2d wants its weight as [in, out, k, k]
                return (self.weight.transpose(0, 1).reshape(i * o, 9) @ self.shifts).view(i, o, 4, 4)
            return (self.weight.view(o * i, 9) @ self.shifts).view(o, i, 4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_fused(x):
            if self.up:
                return F.conv_transpose2d(x, self.fused_kernel(), self.bias, stride=2, padding=1)
            return F.conv2d(x, self.fused_kernel(), self.bias, stride=2, padding=1)
        x, w = (x, self.weight * self.scale) if self.plain else scale_smaller(x, self.weight, self.scale)
        if self.up:
            x = upsample2x(x)
        x = F.conv2d(x, w, self.bias, padding=self.padding)
        if self.down:
            x = downsample2x(x)
        return x

    def extra_repr(self) -> str:
        o, i, k, _ = self.weight.shape
        return f"{i}, {o}, kernel_size={k}, up={self.up}, down={self.down}, fused={self.fused}"


# oneDNN's stride-2 and transposed convolutions lose to upsample+conv / conv+pool when the low-resolution side has
# few positions (batch x height x width); above this the fused form's 4/9 of the multiply-adds wins. Measured on
# an AMD EPYC (AVX2, 2 cores) with torch 2.13 (benchmarks/README.md). GPUs always take the fused form.
FUSED_MIN_POSITIONS_CPU = 256


def scale_smaller(x: torch.Tensor, w: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """conv(x, w * scale) == conv(x * scale, w): scale whichever tensor is smaller (the input at low resolutions
    and small batches, the weight otherwise)."""
    return (x * scale, w) if x.numel() < w.numel() else (x, w * scale)


def shift_sum_matrix(flip: bool = False) -> torch.Tensor:
    """[9, 16]: a row-major 3x3 kernel times this is the 4x4 kernel summed over its four 1-pixel shifts (the
    official code's trick), flipped in both axes if `flip`."""
    m = torch.zeros(3, 3, 4, 4)
    for dy in (0, 1):
        for dx in (0, 1):
            m[:, :, dy:dy + 3, dx:dx + 3] += torch.eye(9).view(3, 3, 3, 3)
    return (m.flip(-1, -2) if flip else m).reshape(9, 16)


def fused_up_kernel(w: torch.Tensor) -> torch.Tensor:
    """Kernel for conv_transpose2d(stride 2, padding 1) equal to conv3x3(nearest_up2x(x)).

    conv_transpose2d correlates with the flipped kernel, hence the flip; its weight layout is [in, out, k, k].
    """
    o, i = w.shape[:2]
    return (w.transpose(0, 1).reshape(i * o, 9) @ shift_sum_matrix(flip=True).to(w)).view(i, o, 4, 4)


def fused_down_kernel(w: torch.Tensor) -> torch.Tensor:
    """Kernel for conv2d(stride 2, padding 1) equal to avgpool2x2(conv3x3(x))."""
    o, i = w.shape[:2]
    return (w.reshape(o * i, 9) @ (shift_sum_matrix() * 0.25).to(w)).view(o, i, 4, 4)


class EqualizedLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, gain: float = SQRT2, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.scale = gain / math.sqrt(in_features)
        self.plain = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, w = (x, self.weight * self.scale) if self.plain else scale_smaller(x, self.weight, self.scale)
        return F.linear(x, w, self.bias)


def set_plain(module: nn.Module, plain: bool = True) -> nn.Module:
    """Switch every equalized layer and activation in `module` to the textbook computation (weights scaled on every
    call, never fused, torch's leaky ReLU) or back. The same maths either way; the speed benchmark and the
    equivalence tests compare the two."""
    for m in module.modules():
        if isinstance(m, (EqualizedConv2d, EqualizedLinear, LeakyReLU)):
            m.plain = plain
    return module


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


LRELU_SLOPE = 0.2


class LeakyReLU(nn.Module):
    """Leaky ReLU with slope 0.2, whose backward treats the slope mask as the constant it is (`plain`: torch's own).

    The same values and first derivatives. The difference is in the gradient penalty's double backward: torch's
    leaky ReLU hands an all-zero tensor to its input as the second derivative, and in D the layers above minibatch
    stddev (the 4x4 conv and both dense layers) then run their whole backward on those zeros: 11% of a paper-preset
    step's FLOPs at 4x4. Here the mask comes from the detached output, so no such gradient exists. Keeping the
    output instead of the input also saves memory: the next layer keeps that same tensor for its own backward.
    """

    def __init__(self):
        super().__init__()
        self.plain = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.plain or not (x.requires_grad and torch.is_grad_enabled()):
            return F.leaky_relu(x, LRELU_SLOPE)  # no graph to build: skip the Python function's overhead
        return _MaskedLeakyReLU.apply(x)


class _MaskedLeakyReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = F.leaky_relu(x, LRELU_SLOPE)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        # y > 0 exactly where x > 0 (the slope is positive), so the output gives the mask
        return torch.ops.aten.leaky_relu_backward(grad, y.detach(), LRELU_SLOPE, True)
