"""Peak memory of one SWD comparison (two image sets, the paper's 128 patches and 4 x 128 directions per level),
per image count and resolution, each case in a fresh process (its peak resident set size, ru_maxrss).

    python -m benchmarks.metrics_memory                                  # 500 and 2000 images at 32 and 128 px
    python -m benchmarks.metrics_memory --images 1000 --resolutions 64 --max-mb 64
    git archive 932f7ae progan | tar -x -C /tmp/before                   # the code before streaming ...
    python -m benchmarks.metrics_memory --source /tmp/before             # ... measured the same way

Images are made batch by batch as the metric reads them (synthetic, seeded), never held whole, so what is measured
is the metric's own memory. "baseline" is a process that imports torch and progan and makes one batch: the cost of
the interpreter, not of the metric. Prints a table and writes the rows as JSON (--out).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = r"""
import json, resource, sys, time
# run in the measured tree (its progan/ comes first); benchmarks/ comes from PYTHONPATH unless that tree has one
from progan.metrics import swd as S
from benchmarks.metrics_speed import synthetic_images
images, res, max_mb, batch = (int(x) for x in sys.argv[1:5])

def batches(seed):
    for start in range(0, images, batch):
        yield synthetic_images(min(batch, images - start), res, seed=seed * 100_003 + start)

t0 = time.perf_counter()
value = None
if images:
    a = S.descriptors(batches(1), 1, batch_size=batch)
    b = S.descriptors(batches(2), 2, batch_size=batch)
    if isinstance(a, tuple):           # before streaming: (resolutions, [in-memory descriptors])
        value = S.swd_from_descriptors(a[0], a[1], b[1], 3)["value"]
    else:
        with a, b:
            value = S.swd_from_descriptors(a, b, 3, max_bytes=max_mb * 2**20)["value"]
else:
    synthetic_images(batch, res, seed=0)
print(json.dumps({"swd_py": S.__file__, "seconds": time.perf_counter() - t0, "swd_x1e3": value,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_case(source: Path, images: int, res: int, max_mb: int, batch: int) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parent),
                                                                     os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", CHILD, str(images), str(res), str(max_mb), str(batch)],
                         capture_output=True, text=True, check=False, cwd=source, env=env)
    if out.returncode != 0:
        raise SystemExit(f"case {images} images at {res} px failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", default="500,2000", help="comma-separated image counts per set")
    p.add_argument("--resolutions", default="32,128", help="comma-separated, powers of two >= 16")
    p.add_argument("--max-mb", type=int, default=512, help="max_bytes of the streamed distance, in MiB")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--source", type=Path, default=HERE.parent, help="the tree whose progan/ is measured")
    p.add_argument("--out", type=Path, default=HERE / "results" / "metrics_memory.json")
    args = p.parse_args(argv)
    source = args.source.resolve()
    if not (source / "progan" / "metrics" / "swd.py").is_file():
        p.error(f"--source {source}: no progan/metrics/swd.py there")

    base = run_case(source, 0, 16, args.max_mb, args.batch_size)
    rows = []
    for res in (int(r) for r in args.resolutions.split(",")):
        for n in (int(x) for x in args.images.split(",")):
            print(f"{n} images at {res}x{res} ...", flush=True)
            r = run_case(source, n, res, args.max_mb, args.batch_size)
            levels = len(range(res.bit_length() - 1, 3, -1))  # R, R/2, ..., 16
            held_mb = 2 * n * 128 * 147 * 4 * levels / 2**20   # both sets' descriptors, all levels, if kept whole
            rows.append({"resolution": res, "images": n, "descriptors_mb": held_mb, **r,
                         "above_baseline_mb": r["peak_rss_mb"] - base["peak_rss_mb"]})

    print(f"\nsource {source}, max_bytes {args.max_mb} MiB (streamed code only), baseline process "
          f"{base['peak_rss_mb']:.0f} MB")
    print(f"{'res':>5} {'images':>7} {'descriptors MB':>15} {'peak RSS MB':>12} {'above base':>11} {'seconds':>8} "
          f"{'SWD x1e3':>10}")
    for r in rows:
        print(f"{r['resolution']:>5} {r['images']:>7} {r['descriptors_mb']:>15.0f} {r['peak_rss_mb']:>12.0f} "
              f"{r['above_baseline_mb']:>11.0f} {r['seconds']:>8.1f} {r['swd_x1e3']:>10.4f}")
    print(f"\n{os.cpu_count()} CPUs")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"source": str(source), "max_mb": args.max_mb, "baseline": base, "rows": rows},
                                   indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
