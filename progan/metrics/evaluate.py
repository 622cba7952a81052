"""evaluate(): run registered metrics on a generator against a prepared dataset; format_table() for printing.

Determinism: every random stream (latents, labels, SWD patches and directions, KID subsets) comes
from its own torch.Generator seeded from `seed`; the global torch RNG is never touched, so
evaluating during training does not change the training run.

Real images: the same subset of the dataset for every evaluation (a fixed permutation, independent
of `seed`), so real-data statistics can be cached and FID/KID references do not move between
snapshots. Set 0 is the reference; set 1 (the next images of the permutation) is the second real
set for SWD's real-vs-real noise floor. When the dataset has fewer than num_images (or 2 x num_images)
images, the permutation repeats and real images appear more than once.

Cache (cache_dir): real-data results that do not depend on the generator (Inception mean/covariance
for FID, Inception features for KID, MS-SSIM of reals, SWD's real-vs-real floor) are stored as
safetensors / JSON files named by a hash of (dataset level sha256s, metric, settings, num_images,
resolution). Written atomically; an unreadable cache file is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import torch

from progan.data.dataset import to_uint8
from progan.fileio import atomic_save_tensors, atomic_write_json

from .common import MetricInputError, derive_seed
from .inception import inception_features, load_inception, resolve_weights_path
from .registry import METRICS, MIN_RESOLUTION, NEEDS_INCEPTION, UnknownMetric, get_metric

CACHE_VERSION = 1
REAL_SUBSET_SEED = 0  # fixed on purpose: the real subset must not depend on the evaluation seed


def real_indices(count: int, num_images: int, which: int = 0) -> torch.Tensor:
    """Indices of real set `which` (0, 1): consecutive chunks of a fixed, repeating permutation."""
    gen = torch.Generator().manual_seed(derive_seed(REAL_SUBSET_SEED, "real-subset"))
    need = num_images * (which + 1)
    perms = [torch.randperm(count, generator=gen) for _ in range(-(-need // count))]
    return torch.cat(perms)[which * num_images:need]


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
    """What metric functions draw on; everything is computed on first use and kept for this evaluation."""

    def __init__(self, generator, dataset, num_images, seed, batch_size, device, cache_dir, inception_weights, options):
        self.generator = generator
        self.dataset = dataset
        self.num_images = num_images
        self.seed = seed
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.inception_weights = inception_weights
        self.options = options or {}
        # A generator mid-training renders at its current level of detail, below its final resolution.
        self.resolution = int(getattr(generator, "output_resolution", None) or generator.resolution)
        self.generate_seconds = 0.0
        self._fakes = None
        self._reals: dict[int, torch.Tensor] = {}
        self._features: dict[str, torch.Tensor] = {}
        self._inception = None
        self._fingerprint = None

    # -- images ------------------------------------------------------------------------------------

    @torch.no_grad()
    def fakes(self) -> torch.Tensor:
        if self._fakes is None:
            start = time.perf_counter()
            g = self.generator
            gen = torch.Generator().manual_seed(derive_seed(self.seed, "latents"))
            # All latents up front: the images do not depend on the batch size.
            z = torch.randn(self.num_images, int(g.latent_size), generator=gen)
            num_classes = int(getattr(g, "num_classes", 0) or 0)
            labels = None
            if num_classes:
                label_gen = torch.Generator().manual_seed(derive_seed(self.seed, "labels"))
                labels = torch.randint(num_classes, (self.num_images,), generator=label_gen)
            out = []
            for i in range(0, self.num_images, self.batch_size):
                zb = z[i:i + self.batch_size].to(self.device)
                if labels is None:
                    images = g(zb)
                else:
                    images = g(zb, labels=labels[i:i + self.batch_size].to(self.device))
                want = (zb.shape[0], 3, self.resolution, self.resolution)
                if tuple(images.shape) != want:
                    raise MetricInputError(f"generator returned images of shape {list(images.shape)}, expected {list(want)}")
                out.append(to_uint8(images).cpu())
            self._fakes = torch.cat(out)
            self.generate_seconds += time.perf_counter() - start
        return self._fakes

    def reals(self, which: int = 0) -> torch.Tensor:
        if which not in self._reals:
            idx = real_indices(int(self.dataset.count), self.num_images, which)
            self._reals[which] = torch.cat([
                self.dataset.images(self.resolution, idx[i:i + self.batch_size])
                for i in range(0, self.num_images, self.batch_size)
            ])
        return self._reals[which]

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


def evaluate(
    generator,
    dataset,
    metrics: list[str],
    num_images: int,
    seed: int,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    snapshot_kimg: float | None = None,
    cache_dir: str | os.PathLike | None = None,
    *,
    inception_weights: str | os.PathLike | None = None,
    options: dict[str, dict] | None = None,
) -> list[dict]:
    """Evaluate `generator` against `dataset` with the named metrics -> one plain JSON dict per metric.

    generator: callable z [B, latent_size] -> float images [B, 3, R, R] in [-1, 1], with attributes
      latent_size and resolution (output_resolution, when present, wins: a mid-training model renders
      below its final resolution); num_classes > 0 makes it get random labels=... too.
    dataset: a PreparedDataset (path, count, manifest, images(res, indices)).
    num_images: generated images (and real images) per metric; MS-SSIM uses num_images // 2 pairs.
    options: per-metric overrides, e.g. {"swd": {"dirs_per_repeat": 32}, "kid": {"subset_size": 100}}.
    inception_weights: the FID Inception weight file (else $PROGAN_INCEPTION_WEIGHTS); FID/KID only.
    """
    if isinstance(metrics, str):
        raise MetricInputError(f"metrics must be a list of names, got the string {metrics!r} (use parse_metric_list)")
    names = list(dict.fromkeys(m.strip().lower() for m in metrics))
    for name in names:
        get_metric(name)
    if not names:
        raise MetricInputError(f"no metrics requested; available: {', '.join(METRICS)}")
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 2:
        raise MetricInputError(f"num_images must be an integer >= 2, got {num_images!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise MetricInputError(f"seed must be an integer, got {seed!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise MetricInputError(f"batch_size must be a positive integer, got {batch_size!r}")
    for attr in ("latent_size", "resolution"):
        if not hasattr(generator, attr):
            raise MetricInputError(f"generator has no attribute {attr!r} (expected the progan Generator or a look-alike)")
    unknown_opts = sorted(set(options or {}) - set(METRICS))
    if unknown_opts:
        raise UnknownMetric(f"options given for unknown metric(s) {unknown_opts}; available: {', '.join(METRICS)}")

    ctx = EvalContext(generator, dataset, num_images, seed, batch_size, device, cache_dir, inception_weights, options)
    for name in names:
        if ctx.resolution < MIN_RESOLUTION[name]:
            raise MetricInputError(
                f"{name} needs images of at least {MIN_RESOLUTION[name]}x{MIN_RESOLUTION[name]}; "
                f"this generator renders {ctx.resolution}x{ctx.resolution}"
            )
    if any(name in NEEDS_INCEPTION for name in names):
        resolve_weights_path(inception_weights)  # fail now, before minutes of generating images

    results = []
    for name in names:
        start, gen_before = time.perf_counter(), ctx.generate_seconds
        out = METRICS[name](ctx)
        seconds = time.perf_counter() - start - (ctx.generate_seconds - gen_before)
        results.append({
            "metric": name,
            "value": out.pop("value"),
            "images": num_images,
            "dataset": str(getattr(dataset, "path", dataset)),
            "dataset_images": int(dataset.count),
            "snapshot_kimg": snapshot_kimg,
            "resolution": ctx.resolution,
            "seed": seed,
            "seconds": round(seconds, 3),
            **out,
        })
    for r in results:
        r["generate_seconds"] = round(ctx.generate_seconds, 3)
    return results


def append_results(path: str | os.PathLike, results: list[dict]) -> None:
    """Append results to a JSONL file (e.g. run/metrics.jsonl), one line each, fsynced."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        for r in results:
            f.write(json.dumps(r) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _reference(r: dict) -> str:
    if "real_floor" in r:
        return f"floor {_fmt(r['real_floor'])}"
    if r.get("metric") == "msssim" and "reals" in r:
        return f"reals {_fmt(r['reals'])}"
    if "std" in r:
        return f"std {_fmt(r['std'], 5)}"
    return ""


def _details(r: dict) -> str:
    if isinstance(r.get("levels"), dict):
        return " ".join(f"{res}px:{_fmt(v, 2)}" for res, v in r["levels"].items())
    if "subsets" in r:
        return f"{r['subsets']} subsets of {r.get('subset_size')}"
    if "pairs" in r:
        return f"{r['pairs']} pairs"
    return ""


def format_table(results: list[dict]) -> str:
    """Evaluation results as an aligned text table (what `progan eval` prints)."""
    header = ["metric", "value", "reference", "images", "kimg", "seconds", "details"]
    rows = [[
        str(r.get("metric", "?")),
        _fmt(r.get("value"), 6 if r.get("metric") == "kid" else 4),
        _reference(r),
        _fmt(r.get("images")),
        _fmt(r.get("snapshot_kimg"), 1),
        _fmt(r.get("seconds"), 1),
        _details(r),
    ] for r in results]
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
