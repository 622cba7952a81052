"""How long SWD and MS-SSIM take on this machine, at the paper's settings.

    python -m benchmarks.metrics_speed                       # 10k images at 32 and 128 px
    python -m benchmarks.metrics_speed --num-images 2000 --resolutions 16,64 --out /tmp/speed.json

SWD: descriptors of two image sets (128 patches per image per level) + 4 x 128 projections per
level, i.e. one generated-vs-real comparison. MS-SSIM: num_images // 2 consecutive pairs.
Images are synthetic but structured (smooth colour fields with a rectangle), uint8, generated with a
fixed seed. Prints a table and writes the numbers as JSON (--out).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from progan.fileio import atomic_write_json
from progan.metrics.msssim import pairwise_msssim
from progan.metrics.swd import descriptors, swd_from_descriptors


def synthetic_images(n: int, res: int, seed: int, chunk: int = 1000) -> torch.Tensor:
    """Smooth random colour fields with one random rectangle each, uint8 [n, 3, res, res]."""
    g = torch.Generator().manual_seed(seed)
    out = []
    coords = torch.arange(res)
    for start in range(0, n, chunk):
        b = min(chunk, n - start)
        img = F.interpolate(torch.rand(b, 3, 5, 5, generator=g) * 255, size=(res, res), mode="bicubic",
                            align_corners=False)
        lo = torch.randint(0, res // 2, (b, 2), generator=g)
        hi = lo + torch.randint(res // 8, res // 2, (b, 2), generator=g)
        inside_y = (coords >= lo[:, :1]) & (coords < hi[:, :1])          # [b, res]
        inside_x = (coords >= lo[:, 1:]) & (coords < hi[:, 1:])
        mask = (inside_y[:, :, None] & inside_x[:, None, :])[:, None]     # [b, 1, res, res]
        colour = torch.rand(b, 3, 1, 1, generator=g) * 255
        out.append(torch.where(mask, colour, img).clamp(0, 255).round().to(torch.uint8))
    return torch.cat(out)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux reports KiB


def bench_swd(a: torch.Tensor, b: torch.Tensor, batch_size: int) -> dict:
    t0 = time.perf_counter()
    with descriptors(a, seed=1, batch_size=batch_size) as da, descriptors(b, seed=2, batch_size=batch_size) as db:
        t1 = time.perf_counter()
        out = swd_from_descriptors(da, db, seed=3)
        t2 = time.perf_counter()
        desc_gb = 2 * da.rows * da.dim * 4 * len(da.resolutions) / 1024**3  # on disk, both sets
    return {"seconds": t2 - t0, "descriptor_seconds": t1 - t0, "distance_seconds": t2 - t1,
            "descriptor_gb": desc_gb, "swd_x1e3": out["value"], "levels": out["levels"]}


def bench_msssim(a: torch.Tensor, batch_size: int) -> dict:
    t0 = time.perf_counter()
    value, pairs = pairwise_msssim(a, batch_size=batch_size)
    return {"seconds": time.perf_counter() - t0, "pairs": pairs, "msssim": value}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-images", type=int, default=10_000)
    p.add_argument("--resolutions", default="32,128", help="comma-separated, powers of two >= 16")
    p.add_argument("--metrics", default="swd,msssim")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "metrics_speed.json")
    args = p.parse_args(argv)
    resolutions = [int(r) for r in args.resolutions.split(",")]
    metrics = [m.strip() for m in args.metrics.split(",")]
    if not set(metrics) <= {"swd", "msssim"}:
        p.error(f"--metrics: choose from swd, msssim (got {args.metrics})")

    machine = {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
               "platform": platform.platform(), "processor": platform.processor() or platform.machine()}
    rows = []
    for res in resolutions:
        a = synthetic_images(args.num_images, res, seed=10)
        b = synthetic_images(args.num_images, res, seed=11)
        for metric in metrics:
            print(f"{metric} on {args.num_images} images at {res}x{res} ...", flush=True)
            r = bench_swd(a, b, args.batch_size) if metric == "swd" else bench_msssim(a, args.batch_size)
            rows.append({"metric": metric, "resolution": res, "images": args.num_images, **r,
                         "peak_rss_gb": peak_rss_gb()})
        del a, b

    print()
    print(f"{'metric':8} {'res':>5} {'images':>7} {'seconds':>9} {'img/s':>8}  notes")
    for r in rows:
        if r["metric"] == "swd":
            note = (f"descriptors {r['descriptor_seconds']:.1f}s + distance {r['distance_seconds']:.1f}s, "
                    f"{r['descriptor_gb']:.2f} GB descriptors on disk (both sets)")
        else:
            note = f"{r['pairs']} pairs"
        print(f"{r['metric']:8} {r['resolution']:>5} {r['images']:>7} {r['seconds']:>9.1f} "
              f"{r['images'] / r['seconds']:>8.0f}  {note}")
    print(f"\n{machine['cpu_count']} CPUs, {machine['torch_threads']} torch threads, torch {machine['torch']}")
    atomic_write_json(args.out, {"machine": machine, "results": rows})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
