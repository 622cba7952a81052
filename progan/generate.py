"""Sampling from a generator: latents from seeds, grids, slerp interpolation videos, truncation.

Used by `progan generate`, by the trainer for its fixed-latent snapshots, and by the studio.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from progan.conditioning.rows import one_hot_rows
from progan.data.dataset import to_uint8
from progan.fileio import atomic_write_bytes
from progan.layers import pixel_norm
from progan.lod import level_and_alpha
from progan.networks import Generator
from progan.seeds import generator, seed_generator


def seed_latent(seed: int, latent_size: int) -> torch.Tensor:
    """The latent of an integer seed: [latent_size], from its own CPU generator (the same image everywhere:
    generate, the studio, any batch composition)."""
    return torch.randn(latent_size, generator=seed_generator(seed))


def latents_from_seeds(seeds: list[int], latent_size: int) -> torch.Tensor:
    return torch.stack([seed_latent(s, latent_size) for s in seeds])


def condition_noise_from_seeds(seeds: list[int], ca_size: int) -> torch.Tensor:
    """[len(seeds), ca_size]: a text model's conditioning-augmentation noise for each seed, so that one prompt's
    seeds sample around its code as training did (more varied images, equally on the prompt), the same noise for a
    seed everywhere."""
    return torch.stack([torch.randn(ca_size, generator=generator(s, "condition-noise")) for s in seeds])


def normalize(z: torch.Tensor) -> torch.Tensor:
    """Rows to norm sqrt(L), where each coordinate is about N(0, 1): G pixel-normalises z, so only a latent's
    direction matters, and these are the units in which the studio measures offsets and coordinates."""
    return pixel_norm(z, eps=1e-12)


def slerp(a: torch.Tensor, b: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between rows of a and b; t a float or a [N, 1] tensor. The result has norm sqrt(L)."""
    a, b = normalize(a), normalize(b)
    length = math.sqrt(a.shape[-1])
    cos = ((a * b).sum(-1, keepdim=True) / length**2).clamp(-1.0, 1.0)
    omega = torch.acos(cos)
    sin = torch.sin(omega)
    near = sin.abs() < 1e-6  # (anti)parallel rows: fall back to a normalised lerp
    wa = torch.where(near, (1 - t) * torch.ones_like(sin), torch.sin((1 - t) * omega) / sin.where(~near, 1))
    wb = torch.where(near, t * torch.ones_like(sin), torch.sin(t * omega) / sin.where(~near, 1))
    return normalize(wa * a + wb * b)


@torch.inference_mode()
def mean_embedding(G: Generator, samples: int = 2048, seed: int = 0, batch: int = 512,
                   cond: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of the first 4x4 feature map G.embed(z) over many z, [1, C, 4, 4]: the centre truncation pulls toward.

    A conditional model's mean is taken under one condition row `cond` [1, cond_size] (truncation toward the centre
    of what was asked for); a class model without one averages over uniformly drawn classes."""
    rng = seed_generator(seed)
    device = G.dense.weight.device
    if cond is None and G.cfg.text_size:
        raise ValueError("the truncation mean of a text-conditional model needs a condition row (a prompt)")
    total, count = None, 0
    while count < samples:
        n = min(batch, samples - count)
        z = torch.randn(n, G.latent_size, generator=rng)
        rows = cond.expand(n, -1) if cond is not None else (
            one_hot_rows(torch.randint(0, G.num_classes, (n,), generator=rng), G.num_classes) if G.num_classes else None)
        x4 = G.embed(z.to(device), None if rows is None else rows.to(device)).double().sum(0)
        total = x4 if total is None else total + x4
        count += n
    return (total / count).float().unsqueeze(0)


def truncate(x4: torch.Tensor, mean: torch.Tensor, psi: float | torch.Tensor) -> torch.Tensor:
    """The truncation trick: pull each first 4x4 feature map toward the mean (`mean_embedding`) by psi in [0, 1], a
    float or one per row ([N]); psi = 1 leaves it exactly as it was.

    Placed where it can act in ProGAN: G pixel-normalises z, so scaling z itself would do nothing.
    """
    psi = torch.as_tensor(psi, dtype=x4.dtype, device=x4.device)
    return x4 + (1 - psi).view(-1, 1, 1, 1) * (mean - x4)


@torch.inference_mode()
def render(G: Generator, z: torch.Tensor, truncation: float = 1.0, mean: torch.Tensor | None = None,
           batch_size: int = 64, cond: torch.Tensor | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
    """Latents (and, for a conditional model, condition rows `cond` [B, cond_size]) -> uint8 images [B, 3, r, r] at
    the generator's trained level of detail, truncated by `truncation` (see `truncate`). The mean, when not given,
    is each row's own: the centre of what that row asks for (`truncation_means`). `noise` [B, ca_size]: a text
    model's conditioning-augmentation noise, sampled around each row's code as in training (default: the code's
    mean), truncated as z is: scaled by `truncation`."""
    device = next(G.parameters()).device
    level, alpha = level_and_alpha(G.lod, G.resolution)
    if truncation != 1.0 and mean is None:
        mean = truncation_means(G, cond) if cond is not None else mean_embedding(G)
    means = mean.expand(len(z), -1, -1, -1) if mean is not None and len(mean) == 1 else mean
    chunks = z.split(batch_size)
    conds = [None] * len(chunks) if cond is None else cond.split(batch_size)
    centres = [None] * len(chunks) if means is None else means.split(batch_size)
    noises = [None] * len(chunks) if noise is None else noise.split(batch_size)
    out = []
    for chunk, c, centre, n in zip(chunks, conds, centres, noises):
        style = None if c is None else G.style(c.to(device), None if n is None else truncation * n.to(device))
        # z at norm sqrt(L), as the studio shows it: a conditional G normalises z and its condition code jointly,
        # so z's own length would otherwise weigh against the condition, differently for every seed
        x = G.embed(normalize(chunk.to(device)), style=style)
        if truncation != 1.0:
            x = truncate(x, centre.to(x), truncation)
        out.append(to_uint8(G.synthesize(x, level, alpha, style)).cpu())
    return torch.cat(out)


def truncation_means(G: Generator, cond: torch.Tensor, samples: int = 2048) -> torch.Tensor:
    """[B, C, 4, 4]: for each condition row, the mean embedding under that row (computed once per distinct row), so
    that a mixed grid pulls every row toward its own centre, never toward another row's."""
    distinct, which = torch.unique(cond.cpu(), dim=0, return_inverse=True)
    means = torch.cat([mean_embedding(G, samples, cond=row[None]) for row in distinct])
    return means[which]


def grid_image(images: torch.Tensor, nrow: int, min_cell: int = 0) -> Image.Image:
    """uint8 [B, 3, r, r] -> one PIL image, nrow per row; cells upscaled (nearest) to at least `min_cell` px."""
    b, c, h, w = images.shape
    scale = max(1, math.ceil(min_cell / h)) if min_cell else 1
    ncol = math.ceil(b / nrow)
    canvas = torch.zeros(c, ncol * h, nrow * w, dtype=torch.uint8)
    for i, img in enumerate(images):
        r, col = divmod(i, nrow)
        canvas[:, r * h:(r + 1) * h, col * w:(col + 1) * w] = img
    pil = Image.fromarray(canvas.permute(1, 2, 0).numpy())
    return pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST) if scale > 1 else pil


def save_png(image: Image.Image, path: str | Path) -> None:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def save_grid(images: torch.Tensor, path: str | Path, nrow: int, min_cell: int = 0) -> None:
    save_png(grid_image(images, nrow, min_cell), path)


def interpolation_frames(G: Generator, seeds: list[int], frames_per_seed: int, truncation: float = 1.0,
                         loop: bool = True, cond: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 frames [T, 3, r, r] slerping seed to seed (and back to the first when loop)."""
    if len(seeds) < 2:
        raise ValueError(f"interpolation needs at least 2 seeds, got {seeds}")
    if frames_per_seed < 1:
        raise ValueError(f"frames per seed must be >= 1, got {frames_per_seed}")
    keys = latents_from_seeds(seeds + ([seeds[0]] if loop else []), G.latent_size)
    t = (torch.arange(frames_per_seed, dtype=torch.float32) / frames_per_seed).view(-1, 1)
    z = torch.cat([slerp(keys[i].expand(frames_per_seed, -1), keys[i + 1].expand(frames_per_seed, -1), t)
                   for i in range(len(keys) - 1)])
    return render(G, z, truncation, cond=None if cond is None else cond[:1].expand(len(z), -1))


def save_video(frames: torch.Tensor, path: str | Path, fps: int = 24, min_size: int = 256) -> None:
    """Animated GIF (Pillow, no external encoder) or, for .mp4, imageio-ffmpeg when it is installed."""
    path = Path(path)
    scale = max(1, math.ceil(min_size / frames.shape[-1]))
    pil_frames = [Image.fromarray(f.permute(1, 2, 0).numpy()) for f in frames]
    if scale > 1:
        pil_frames = [f.resize((f.width * scale, f.height * scale), Image.NEAREST) for f in pil_frames]
    if path.suffix.lower() == ".gif":
        buf = io.BytesIO()
        pil_frames[0].save(buf, format="GIF", save_all=True, append_images=pil_frames[1:],
                           duration=round(1000 / fps), loop=0)
        atomic_write_bytes(path, buf.getvalue())
    elif path.suffix.lower() == ".mp4":
        try:
            import imageio.v3 as iio
        except ImportError:
            raise ValueError(f"writing {path} needs `pip install imageio imageio-ffmpeg`; or ask for a .gif") from None
        tmp = path.with_name(f".{path.name}.tmp.mp4")
        iio.imwrite(tmp, np.stack([np.asarray(f) for f in pil_frames]), fps=fps, codec="libx264")
        tmp.replace(path)
    else:
        raise ValueError(f"video path must end in .gif or .mp4, got {path}")


def parse_seeds(text: str) -> list[int]:
    """'1,5,7-9' -> [1, 5, 7, 8, 9]."""
    seeds = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = part.split("-", 1)
                seeds.extend(range(int(lo), int(hi) + 1))
            elif part:
                seeds.append(int(part))
        except ValueError:
            raise ValueError(f"bad seed list {text!r}: {part!r} is not an integer or a range like 3-7") from None
    if not seeds:
        raise ValueError(f"bad seed list {text!r}: no seeds")
    if any(s < 0 or s >= 2**63 for s in seeds):
        raise ValueError(f"seeds must be in [0, 2^63), got {text!r}")
    return seeds
