"""The textbook form of progan's layers: the reference that the speed benchmarks and the equivalence tests hold
the library against.

Weights are scaled on every call, up/down sampling is a separate nearest-neighbour / average-pool pass (never the
fused stride-2 kernel), and the activation is torch's own leaky ReLU. The same maths as the library, computed the
slow, obvious way; nothing here is used in training or generation.

    ref = to_reference(copy.deepcopy(net))   # the same parameters (shared, not copied), the textbook forward
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from progan.layers import LRELU_SLOPE, EqualizedConv2d, EqualizedLinear, LeakyReLU


class ReferenceConv2d(nn.Module):
    def __init__(self, conv: EqualizedConv2d):
        super().__init__()
        self.weight, self.bias = conv.weight, conv.bias  # the same Parameters, so optimizers and state dicts agree
        self.scale, self.up, self.down = conv.scale, conv.up, conv.down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = F.conv2d(x, self.weight * self.scale, self.bias, padding=self.weight.shape[-1] // 2)
        if self.down:
            x = F.avg_pool2d(x, 2)
        return x


class ReferenceLinear(nn.Module):
    def __init__(self, linear: EqualizedLinear):
        super().__init__()
        self.weight, self.bias = linear.weight, linear.bias
        self.scale = linear.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


def to_reference(module: nn.Module) -> nn.Module:
    """Replace, in place, every equalized layer and activation in `module` by its textbook form; returns it."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, EqualizedConv2d):
                setattr(parent, name, ReferenceConv2d(child))
            elif isinstance(child, EqualizedLinear):
                setattr(parent, name, ReferenceLinear(child))
            elif isinstance(child, LeakyReLU):
                setattr(parent, name, nn.LeakyReLU(LRELU_SLOPE))
    return module
