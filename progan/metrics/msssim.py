"""MS-SSIM between consecutive pairs of images: the paper's diversity measure (lower = more diverse).

Follows the variant in tkarras/progressive_growing_of_gans metrics/ms_ssim.py (itself the TensorFlow
port of Wang et al.'s MATLAB code), so numbers are comparable with the paper's:
  * 5 scales with Wang's weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), 2x2 box downsampling.
  * Gaussian window 11 px, sigma 1.5, 'valid' filtering, K1 = 0.01, K2 = 0.03, data range 255.
  * Small images: the window at each scale is min(11, H, W) pixels and sigma shrinks in proportion
    (size * 1.5 / 11); an even-sized window is centred between pixels, as MATLAB's fspecial does.
    So 128 px images use windows 11, 11, 11, 11, 8 at 128, 64, 32, 16, 8 px, and 16 px images use
    11, 8, 4, 2, 1 (the last scale then only compares mean brightness). We keep all 5 scales rather
    than dropping coarse ones so that values stay comparable with the paper's code at every size.
    From 256 px up (smallest scale >= 16 px) this is exactly standard MS-SSIM.
  * Colour: SSIM and contrast-structure are averaged over channels at each scale and then combined
    across scales (the paper's order). pytorch-msssim combines per channel first; both agree on
    single-channel or grey images.
  * Negative per-scale values are clipped to 0 before the weighted product.
Odd sizes are downsampled by dropping the last row/column.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .common import MetricInputError, iter_batches, separable_matmul
from .context import EvalContext, Metric

WANG_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def gaussian_window_1d(size: int, sigma: float, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """Normalised 1-D Gaussian; its outer product with itself is MATLAB's fspecial('gaussian')."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2.0 * sigma**2))
    return (g / g.sum()).to(dtype=dtype, device=device)


def _valid_filter_matrix(n: int, window: torch.Tensor) -> torch.Tensor:
    """[n, n-k+1] banded matrix M with (t @ M) = 'valid' correlation of t's rows with the window."""
    k = window.numel()
    d = torch.arange(n, device=window.device)[:, None] - torch.arange(n - k + 1, device=window.device)[None, :]
    inside = (d >= 0) & (d < k)
    return torch.where(inside, window[d.clamp(0, k - 1)], window.new_zeros(()))


def _filter(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """'valid' separable filtering over the last two axes of [..., H, W]."""
    return separable_matmul(x, _valid_filter_matrix(x.shape[-2], window), _valid_filter_matrix(x.shape[-1], window))


def ssim_and_cs(x, y, *, data_range=255.0, win_size=11, win_sigma=1.5, k1=0.01, k2=0.03):
    """Per-image SSIM and contrast-structure term at one scale (means over channels and pixels)."""
    size = min(win_size, x.shape[2], x.shape[3])
    window = gaussian_window_1d(size, size * win_sigma / win_size, x.dtype, x.device)
    # Filter all five moments in one go: [5, B, C, H', W'].
    mu1, mu2, xx, yy, xy = _filter(torch.stack([x, y, x * x, y * y, x * y]), window)
    s11 = xx - mu1 * mu1
    s22 = yy - mu2 * mu2
    s12 = xy - mu1 * mu2
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    v1, v2 = 2.0 * s12 + c2, s11 + s22 + c2
    cs_map = v1 / v2
    ssim_map = (2.0 * mu1 * mu2 + c1) / (mu1 * mu1 + mu2 * mu2 + c1) * cs_map
    return ssim_map.mean(dim=(1, 2, 3)), cs_map.mean(dim=(1, 2, 3))


def ms_ssim(x, y, *, data_range=255.0, weights=WANG_WEIGHTS, win_size=11, win_sigma=1.5, k1=0.01, k2=0.03):
    """MS-SSIM of each pair (x[i], y[i]) -> [B]. x, y: float [B, C, H, W] in [0, data_range]."""
    if x.shape != y.shape or x.ndim != 4:
        raise MetricInputError(f"MS-SSIM needs two [B, C, H, W] batches of equal shape, got {list(x.shape)} and {list(y.shape)}")
    if min(x.shape[2:]) < 2 ** (len(weights) - 1):
        raise MetricInputError(f"MS-SSIM with {len(weights)} scales needs images of at least {2 ** (len(weights) - 1)} px, got {list(x.shape[2:])}")
    terms = []
    for scale in range(len(weights)):
        if scale > 0:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
        ssim, cs = ssim_and_cs(x, y, data_range=data_range, win_size=win_size, win_sigma=win_sigma, k1=k1, k2=k2)
        terms.append(ssim if scale == len(weights) - 1 else cs)
    terms = torch.stack(terms).clamp(min=0.0)                   # [scales, B]
    w = torch.tensor(weights, dtype=terms.dtype, device=terms.device).view(-1, 1)
    return torch.prod(terms**w, dim=0)


def pairwise_msssim(images, *, batch_size: int = 64, device: str | torch.device = "cpu") -> tuple[float, int]:
    """Mean MS-SSIM over consecutive pairs (0, 1), (2, 3), ... of a uint8 image set.

    images: uint8 [N, 3, H, W] tensor or an iterable of batches (an odd batch carries its last
    image over to the next). Returns (mean, number of pairs); a trailing odd image is ignored.
    """
    total, pairs = 0.0, 0
    carry = None
    for batch in iter_batches(images, batch_size):
        if carry is not None:
            batch = torch.cat([carry, batch])
        n = batch.shape[0] // 2 * 2
        carry = batch[n:] if n < batch.shape[0] else None
        if n == 0:
            continue
        x = batch[:n].to(device=device, dtype=torch.float32)
        total += ms_ssim(x[0::2], x[1::2]).double().sum().item()
        pairs += n // 2
    if pairs == 0:
        raise MetricInputError("MS-SSIM needs at least 2 images (one pair)")
    return total / pairs, pairs


def msssim_metric(ctx: EvalContext) -> dict:
    """Mean MS-SSIM of consecutive pairs of generated images; the same on reals for reference."""
    value, pairs = pairwise_msssim(ctx.fakes(), batch_size=ctx.batch_size, device=ctx.device)
    reals = ctx.cached_json("msssim-reals", {}, lambda: {"value": pairwise_msssim(
        ctx.reals(0), batch_size=ctx.batch_size, device=ctx.device)[0]})
    return {"value": value, "pairs": pairs, "reals": reals["value"]}


# Five scales of 2x downsampling: at least 16x16 images.
MSSSIM = Metric("msssim", msssim_metric, min_resolution=2 ** (len(WANG_WEIGHTS) - 1))
