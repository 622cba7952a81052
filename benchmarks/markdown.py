"""The speed tables of benchmarks/README.md and docs/speed.md, from the JSON results of train_speed and
generate_speed.

    python -m benchmarks.markdown benchmarks/results/train_speed-paper.json benchmarks/results/generate_speed.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

CATEGORIES = ("convolution", "matmul", "optimizer", "ema", "other ops", "outside ops")


def num(v: float) -> str:
    """Three significant digits, never in exponent notation."""
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"


def train_tables(result: dict) -> str:
    lines = [f"`{result['command']}`", "",
             "| res | batch | reference img/s | optimised img/s | speedup | ceiling | GFLOP/img ref | GFLOP/img opt "
             "| GFLOP/s ref | GFLOP/s opt | ref / matmul | opt / matmul |",
             "| --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: |"]
    for r in result["rows"]:
        ref, opt = r["modes"]["reference"], r["modes"]["optimised"]
        lines.append(f"| {r['resolution']} | {r['batch']} | {num(ref['images_per_sec'])} "
                     f"| {num(opt['images_per_sec'])} "
                     f"| {r['speedup']:.2f}x | {r['speedup_ceiling']:.2f}x | {num(ref['gflop_per_image'])} "
                     f"| {num(opt['gflop_per_image'])} | {ref['gflops']:.0f} | {opt['gflops']:.0f} "
                     f"| {ref['fraction_of_matmul']:.0%} | {opt['fraction_of_matmul']:.0%} |")
    lines += ["", f"Machine fp32 sgemm (the run's best): {result['rows'][0]['matmul_gflops']:.0f} GFLOP/s. "
              "Where the time goes, ms of one profiled step:", "",
              "| res | mode | " + " | ".join(CATEGORIES) + " | conv GFLOP/s | page faults / step |",
              "| --: | --- |" + " --: |" * (len(CATEGORIES) + 2)]
    for r in result["rows"]:
        for mode in ("reference", "optimised"):
            m = r["modes"][mode]
            lines.append(f"| {r['resolution']} | {mode} | "
                         + " | ".join(f"{m['profile_seconds'][c] * 1e3:.0f}" for c in CATEGORIES)
                         + f" | {m['gflops_in']['convolution']:.0f} | {statistics.median(m['minor_faults']):.0f} |")
    return "\n".join(lines)


def generate_table(result: dict) -> str:
    lines = [f"`{result['command']}`", "",
             "| model | res | batch 1 ms ref | batch 1 ms opt | frames/s | batch 64 img/s ref | batch 64 img/s opt |",
             "| --- | --: | --: | --: | --: | --: | --: |"]
    for r in result["rows"]:
        ms, bb = r["batch1_ms"], r["big_batch_images_per_sec"]
        lines.append(f"| {r['model']} | {r['resolution']} | {num(ms['reference'])} | {num(ms['optimised'])} "
                     f"| {r['batch1_fps']['optimised']:.0f} | {num(bb['reference'])} | {num(bb['optimised'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", type=Path, help="JSON written by train_speed or generate_speed")
    for path in p.parse_args(argv).results:
        result = json.loads(path.read_text())
        print((train_tables if "step_multipliers" in result else generate_table)(result), end="\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
