"""evaluate(): run registered metrics on a generator against a prepared dataset; format_table() for printing.

How images, seeds and the real-data cache work: see progan.metrics.context.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from .common import MetricInputError
from .context import EvalContext
from .inception import resolve_weights_path
from .registry import METRICS, UnknownMetric, get_metric


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
    fakes: torch.Tensor | None = None,
    conditions: torch.Tensor | None = None,
) -> list[dict]:
    """Evaluate `generator` against `dataset` with the named metrics -> one plain JSON dict per metric.

    generator: callable z [B, latent_size] -> float images [B, 3, R, R] in [-1, 1], with attributes
      latent_size and resolution (output_resolution, when present, wins: a mid-training model renders
      below its final resolution); a conditional one gets cond=rows too (see generate_fakes).
    dataset: a PreparedDataset (path, count, manifest, images(res, indices)).
    num_images: generated images (and real images) per metric; MS-SSIM uses num_images // 2 pairs.
    options: per-metric overrides, e.g. {"swd": {"dirs_per_repeat": 32}, "kid": {"subset_size": 100}}.
    inception_weights: the FID Inception weight file (else $PROGAN_INCEPTION_WEIGHTS); FID/KID only.
    fakes: the generated images, made beforehand (e.g. generate_fakes sharded over processes and gathered):
      uint8 [num_images, 3, R, R], exactly generate_fakes(generator, num_images, seed, ...). Default: made here.
    conditions: a conditional generator's dataset condition rows [N, C] (see generate_fakes).
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

    ctx = EvalContext(generator, dataset, num_images, seed, batch_size, device, cache_dir, inception_weights, options,
                      fakes=fakes, conditions=conditions)
    for name in names:
        need = METRICS[name].min_resolution
        if ctx.resolution < need:
            raise MetricInputError(
                f"{name} needs images of at least {need}x{need}; this generator renders {ctx.resolution}x{ctx.resolution}"
            )
    if any(METRICS[name].needs_inception for name in names):
        resolve_weights_path(inception_weights)  # fail now, before minutes of generating images

    results = []
    for name in names:
        start, gen_before = time.perf_counter(), ctx.generate_seconds
        out = METRICS[name].compute(ctx)
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
