"""The paper's building blocks: equalized-learning-rate layers, PixelNorm, minibatch stddev, resampling.

Equalized learning rate: weights are stored as N(0, 1) and multiplied at run time by gain / sqrt(fan_in), so
Adam's per-parameter step size acts on every layer at the same dynamic range. Biases start at 0 and are not scaled.
"""

from __future__ import annotations

import copy
import math
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

SQRT2 = math.sqrt(2.0)


class EqualizedConv2d(nn.Module):
    """kxk convolution (stride 1, 'same' padding) with run-time weight scaling, optionally with nearest-2x
    upsampling before it (`up`) or 2x2 average pooling after it (`down`); see `resampled_conv2d`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, gain: float = SQRT2,
                 up: bool = False, down: bool = False, fused: bool = True):
        super().__init__()
        assert not (up and down)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.scale = gain / math.sqrt(in_channels * kernel_size * kernel_size)
        self.up, self.down = up, down
        self.fused = fused and kernel_size == 3 and (up or down)
        if self.fused:
            # The 3x3 -> 4x4 map with the run-time scale folded in, built once: the fused kernel is then one small
            # matmul, not a scaling pass, a pad, three adds and a flip over the whole weight.
            self.register_buffer("shifts", fused_shifts(up, self.scale), persistent=False)

    def fused_kernel(self) -> torch.Tensor:
        return fused_kernel(self.weight, self.shifts, self.up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return resampled_conv2d(x, self.weight, self.bias, self.scale, self.up, self.down,
                                self.fused_kernel if self.fused else None)

    def extra_repr(self) -> str:
        o, i, k, _ = self.weight.shape
        return f"{i}, {o}, kernel_size={k}, up={self.up}, down={self.down}, fused={self.fused}"


def resampled_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, scale: float,
                     up: bool = False, down: bool = False,
                     kernel: torch.Tensor | Callable[[], torch.Tensor] | None = None) -> torch.Tensor:
    """The one computation of an equalized-LR conv: conv(x, weight * scale) + bias, stride 1, 'same' padding,
    after nearest-2x upsampling (`up`) or before 2x2 average pooling (`down`).

    `kernel` is the fused form's 4x4 kernel (`fused_kernel`), or a function that builds it: given one, the up-conv
    or down-conv is computed as a single stride-2 (transposed) convolution, exactly the same maths with less than
    half the multiply-adds, wherever that is also faster (`fused_pays_off`).
    """
    if kernel is not None and fused_pays_off(x, down):
        k = kernel() if callable(kernel) else kernel
        if up:
            return F.conv_transpose2d(x, k, bias, stride=2, padding=1)
        return F.conv2d(x, k, bias, stride=2, padding=1)
    x, w = scale_smaller(x, weight, scale)
    if up:
        x = upsample2x(x)
    x = F.conv2d(x, w, bias, padding=weight.shape[-1] // 2)
    if down:
        x = downsample2x(x)
    return x


# oneDNN's stride-2 and transposed convolutions lose to upsample+conv / conv+pool when the low-resolution side has
# few positions (batch x height x width); above this the fused form's 4/9 of the multiply-adds wins. Measured on
# an AMD EPYC (AVX2, 2 cores) with torch 2.13 (docs/speed.md). GPUs always take the fused form.
FUSED_MIN_POSITIONS_CPU = 256


def fused_pays_off(x: torch.Tensor, down: bool) -> bool:
    """Whether the fused form is the faster one for input x (of an up-conv if not `down`)."""
    if x.device.type != "cpu":
        return True
    low_res_positions = x.shape[0] * x.shape[-2] * x.shape[-1] // (4 if down else 1)
    return low_res_positions >= FUSED_MIN_POSITIONS_CPU


def scale_smaller(x: torch.Tensor, w: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """conv(x, w * scale) == conv(x * scale, w): scale whichever tensor is smaller (the input at low resolutions
    and small batches, the weight otherwise); a scale of 1 (a weight scaled already) costs nothing."""
    if scale == 1.0:
        return x, w
    return (x * scale, w) if x.numel() < w.numel() else (x, w * scale)


def fused_shifts(up: bool, scale: float = 1.0) -> torch.Tensor:
    """[9, 16]: a row-major 3x3 kernel times this is the fused form's 4x4 kernel (`fused_kernel`), times `scale`.

    The 4x4 kernel is the 3x3 one summed over its four 1-pixel shifts (the official code's trick); for a down-conv
    also times the pooling's 1/4, for an up-conv flipped in both axes, as conv_transpose2d correlates with the
    flipped kernel.
    """
    m = torch.zeros(3, 3, 4, 4)
    for dy in (0, 1):
        for dx in (0, 1):
            m[:, :, dy:dy + 3, dx:dx + 3] += torch.eye(9).view(3, 3, 3, 3)
    m = m.flip(-1, -2) if up else m * 0.25
    return (m * scale).reshape(9, 16)


def fused_kernel(weight: torch.Tensor, shifts: torch.Tensor, up: bool) -> torch.Tensor:
    """The one place the fused 4x4 kernel is built: [out, in, 3, 3] weight -> [out, in, 4, 4] for conv2d(stride 2,
    padding 1) == avgpool2x2(conv3x3(x)), or [in, out, 4, 4] (conv_transpose2d's layout) for conv_transpose2d(
    stride 2, padding 1) == conv3x3(nearest_up2x(x)); `shifts` from `fused_shifts(up, scale)`.

    In full precision even under autocast: a bf16 matmul would round the scale itself, the same error in every
    weight of the layer.
    """
    o, i = weight.shape[:2]
    with torch.autocast(weight.device.type, enabled=False):
        if up:
            return (weight.transpose(0, 1).reshape(i * o, 9) @ shifts.to(weight)).view(i, o, 4, 4)
        return (weight.reshape(o * i, 9) @ shifts.to(weight)).view(o, i, 4, 4)


class EqualizedLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, gain: float = SQRT2, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.scale = gain / math.sqrt(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(*scale_smaller(x, self.weight, self.scale), self.bias)


class FrozenConv2d(nn.Module):
    """An EqualizedConv2d for inference: its scaled weight and fused kernel computed once, then `resampled_conv2d`
    as in training. Re-deriving them on every call is most of the cost of a single small frame on a CPU."""

    def __init__(self, conv: EqualizedConv2d):
        super().__init__()
        self.up, self.down = conv.up, conv.down
        self.register_buffer("weight", (conv.weight.detach() * conv.scale).contiguous())
        self.register_buffer("bias", conv.bias.detach().clone())
        self.register_buffer("kernel", conv.fused_kernel().detach().contiguous() if conv.fused else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return resampled_conv2d(x, self.weight, self.bias, 1.0, self.up, self.down, self.kernel)


def inference_copy(module: nn.Module) -> nn.Module:
    """A copy of `module` for inference only, each EqualizedConv2d replaced by a FrozenConv2d (`module` itself is
    untouched)."""
    module = copy.deepcopy(module)
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, EqualizedConv2d):
                setattr(parent, name, FrozenConv2d(child))
    return module.eval().requires_grad_(False)


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
    """Leaky ReLU with slope 0.2, whose backward treats the slope mask as the constant it is.

    The same values and first derivatives. The difference is in the gradient penalty's double backward: torch's
    leaky ReLU hands an all-zero tensor to its input as the second derivative, and in D the layers above minibatch
    stddev (the 4x4 conv and both dense layers) then run their whole backward on those zeros: 11% of a paper-preset
    step's FLOPs at 4x4. Here the mask comes from the detached output, so no such gradient exists. Keeping the
    output instead of the input also saves memory: the next layer keeps that same tensor for its own backward.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (x.requires_grad and torch.is_grad_enabled()):
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
