"""Generator speed per resolution: latency of one image and throughput of a big batch, optimised against plain.

    python -m benchmarks.generate_speed                          # the paper's G up to 32x32 and the demo model
    python -m benchmarks.generate_speed --models paper:64 --repeats 5 --out /tmp/gen.json

Models are preset:resolution pairs with freshly initialised weights (speed does not depend on training). At every
level of detail up to the model's resolution, G(z) runs under inference_mode in two modes, interleaved call by call:
reference (every layer in its textbook form, `reference.to_reference`) and optimised (the library). Batch 1: the median latency
of --repeats calls, as frames per second; big batch (--big-batch, default 64): images per second.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from benchmarks.reference import to_reference
from benchmarks.train_speed import RESULTS, command_line, machine_info
from progan.fileio import atomic_write_json
from progan.networks import Generator
from progan.presets import preset


@torch.inference_mode()
def seconds_per_call(nets: dict, z: torch.Tensor, lod: float, repeats: int) -> dict:
    for G in nets.values():  # warm-up
        G(z, lod)
    times = {mode: [] for mode in nets}
    for _ in range(repeats):
        for mode, G in nets.items():
            t0 = time.perf_counter()
            G(z, lod)
            times[mode].append(time.perf_counter() - t0)
    return {mode: statistics.median(t) for mode, t in times.items()}


def bench_model(name: str, resolution: int, repeats: int, big_batch: int) -> list[dict]:
    cfg = preset(name, resolution).model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        G = Generator(cfg).eval().requires_grad_(False)
    nets = {"reference": to_reference(copy.deepcopy(G)), "optimised": G}
    z_gen = torch.Generator().manual_seed(1)
    rows = []
    max_lod = int(math.log2(resolution)) - 2
    for level in range(max_lod + 1):
        res, lod = 4 * 2**level, float(max_lod - level)
        one = seconds_per_call(nets, torch.randn(1, cfg.latent_size, generator=z_gen), lod, repeats)
        many = seconds_per_call(nets, torch.randn(big_batch, cfg.latent_size, generator=z_gen), lod,
                                max(3, repeats // 5))
        row = {"model": name, "model_resolution": resolution, "resolution": res, "big_batch": big_batch,
               "batch1_ms": {m: t * 1e3 for m, t in one.items()},
               "batch1_fps": {m: 1 / t for m, t in one.items()},
               "big_batch_images_per_sec": {m: big_batch / t for m, t in many.items()}}
        rows.append(row)
        print(f"  {name}:{resolution} at {res}x{res}: batch 1 {row['batch1_fps']['optimised']:.1f} frames/s, "
              f"batch {big_batch} {row['big_batch_images_per_sec']['optimised']:.1f} images/s", flush=True)
    return rows


def print_table(rows: list[dict]) -> None:
    b = rows[0]["big_batch"]
    print(f"\n{'model':>10} {'res':>4} | {'batch 1 ms ref':>14} {'opt':>7} {'opt fps':>8} {'speedup':>7} | "
          f"{f'batch {b} img/s ref':>18} {'opt':>7} {'speedup':>7}")
    for r in rows:
        ms, bb = r["batch1_ms"], r["big_batch_images_per_sec"]
        print(f"{r['model'] + ':' + str(r['model_resolution']):>10} {r['resolution']:>4} | "
              f"{ms['reference']:>14.2f} {ms['optimised']:>7.2f} {r['batch1_fps']['optimised']:>8.1f} "
              f"{ms['reference'] / ms['optimised']:>6.2f}x | {bb['reference']:>18.1f} {bb['optimised']:>7.1f} "
              f"{bb['optimised'] / bb['reference']:>6.2f}x")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="paper:32,demo:32", help="comma-separated preset:resolution")
    p.add_argument("--repeats", type=int, default=20, help="batch-1 calls per mode and resolution (default 20)")
    p.add_argument("--big-batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--out", type=Path, default=RESULTS / "generate_speed.json")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    models = []
    for item in args.models.split(","):
        name, _, res = item.partition(":")
        if not res.isdigit():
            p.error(f"--models: expected preset:resolution, got {item!r}")
        models.append((name, int(res)))
    machine = machine_info()
    print(f"{machine['cpu']}, {machine['torch_threads']} threads, torch {machine['torch']}, OMP_WAIT_POLICY "
          f"{machine['omp_wait_policy']}, load average {machine['loadavg_at_start'][0]:.2f}", flush=True)
    rows = [row for name, res in models for row in bench_model(name, res, args.repeats, args.big_batch)]
    print_table(rows)
    atomic_write_json(args.out, {"command": command_line(), "machine": machine,
                                 "loadavg_at_end": os.getloadavg(), "rows": rows})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
