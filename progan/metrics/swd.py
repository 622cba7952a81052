"""Sliced Wasserstein distance on Laplacian pyramids, as the ProGAN paper computes it (sec. 5).

Same maths as tkarras/progressive_growing_of_gans metrics/sliced_wasserstein.py:
  1. Laplacian pyramid of each image in [0, 255] float: 5x5 binomial kernel [1,4,6,4,1]/16 (outer
     product), mirror borders (cv2.pyrDown / pyrUp), levels R, R/2, ..., 16; the 16x16 level is the
     low-pass residual.
  2. 128 random 7x7 patches per image per level (centres at least 3 px from the border): descriptors
     of 3*7*7 = 147 values.
  3. Per level, each set's descriptors are normalised per colour channel by that set's own mean and
     (population) std over all its descriptors.
  4. 4 repeats x 128 random unit directions; project both sets, sort each projection, mean absolute
     difference of the sorted values; average over directions and repeats.
  5. Reported x 1e3 per level, and their mean.

Randomness is explicit: patch positions come from one torch.Generator per pyramid level, drawn one
image at a time, so the result depends on the seed but not on the batch size. Memory: descriptors
are kept for the whole set, num_images * 128 * 147 * 4 bytes per level (about 0.75 GB per level for
10k images), for each of the two sets being compared.
"""

from __future__ import annotations

import numpy as np
import torch

from .common import MetricInputError, derive_seed, iter_batches, separable_matmul

NHOOD_SIZE = 7
NHOODS_PER_IMAGE = 128
DIR_REPEATS = 4
DIRS_PER_REPEAT = 128
MIN_RESOLUTION = 16


def pyramid_resolutions(resolution: int) -> list[int]:
    """[R, R/2, ..., 16]: the levels the paper evaluates."""
    if resolution < MIN_RESOLUTION or resolution & (resolution - 1):
        raise MetricInputError(
            f"SWD needs square images whose side is a power of two >= {MIN_RESOLUTION}, got {resolution}"
        )
    levels = []
    while resolution >= MIN_RESOLUTION:
        levels.append(resolution)
        resolution //= 2
    return levels


_BINOMIAL = (1.0, 4.0, 6.0, 4.0, 1.0)


def _mirror(i: torch.Tensor, n: int) -> torch.Tensor:
    """Mirror out-of-range indices about the edge pixels (d c b | a b c d | c b a), like cv2's default border."""
    i = i.abs()
    return torch.where(i >= n, 2 * (n - 1) - i, i)


def _down_matrix(n: int, dtype, device) -> torch.Tensor:
    """[n, ceil(n/2)]: (t @ M) blurs rows of t with [1,4,6,4,1]/16 (mirror borders) and keeps even pixels."""
    out = torch.arange((n + 1) // 2, device=device)
    taps = torch.arange(5, device=device)[:, None]
    src = _mirror(2 * out + taps - 2, n)                                   # [5, n_out]
    weight = (torch.tensor(_BINOMIAL, dtype=dtype, device=device) / 16)[:, None].expand_as(src)
    m = torch.zeros(n, out.numel(), dtype=dtype, device=device)
    return m.index_put_((src, out.expand_as(src)), weight, accumulate=True)


def _up_matrix(n: int, dtype, device) -> torch.Tensor:
    """[n, 2n]: (t @ M) zero-inserts rows of t to 2n pixels and blurs with [1,4,6,4,1]/8 (mirror borders)."""
    out = torch.arange(2 * n, device=device)
    taps = torch.arange(5, device=device)[:, None]
    src = _mirror(out + taps - 2, 2 * n)                                   # index into the zero-inserted row
    weight = (torch.tensor(_BINOMIAL, dtype=dtype, device=device) / 8)[:, None].expand_as(src)
    keep = src % 2 == 0                                                    # odd positions hold the inserted zeros
    m = torch.zeros(n, 2 * n, dtype=dtype, device=device)
    return m.index_put_((src[keep] // 2, out.expand_as(src)[keep]), weight[keep], accumulate=True)


def pyr_down(x: torch.Tensor) -> torch.Tensor:
    """Blur with the 5x5 binomial kernel (/256) and keep every other pixel; matches cv2.pyrDown."""
    h, w = x.shape[-2:]
    return separable_matmul(x, _down_matrix(h, x.dtype, x.device), _down_matrix(w, x.dtype, x.device))


def pyr_up(x: torch.Tensor) -> torch.Tensor:
    """Zero-insert to twice the size and blur with 4x the binomial kernel; matches cv2.pyrUp."""
    h, w = x.shape[-2:]
    return separable_matmul(x, _up_matrix(h, x.dtype, x.device), _up_matrix(w, x.dtype, x.device))


def laplacian_pyramid(x: torch.Tensor, num_levels: int) -> list[torch.Tensor]:
    """Band-pass levels from fine to coarse; the last level is the remaining low-pass image."""
    levels = [x]
    for _ in range(1, num_levels):
        levels.append(pyr_down(levels[-1]))
        levels[-2] = levels[-2] - pyr_up(levels[-1])
    return levels


def extract_patches(level: torch.Tensor, centers: torch.Tensor, size: int = NHOOD_SIZE) -> torch.Tensor:
    """Patches around `centers` ([B, P, 2] (y, x)) of `level` [B, C, S, S] -> [B * P, C, size, size]."""
    b, c, s, _ = level.shape
    r = torch.arange(size, device=level.device) - size // 2
    # Flat offsets of one patch within an image, in (channel, dy, dx) order: one gather does it all.
    template = (torch.arange(c, device=level.device).view(c, 1, 1) * s * s + r.view(1, size, 1) * s + r.view(1, 1, size))
    index = (centers[..., 0] * s + centers[..., 1])[..., None] + template.reshape(-1)      # [B, P, C*size*size]
    patches = torch.gather(level.reshape(b, -1), 1, index.reshape(b, -1))
    return patches.reshape(-1, c, size, size)


def normalize_descriptors(desc: torch.Tensor) -> torch.Tensor:
    """[M, C, k, k] -> [M, C*k*k], each channel shifted to mean 0 and scaled to std 1 over the whole set.

    Works in place on `desc` (it can be gigabytes). torch's float32 sums are pairwise, accurate
    enough here, and avoid a float64 copy of the whole set.
    """
    mean = desc.mean(dim=(0, 2, 3), keepdim=True)
    desc.sub_(mean)
    std = desc.square().mean(dim=(0, 2, 3), keepdim=True).sqrt()
    # A constant channel (e.g. flat images) would divide by zero; leave it unscaled instead.
    std = torch.where(std > 0, std, torch.ones_like(std))
    return desc.div_(std).reshape(desc.shape[0], -1)


def descriptors(
    images,
    seed: int,
    *,
    nhoods_per_image: int = NHOODS_PER_IMAGE,
    nhood_size: int = NHOOD_SIZE,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> tuple[list[int], list[torch.Tensor]]:
    """Normalised patch descriptors of one image set, per pyramid level.

    images: uint8 [N, 3, R, R] tensor or an iterable of such batches. Returns (resolutions,
    descriptors) with descriptors[l] of shape [N * nhoods_per_image, 3 * nhood_size**2].
    """
    resolutions: list[int] | None = None
    gens: list[torch.Generator] = []
    parts: list[list[torch.Tensor]] = []
    half = nhood_size // 2
    for batch in iter_batches(images, batch_size):
        if batch.shape[2] != batch.shape[3]:
            raise MetricInputError(f"SWD needs square images, got {batch.shape[2]}x{batch.shape[3]}")
        if resolutions is None:
            resolutions = pyramid_resolutions(batch.shape[2])
            gens = [torch.Generator().manual_seed(derive_seed(seed, "swd-patches", res)) for res in resolutions]
            parts = [[] for _ in resolutions]
        elif batch.shape[2] != resolutions[0]:
            raise MetricInputError(f"SWD: all images must have the same size, got {batch.shape[2]} after {resolutions[0]}")
        if batch.shape[0] == 0:
            continue
        pyramid = laplacian_pyramid(batch.to(device=device, dtype=torch.float32), len(resolutions))
        for lvl, (level, res) in enumerate(zip(pyramid, resolutions)):
            # One draw per image keeps the positions independent of how the set was batched.
            centers = torch.stack([
                torch.randint(half, res - half, (nhoods_per_image, 2), generator=gens[lvl])
                for _ in range(batch.shape[0])
            ]).to(device)
            parts[lvl].append(extract_patches(level, centers, nhood_size))
    if resolutions is None:
        raise MetricInputError("SWD got no images")
    out = []
    for lvl in range(len(parts)):
        desc = torch.cat(parts[lvl])
        parts[lvl] = []  # free the pieces before the next level is concatenated
        out.append(normalize_descriptors(desc))
    return resolutions, out


def random_directions(dim: int, repeats: int, per_repeat: int, generator: torch.Generator) -> torch.Tensor:
    """[repeats, dim, per_repeat] unit vectors (each column has norm 1)."""
    dirs = torch.randn(repeats, dim, per_repeat, generator=generator, dtype=torch.float64)
    return (dirs / dirs.norm(dim=1, keepdim=True)).float()


def _sort_rows(x: torch.Tensor) -> torch.Tensor:
    # numpy's SIMD sort is ~10x faster than torch.sort on CPU (which also computes indices).
    if x.device.type == "cpu":
        return torch.from_numpy(np.sort(x.numpy(), axis=1))
    return torch.sort(x, dim=1).values


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, directions: torch.Tensor) -> float:
    """Mean over directions (and repeats) of the 1-D Wasserstein-1 distance between the projections."""
    if a.ndim != 2 or a.shape != b.shape:
        raise MetricInputError(f"SWD needs two descriptor sets of equal shape, got {list(a.shape)} and {list(b.shape)}")
    dists = []
    for dirs in directions.to(a.device):
        # [directions, M]: each direction's projections contiguous, ready to sort.
        proj_a = _sort_rows(dirs.T @ a.T)
        proj_b = _sort_rows(dirs.T @ b.T)
        dists.append((proj_a - proj_b).abs_().mean().item())
    return sum(dists) / len(dists)


def swd_from_descriptors(
    resolutions: list[int],
    desc_a: list[torch.Tensor],
    desc_b: list[torch.Tensor],
    seed: int,
    *,
    dir_repeats: int = DIR_REPEATS,
    dirs_per_repeat: int = DIRS_PER_REPEAT,
) -> dict:
    """{"levels": {"128": SWDx1e3, ...}, "value": mean over levels} for two descriptor sets."""
    levels = {}
    for res, a, b in zip(resolutions, desc_a, desc_b):
        gen = torch.Generator().manual_seed(derive_seed(seed, "swd-directions", res))
        dirs = random_directions(a.shape[1], dir_repeats, dirs_per_repeat, gen)
        levels[str(res)] = sliced_wasserstein(a, b, dirs) * 1e3
    return {"levels": levels, "value": sum(levels.values()) / len(levels)}


def swd(
    images_a,
    images_b,
    seed: int = 0,
    *,
    nhoods_per_image: int = NHOODS_PER_IMAGE,
    dir_repeats: int = DIR_REPEATS,
    dirs_per_repeat: int = DIRS_PER_REPEAT,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> dict:
    """SWD x 1e3 between two equally sized uint8 image sets (tensors or iterables of batches).

    Returns {"levels": {"<res>": value, ...}, "value": average over levels}.
    """
    kw = dict(nhoods_per_image=nhoods_per_image, batch_size=batch_size, device=device)
    res_a, desc_a = descriptors(images_a, derive_seed(seed, "a"), **kw)
    res_b, desc_b = descriptors(images_b, derive_seed(seed, "b"), **kw)
    if res_a != res_b or desc_a[0].shape != desc_b[0].shape:
        raise MetricInputError(
            f"SWD compares sets of the same size and resolution: got {desc_a[0].shape[0] // nhoods_per_image} "
            f"images at {res_a[0]} px vs {desc_b[0].shape[0] // nhoods_per_image} at {res_b[0]} px"
        )
    return swd_from_descriptors(res_a, desc_a, desc_b, seed, dir_repeats=dir_repeats, dirs_per_repeat=dirs_per_repeat)
