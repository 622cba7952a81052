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
image at a time, so the result depends on the seed but not on the batch size.

Memory is bounded whatever the image count and resolution. The exact SWD needs, per direction, the sorted
projections of all of a set's descriptors, and the descriptors themselves (num_images * 128 * 147 floats per
level, 0.75 GB per level for 10k images) are needed again for every chunk of directions. So descriptors()
streams them to files in a temporary folder (tempfile's: set TMPDIR to put it elsewhere), one file per level,
and collects each channel's mean and std on the way; the distance then reads a level back in blocks, once per
chunk of directions, holding only that chunk's projections of both sets (max_bytes, default 512 MiB; never less
than one direction, 8 bytes per descriptor: 64 MB for 64k images). Disk: the descriptors, about 75 KB per image
per level per set; reading them back is cheap while they fit in the page cache. benchmarks/metrics_memory.py
measures the peak.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from progan.seeds import derive_seed
from progan.seeds import generator as seeded_generator

from .common import MetricInputError, iter_batches, separable_matmul
from .context import EvalContext, Metric

NHOOD_SIZE = 7
NHOODS_PER_IMAGE = 128
DIR_REPEATS = 4
DIRS_PER_REPEAT = 128
MIN_RESOLUTION = 16
MAX_BYTES = 512 * 2**20   # sorted projections of both sets, per chunk of directions
BLOCK_ROWS = 8192          # descriptors read back (and projected) at a time


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


class ChannelMoments:
    """Running per-channel mean and (population) std of [M, C, ...] batches, in float64.

    Sums are taken about the first batch's channel means, so that E[x^2] - E[x]^2 does not cancel.
    """

    def __init__(self):
        self.shift = self.sum = self.sum_sq = None
        self.count = 0

    def add(self, x: torch.Tensor) -> None:
        x = x.double().transpose(0, 1).reshape(x.shape[1], -1)  # [C, everything else]
        if self.shift is None:
            self.shift = x.mean(dim=1, keepdim=True)
            self.sum = torch.zeros_like(self.shift[:, 0])
            self.sum_sq = torch.zeros_like(self.sum)
        x = x - self.shift
        self.sum += x.sum(dim=1)
        self.sum_sq += x.square().sum(dim=1)
        self.count += x.shape[1]

    def mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        centred = self.sum / self.count
        std = (self.sum_sq / self.count - centred.square()).clamp(min=0).sqrt()
        # A constant channel (e.g. flat images) would divide by zero; leave it unscaled instead.
        std = torch.where(std > 0, std, torch.ones_like(std))
        return (self.shift[:, 0] + centred).float(), std.float()


class Descriptors:
    """One image set's patch descriptors per pyramid level, in files, with each level's channel mean and std.

    blocks(level) yields them normalised (each channel to mean 0, std 1 over the whole set), a block at a time.
    Close it (or use it as a context manager) to delete the files.
    """

    def __init__(self, resolutions: list[int], channels: int, nhood_size: int, rows: int, folder, moments):
        self.resolutions, self.channels, self.nhood_size, self.rows = resolutions, channels, nhood_size, rows
        self.dim = channels * nhood_size**2
        self._folder = folder
        self._stats = [m.mean_std() for m in moments]

    def path(self, level: int) -> Path:
        return Path(self._folder.name) / f"level{level}.f32"

    def blocks(self, level: int, device: str | torch.device = "cpu") -> Iterator[torch.Tensor]:
        """Normalised descriptors of one level, [rows_in_block, dim] float32 blocks in order."""
        mean, std = (t.to(device).view(-1, 1) for t in self._stats[level])
        with open(self.path(level), "rb") as f:
            while (raw := np.fromfile(f, dtype=np.float32, count=BLOCK_ROWS * self.dim)).size:
                x = torch.from_numpy(raw).to(device).view(-1, self.channels, self.nhood_size**2)
                yield ((x - mean) / std).reshape(-1, self.dim)

    def normalized(self, level: int) -> torch.Tensor:
        """All of one level's normalised descriptors in memory, [rows, dim] (for small sets and tests)."""
        return torch.cat(list(self.blocks(level)))

    def close(self) -> None:
        self._folder.cleanup()

    def __enter__(self) -> Descriptors:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def descriptors(
    images,
    seed: int,
    *,
    nhoods_per_image: int = NHOODS_PER_IMAGE,
    nhood_size: int = NHOOD_SIZE,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    workdir: str | None = None,
) -> Descriptors:
    """Patch descriptors of one image set, per pyramid level, streamed to files in a temporary folder.

    images: uint8 [N, 3, R, R] tensor or an iterable of such batches, read once. Each level holds
    N * nhoods_per_image descriptors of 3 * nhood_size**2 values.
    """
    resolutions: list[int] | None = None
    gens: list[torch.Generator] = []
    moments: list[ChannelMoments] = []
    half = nhood_size // 2
    rows, channels = 0, 3
    folder = tempfile.TemporaryDirectory(prefix="progan-swd-", dir=workdir)
    files = []
    try:
        for batch in iter_batches(images, batch_size):
            if batch.shape[2] != batch.shape[3]:
                raise MetricInputError(f"SWD needs square images, got {batch.shape[2]}x{batch.shape[3]}")
            if resolutions is None:
                resolutions = pyramid_resolutions(batch.shape[2])
                gens = [seeded_generator(seed, "swd-patches", res) for res in resolutions]
                moments = [ChannelMoments() for _ in resolutions]
                files = [open(Path(folder.name) / f"level{lvl}.f32", "wb") for lvl in range(len(resolutions))]
                channels = batch.shape[1]
            elif batch.shape[2] != resolutions[0]:
                raise MetricInputError(
                    f"SWD: all images must have the same size, got {batch.shape[2]} after {resolutions[0]}")
            if batch.shape[0] == 0:
                continue
            pyramid = laplacian_pyramid(batch.to(device=device, dtype=torch.float32), len(resolutions))
            for lvl, (level, res) in enumerate(zip(pyramid, resolutions)):
                # One draw per image keeps the positions independent of how the set was batched.
                centers = torch.stack([
                    torch.randint(half, res - half, (nhoods_per_image, 2), generator=gens[lvl])
                    for _ in range(batch.shape[0])
                ]).to(device)
                patches = extract_patches(level, centers, nhood_size)
                moments[lvl].add(patches)
                patches.cpu().numpy().tofile(files[lvl])
            rows += batch.shape[0] * nhoods_per_image
        if resolutions is None:
            raise MetricInputError("SWD got no images")
    except BaseException:
        for f in files:
            f.close()
        folder.cleanup()
        raise
    for f in files:
        f.close()
    return Descriptors(resolutions, channels, nhood_size, rows, folder, moments)


def random_directions(dim: int, repeats: int, per_repeat: int, generator: torch.Generator) -> torch.Tensor:
    """[repeats, dim, per_repeat] unit vectors (each column has norm 1)."""
    dirs = torch.randn(repeats, dim, per_repeat, generator=generator, dtype=torch.float64)
    return (dirs / dirs.norm(dim=1, keepdim=True)).float()


def _sort_rows_(x: torch.Tensor) -> torch.Tensor:
    # numpy's SIMD sort is ~10x faster than torch.sort on CPU (which also computes indices); in place, no copy.
    if x.device.type == "cpu":
        x.numpy().sort(axis=1)
        return x
    return torch.sort(x, dim=1).values


def _sorted_projections_(out: torch.Tensor, blocks: Iterable[torch.Tensor], dirs: torch.Tensor) -> torch.Tensor:
    """Fill out [directions, rows] with each direction's projections of all descriptors, sorted."""
    start, rows = 0, out.shape[1]
    for block in blocks:
        if start + block.shape[0] > rows:
            raise MetricInputError(f"SWD: more than the {rows} descriptors announced")
        out[:, start:start + block.shape[0]] = dirs.T @ block.T
        start += block.shape[0]
    if start != rows:
        raise MetricInputError(f"SWD: got {start} descriptors, expected {rows}")
    return _sort_rows_(out)


def sliced_wasserstein_blocks(blocks_a: Callable[[], Iterable[torch.Tensor]],
                              blocks_b: Callable[[], Iterable[torch.Tensor]], rows: int, directions: torch.Tensor,
                              max_bytes: int = MAX_BYTES) -> float:
    """Mean over directions of the 1-D Wasserstein-1 distance between the two sets' projections.

    blocks_a(), blocks_b(): each call yields one set's [m, D] descriptor blocks, `rows` rows in all.
    directions: [repeats, D, per_repeat] (or [D, K]) unit vectors, taken a chunk at a time so that the sorted
    projections of both sets stay within max_bytes.
    """
    dirs = directions.transpose(0, 1).reshape(directions.shape[-2], -1) if directions.ndim == 3 else directions
    chunk = min(dirs.shape[1], max(1, max_bytes // (2 * 4 * rows)))
    # Two buffers for all chunks: allocating them anew each time fragments the heap (glibc keeps freed blocks
    # below its mmap threshold, and training raises that threshold to 32 MB).
    buf_a = torch.empty(chunk, rows, device=dirs.device)
    buf_b = torch.empty_like(buf_a)
    dists = []
    for c in range(0, dirs.shape[1], chunk):
        d = dirs[:, c:c + chunk]
        proj_a = _sorted_projections_(buf_a[:d.shape[1]], blocks_a(), d)
        proj_b = _sorted_projections_(buf_b[:d.shape[1]], blocks_b(), d)
        dists.append(proj_a.sub_(proj_b).abs_().mean(dim=1).double().cpu())
    return torch.cat(dists).mean().item()


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, directions: torch.Tensor) -> float:
    """The same for two descriptor sets in memory, [M, D] each."""
    if a.ndim != 2 or a.shape != b.shape:
        raise MetricInputError(f"SWD needs two descriptor sets of equal shape, got {list(a.shape)} and {list(b.shape)}")
    directions = directions.to(a.device)
    return sliced_wasserstein_blocks(lambda: [a], lambda: [b], a.shape[0], directions)


def swd_from_descriptors(
    desc_a: Descriptors,
    desc_b: Descriptors,
    seed: int,
    *,
    dir_repeats: int = DIR_REPEATS,
    dirs_per_repeat: int = DIRS_PER_REPEAT,
    max_bytes: int = MAX_BYTES,
    device: str | torch.device = "cpu",
) -> dict:
    """{"levels": {"128": SWDx1e3, ...}, "value": mean over levels} for two descriptor sets."""
    if desc_a.resolutions != desc_b.resolutions or desc_a.rows != desc_b.rows or desc_a.dim != desc_b.dim:
        raise MetricInputError(
            f"SWD compares sets of the same size and resolution: got {desc_a.rows} descriptors at "
            f"{desc_a.resolutions[0]} px vs {desc_b.rows} at {desc_b.resolutions[0]} px"
        )
    levels = {}
    for lvl, res in enumerate(desc_a.resolutions):
        dirs = random_directions(desc_a.dim, dir_repeats, dirs_per_repeat,
                                 seeded_generator(seed, "swd-directions", res)).to(device)
        levels[str(res)] = sliced_wasserstein_blocks(lambda: desc_a.blocks(lvl, device),
                                                     lambda: desc_b.blocks(lvl, device),
                                                     desc_a.rows, dirs, max_bytes) * 1e3
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
    max_bytes: int = MAX_BYTES,
) -> dict:
    """SWD x 1e3 between two equally sized uint8 image sets (tensors or iterables of batches).

    Returns {"levels": {"<res>": value, ...}, "value": average over levels}.
    """
    kw = dict(nhoods_per_image=nhoods_per_image, batch_size=batch_size, device=device)
    with descriptors(images_a, derive_seed(seed, "a"), **kw) as desc_a, \
            descriptors(images_b, derive_seed(seed, "b"), **kw) as desc_b:
        return swd_from_descriptors(desc_a, desc_b, seed, dir_repeats=dir_repeats, dirs_per_repeat=dirs_per_repeat,
                                    max_bytes=max_bytes, device=device)


def swd_metric(ctx: EvalContext) -> dict:
    """SWD x 1e3 per Laplacian level and averaged; the real-vs-real value beside it as the noise floor."""
    s = ctx.settings("swd", {"nhoods_per_image": NHOODS_PER_IMAGE, "dir_repeats": DIR_REPEATS,
                             "dirs_per_repeat": DIRS_PER_REPEAT})
    desc_kw = dict(nhoods_per_image=s["nhoods_per_image"], batch_size=ctx.batch_size, device=ctx.device)
    dist_kw = dict(dir_repeats=s["dir_repeats"], dirs_per_repeat=s["dirs_per_repeat"], device=ctx.device)
    # One set of projection directions for both comparisons, so fakes and floor are measured alike.
    dir_seed = derive_seed(ctx.seed, "swd")
    with descriptors(ctx.reals(0), derive_seed(ctx.seed, "swd", "reals"), **desc_kw) as real:

        def floor() -> dict:
            with descriptors(ctx.reals(1), derive_seed(ctx.seed, "swd", "reals2"), **desc_kw) as real2:
                return swd_from_descriptors(real, real2, dir_seed, **dist_kw)

        # Patches and directions depend on the seed, so the seed is part of the floor's cache key.
        floor_result = ctx.cached_json("swd-floor", {**s, "seed": ctx.seed}, floor)
        with descriptors(ctx.fakes(), derive_seed(ctx.seed, "swd", "fakes"), **desc_kw) as fake:
            out = swd_from_descriptors(real, fake, dir_seed, **dist_kw)
    return {"value": out["value"], "levels": out["levels"], "real_floor": floor_result["value"],
            "real_floor_levels": floor_result["levels"],
            # With fewer than 2 x num_images real images the two real sets share images: a lower floor.
            "real_floor_disjoint": int(ctx.dataset.count) >= 2 * ctx.num_images, "settings": s}


SWD = Metric("swd", swd_metric, min_resolution=MIN_RESOLUTION)
