"""The metrics `evaluate` knows, by name. Adding a metric = one function here + one line in METRICS.

A metric function takes the evaluation context (progan.metrics.evaluate.EvalContext) and returns a
plain JSON-able dict with at least "value"; evaluate() adds the common fields (metric, images,
dataset, snapshot_kimg, seconds, ...). The context hands out, lazily and once each:
  ctx.fakes()            uint8 [N, 3, R, R] generated images (latents from the evaluation seed)
  ctx.reals(0 | 1)       uint8 [N, 3, R, R] real images: a fixed subset, and a second one for noise floors
  ctx.features("fakes" | "reals")   2048-d Inception features (float64)
  ctx.inception_sha256() the weight file's sha256 (part of cache keys)
  ctx.settings(name, defaults)      defaults overridden by evaluate(options={name: {...}})
  ctx.cached_json / ctx.cached_tensors(kind, settings, compute)   real-data results cached on disk
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch

from .common import derive_seed
from .fid import KID_SUBSET_SIZE, KID_SUBSETS, feature_statistics, frechet_distance, kid_from_features
from .msssim import pairwise_msssim
from .swd import DIR_REPEATS, DIRS_PER_REPEAT, NHOODS_PER_IMAGE, descriptors, swd_from_descriptors

if TYPE_CHECKING:
    from .evaluate import EvalContext


class UnknownMetric(ValueError):
    """A metric name that is not in METRICS."""


def swd_metric(ctx: EvalContext) -> dict:
    """SWD x 1e3 per Laplacian level and averaged; the real-vs-real value beside it as the noise floor."""
    s = ctx.settings("swd", {"nhoods_per_image": NHOODS_PER_IMAGE, "dir_repeats": DIR_REPEATS,
                             "dirs_per_repeat": DIRS_PER_REPEAT})
    desc_kw = dict(nhoods_per_image=s["nhoods_per_image"], batch_size=ctx.batch_size, device=ctx.device)
    dir_kw = dict(dir_repeats=s["dir_repeats"], dirs_per_repeat=s["dirs_per_repeat"])
    # One set of projection directions for both comparisons, so fakes and floor are measured alike.
    dir_seed = derive_seed(ctx.seed, "swd")
    res, real = descriptors(ctx.reals(0), derive_seed(ctx.seed, "swd", "reals"), **desc_kw)

    def floor() -> dict:
        _, real2 = descriptors(ctx.reals(1), derive_seed(ctx.seed, "swd", "reals2"), **desc_kw)
        return swd_from_descriptors(res, real, real2, dir_seed, **dir_kw)

    # Patches and directions depend on the seed, so the seed is part of the floor's cache key.
    floor_result = ctx.cached_json("swd-floor", {**s, "seed": ctx.seed}, floor)
    _, fake = descriptors(ctx.fakes(), derive_seed(ctx.seed, "swd", "fakes"), **desc_kw)
    out = swd_from_descriptors(res, real, fake, dir_seed, **dir_kw)
    return {"value": out["value"], "levels": out["levels"], "real_floor": floor_result["value"],
            "real_floor_levels": floor_result["levels"],
            # With fewer than 2 x num_images real images the two real sets share images: a lower floor.
            "real_floor_disjoint": int(ctx.dataset.count) >= 2 * ctx.num_images, "settings": s}


def msssim_metric(ctx: EvalContext) -> dict:
    """Mean MS-SSIM of consecutive pairs of generated images; the same on reals for reference."""
    value, pairs = pairwise_msssim(ctx.fakes(), batch_size=ctx.batch_size, device=ctx.device)
    reals = ctx.cached_json("msssim-reals", {}, lambda: {"value": pairwise_msssim(
        ctx.reals(0), batch_size=ctx.batch_size, device=ctx.device)[0]})
    return {"value": value, "pairs": pairs, "reals": reals["value"]}


def fid_metric(ctx: EvalContext) -> dict:
    """FID between generated and real images (pytorch-fid's Inception weights)."""
    sha = ctx.inception_sha256()

    def real_stats() -> dict[str, torch.Tensor]:
        mu, sigma = feature_statistics(ctx.features("reals"))
        return {"mu": mu, "sigma": sigma}

    real = ctx.cached_tensors("fid-reals", {"inception_sha256": sha}, real_stats)
    mu, sigma = feature_statistics(ctx.features("fakes"))
    return {"value": frechet_distance(mu, sigma, real["mu"], real["sigma"]), "inception_sha256": sha}


def kid_metric(ctx: EvalContext) -> dict:
    """KID (unbiased MMD^2, cubic polynomial kernel) averaged over random subsets; "std" over subsets."""
    s = ctx.settings("kid", {"num_subsets": KID_SUBSETS, "subset_size": KID_SUBSET_SIZE})
    sha = ctx.inception_sha256()
    real = ctx.cached_tensors("kid-reals", {"inception_sha256": sha},
                              lambda: {"features": ctx.features("reals").float()})
    gen = torch.Generator().manual_seed(derive_seed(ctx.seed, "kid"))
    out = kid_from_features(ctx.features("fakes"), real["features"], num_subsets=s["num_subsets"],
                            subset_size=s["subset_size"], generator=gen)
    return {**out, "inception_sha256": sha}


METRICS: dict[str, Callable[[EvalContext], dict]] = {
    "swd": swd_metric,
    "msssim": msssim_metric,
    "fid": fid_metric,
    "kid": kid_metric,
}

# Metrics that look at image structure need a pyramid / 5 scales: at least 16x16 images.
MIN_RESOLUTION = {"swd": 16, "msssim": 16, "fid": 1, "kid": 1}
NEEDS_INCEPTION = ("fid", "kid")


def get_metric(name: str) -> Callable[[EvalContext], dict]:
    try:
        return METRICS[name]
    except KeyError:
        raise UnknownMetric(f"unknown metric {name!r}; available: {', '.join(METRICS)}") from None


def parse_metric_list(text: str) -> list[str]:
    """'swd, fid' -> ['swd', 'fid'] (checked against METRICS)."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if not names:
        raise UnknownMetric(f"no metrics given in {text!r}; available: {', '.join(METRICS)}")
    for name in names:
        get_metric(name)
    return names
