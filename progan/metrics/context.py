"""What a metric is and what it draws on: the Metric record, the evaluation context, and the generated images.

Sits below the metric modules (swd.py, msssim.py, fid.py define their Metric records here-shaped and take an
EvalContext) and below evaluate.py, so nothing imports upward.

Determinism: every random stream (latents, labels, SWD patches and directions, KID subsets) comes from its own
torch.Generator seeded by progan.seeds from `seed`; the global torch RNG is never touched, so evaluating during
training does not change the training run.

Generated images (generate_fakes): all latents (and labels) of an evaluation are drawn up front from the seed and
image i always gets latent i, in the batch [k * batch_size, (k + 1) * batch_size) that holds it. So the images of
indices [start, stop) can be made in another process, and when the shards' bounds are multiples of batch_size
(shard_range gives such bounds) every image is computed in exactly the batch it would be in one process: the
shards, concatenated in order, are the single-process result bit for bit on the same kind of device.

Real images: the same subset of the dataset for every evaluation (a fixed permutation, independent of `seed`), so
real-data statistics can be cached and FID/KID references do not move between snapshots. Set 0 is the reference;
set 1 (the next images of the permutation) is the second real set for SWD's real-vs-real noise floor. When the
dataset has fewer than num_images (or 2 x num_images) images, the permutation repeats. Real sets are read from the
dataset batch by batch each time a metric walks them, never held whole.

Cache (cache_dir): real-data results that do not depend on the generator (Inception mean/covariance for FID,
Inception features for KID, MS-SSIM of reals, SWD's real-vs-real floor) are stored as safetensors / JSON files
named by a hash of (dataset level sha256s, metric, settings, num_images, resolution). Written atomically; an
unreadable cache file is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from progan.data.dataset import to_uint8
from progan.fileio import atomic_save_tensors, atomic_write_json
from progan.seeds import generator as seeded_generator

from .common import MetricInputError, check_uint8_images
from .inception import inception_features, load_inception

CACHE_VERSION = 2  # 2: seeds from progan.seeds (patches, directions, real subset and latents all changed)
REAL_SUBSET_SEED = 0  # fixed on purpose: the real subset must not depend on the evaluation seed


@dataclass(frozen=True)
class Metric:
    """One metric: its name, the function computing it from an EvalContext, and what it needs."""
    name: str
    compute: Callable[[EvalContext], dict]
    min_resolution: int = 1        # smallest image side it can measure
    needs_inception: bool = False  # FID Inception weights must be available


def render_resolution(generator) -> int:
    """The side of the images `generator` renders now: a mid-training model renders below its final resolution."""
    return int(getattr(generator, "output_resolution", None) or generator.resolution)


def shard_range(num_images: int, rank: int, world_size: int, batch_size: int) -> tuple[int, int]:
    """[start, stop) of process `rank`'s share of num_images, on batch boundaries (see generate_fakes)."""
    if not 0 <= rank < world_size:
        raise MetricInputError(f"rank must be in [0, {world_size}), got {rank}")
    batches = -(-num_images // batch_size)
    return (min(num_images, batches * rank // world_size * batch_size),
            min(num_images, batches * (rank + 1) // world_size * batch_size))


@torch.no_grad()
def generate_fakes(generator, num_images: int, seed: int, batch_size: int = 64, device: str | torch.device = "cpu",
                   start: int = 0, stop: int | None = None, conditions: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 [stop - start, 3, R, R] (on the CPU): images [start, stop) of the evaluation's num_images.

    generator: z [B, latent_size] (and cond=[B, C] float rows when it is conditional, i.e. has cfg.cond_size or
    num_classes > 0) -> float images in [-1, 1].
    conditions: the dataset's condition rows [N, C] (one-hot classes or caption vectors): image i is conditioned on
    the row of a randomly drawn dataset image, so the fakes follow the data's own mix of conditions, as the reals
    they are compared with do. Without them a class-conditional generator gets uniformly drawn classes.
    """
    stop = num_images if stop is None else stop
    if not 0 <= start <= stop <= num_images:
        raise MetricInputError(f"need 0 <= start <= stop <= num_images, got start={start}, stop={stop}, "
                               f"num_images={num_images}")
    if batch_size < 1:
        raise MetricInputError(f"batch_size must be >= 1, got {batch_size}")
    res = render_resolution(generator)
    # The whole evaluation's latents and labels, whichever share is asked for: image i gets latent i.
    z = torch.randn(num_images, int(generator.latent_size), generator=seeded_generator(seed, "latents"))
    cond = condition_rows(generator, num_images, seed, conditions)
    out = [torch.empty(0, 3, res, res, dtype=torch.uint8)]
    i = start
    while i < stop:
        end = min(stop, (i // batch_size + 1) * batch_size)  # global batch boundaries, whatever `start` is
        zb = z[i:end].to(device)
        images = generator(zb) if cond is None else generator(zb, cond=cond[i:end].to(device))
        if tuple(images.shape) != (end - i, 3, res, res):
            raise MetricInputError(f"generator returned images of shape {list(images.shape)}, "
                                   f"expected {[end - i, 3, res, res]}")
        out.append(to_uint8(images).cpu())
        i = end
    return torch.cat(out)


def condition_rows(generator, num_images: int, seed: int, conditions: torch.Tensor | None) -> torch.Tensor | None:
    """The evaluation's condition row per image (see generate_fakes), or None for an unconditional generator."""
    cfg = getattr(generator, "cfg", None)
    size = int(getattr(cfg, "cond_size", 0) or getattr(generator, "num_classes", 0) or 0)
    if not size:
        return None
    if conditions is not None:
        if conditions.dim() != 2 or conditions.shape[1] != size:
            raise MetricInputError(f"conditions must be rows [N, {size}] for this generator, got "
                                   f"{list(conditions.shape)}")
        return conditions[torch.randint(len(conditions), (num_images,), generator=seeded_generator(seed, "labels"))]
    if getattr(cfg, "text_size", 0):
        raise MetricInputError("a text-conditional generator needs the dataset's caption vectors (conditions=...)")
    labels = torch.randint(size, (num_images,), generator=seeded_generator(seed, "labels"))
    return torch.nn.functional.one_hot(labels, size).float()


def real_indices(count: int, num_images: int, which: int = 0) -> torch.Tensor:
    """Indices of real set `which` (0, 1): consecutive chunks of a fixed, repeating permutation."""
    gen = seeded_generator(REAL_SUBSET_SEED, "real-subset")
    need = num_images * (which + 1)
    perms = [torch.randperm(count, generator=gen) for _ in range(-(-need // count))]
    return torch.cat(perms)[which * num_images:need]


class RealImages:
    """A real image set, read from the dataset one batch at a time each time it is iterated."""

    def __init__(self, dataset, resolution: int, indices: torch.Tensor, batch_size: int):
        self.dataset, self.resolution, self.indices, self.batch_size = dataset, resolution, indices, batch_size

    def __iter__(self) -> Iterator[torch.Tensor]:
        for i in range(0, len(self.indices), self.batch_size):
            yield self.dataset.images(self.resolution, self.indices[i:i + self.batch_size])


def dataset_fingerprint(dataset) -> str:
    """sha256 over the dataset's level-file checksums (from its manifest), or over manifest.json itself."""
    manifest = getattr(dataset, "manifest", None)
    if isinstance(manifest, dict) and isinstance(manifest.get("sha256"), dict) and manifest["sha256"]:
        text = json.dumps(sorted(manifest["sha256"].items()))
    else:
        path = Path(getattr(dataset, "path", "")) / "manifest.json"
        if not path.is_file():
            raise MetricInputError(
                f"cannot key the metrics cache: dataset {getattr(dataset, 'path', dataset)!r} has no manifest with "
                "sha256 checksums; pass cache_dir=None"
            )
        text = path.read_text(encoding="utf-8")
    return hashlib.sha256(text.encode()).hexdigest()


class EvalContext:
    """What metric functions draw on; everything is computed on first use and kept for this evaluation.

      ctx.fakes()            uint8 [N, 3, R, R] generated images (generate_fakes, or the ones evaluate was given)
      ctx.reals(0 | 1)       a RealImages set of N images: the reference, and a second one for noise floors
      ctx.features("fakes" | "reals")   2048-d Inception features (float64)
      ctx.inception_sha256() the weight file's sha256 (part of cache keys)
      ctx.settings(name, defaults)      defaults overridden by evaluate(options={name: {...}})
      ctx.cached_json / ctx.cached_tensors(kind, settings, compute)   real-data results cached on disk
    """

    def __init__(self, generator, dataset, num_images, seed, batch_size, device, cache_dir, inception_weights,
                 options, fakes=None, conditions=None):
        self.generator = generator
        self.conditions = conditions
        self.dataset = dataset
        self.num_images = num_images
        self.seed = seed
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.inception_weights = inception_weights
        self.options = options or {}
        self.resolution = render_resolution(generator)
        self.generate_seconds = 0.0
        self._fakes = None if fakes is None else self._check_fakes(fakes)
        self._features: dict[str, torch.Tensor] = {}
        self._inception = None
        self._fingerprint = None

    # -- images ------------------------------------------------------------------------------------

    def _check_fakes(self, fakes: torch.Tensor) -> torch.Tensor:
        check_uint8_images(fakes, "fakes")
        want = (self.num_images, 3, self.resolution, self.resolution)
        if tuple(fakes.shape) != want:
            raise MetricInputError(f"fakes: expected shape {list(want)} (num_images images at the generator's "
                                   f"resolution), got {list(fakes.shape)}")
        return fakes.cpu()

    def fakes(self) -> torch.Tensor:
        if self._fakes is None:
            start = time.perf_counter()
            self._fakes = generate_fakes(self.generator, self.num_images, self.seed, self.batch_size, self.device,
                                         conditions=self.conditions)
            self.generate_seconds += time.perf_counter() - start
        return self._fakes

    def reals(self, which: int = 0) -> RealImages:
        return RealImages(self.dataset, self.resolution, real_indices(int(self.dataset.count), self.num_images, which),
                          self.batch_size)

    # -- Inception ---------------------------------------------------------------------------------

    def _network(self):
        if self._inception is None:
            self._inception = load_inception(self.inception_weights, self.device)
        return self._inception

    def inception_sha256(self) -> str:
        return self._network()[1]

    def features(self, which: str) -> torch.Tensor:
        if which not in self._features:
            images = {"fakes": self.fakes, "reals": self.reals}[which]()
            self._features[which] = inception_features(self._network()[0], images, batch_size=self.batch_size,
                                                       device=self.device)
        return self._features[which]

    # -- settings and cache --------------------------------------------------------------------------

    def settings(self, metric: str, defaults: dict) -> dict:
        given = dict(self.options.get(metric, {}))
        unknown = sorted(set(given) - set(defaults))
        if unknown:
            raise MetricInputError(f"unknown {metric} option(s) {unknown}; known: {sorted(defaults)}")
        return {**defaults, **given}

    def _cache_key(self, kind: str, settings: dict) -> dict | None:
        if self.cache_dir is None:
            return None
        if self._fingerprint is None:
            self._fingerprint = dataset_fingerprint(self.dataset)
        return {"version": CACHE_VERSION, "dataset": self._fingerprint, "kind": kind, "settings": settings,
                "num_images": self.num_images, "resolution": self.resolution}

    def _cache_path(self, key: dict, suffix: str) -> Path:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
        return self.cache_dir / f"{key['kind']}-{digest}{suffix}"

    def cached_json(self, kind: str, settings: dict, compute) -> dict:
        key = self._cache_key(kind, settings)
        if key is None:
            return compute()
        path = self._cache_path(key, ".json")
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            if stored.get("key") == key:
                return stored["result"]
        except (OSError, ValueError, AttributeError, KeyError):
            pass  # missing or unreadable: recompute and overwrite
        result = compute()
        atomic_write_json(path, {"key": key, "result": result})
        return result

    def cached_tensors(self, kind: str, settings: dict, compute) -> dict[str, torch.Tensor]:
        key = self._cache_key(kind, settings)
        if key is None:
            return compute()
        path = self._cache_path(key, ".safetensors")
        if path.is_file():
            from safetensors import safe_open
            try:
                with safe_open(str(path), framework="pt") as f:
                    if json.loads((f.metadata() or {}).get("key", "null")) == key:
                        return {name: f.get_tensor(name) for name in f.keys()}
            except Exception:  # noqa: BLE001 - a damaged cache file is recomputed, never fatal
                pass
        result = compute()
        atomic_save_tensors(path, result, metadata={"key": json.dumps(key, sort_keys=True)})
        return result

