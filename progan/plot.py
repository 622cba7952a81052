"""plot_run(): a PNG of a run's training curves and metrics against kimg, resolution phases shaded.

Reads run/stats.jsonl (one JSON object per tick: kimg, resolution, lod, alpha, loss_d, loss_g,
images_per_sec, ...; any field may be missing) and, if present, run/metrics.jsonl (evaluate()'s
dicts with snapshot_kimg). Needs matplotlib (the Agg backend: no display required).
"""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path

from progan.fileio import atomic_write_bytes


class PlotError(ValueError):
    """A run folder whose logs cannot be plotted."""


def read_jsonl(path: Path, what: str) -> list[dict]:
    """Objects from a JSONL file. A malformed *last* line is skipped (the run may be writing it right now);
    a malformed line anywhere else is an error naming the file and line."""
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            if number == len(lines):
                break
            raise PlotError(f"{path}:{number}: {what} line is not a JSON object ({e})") from None
        rows.append(row)
    return rows


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _series(rows: list[dict], key: str, x_key: str = "kimg") -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for row in rows:
        x, y = _number(row.get(x_key)), _number(row.get(key))
        if x is not None and y is not None:
            xs.append(x)
            ys.append(y)
    return xs, ys


def resolution_spans(stats: list[dict]) -> list[tuple[float, float, int]]:
    """[(kimg_start, kimg_end, resolution)] for runs of consecutive ticks at the same training resolution."""
    spans: list[list] = []
    prev_kimg = 0.0
    for row in stats:
        kimg, res = _number(row.get("kimg")), _number(row.get("resolution"))
        if kimg is None or res is None:
            continue
        if spans and spans[-1][2] == int(res):
            spans[-1][1] = kimg
        else:
            # A tick's stats cover the images since the previous tick, so a new phase starts there.
            spans.append([prev_kimg, kimg, int(res)])
        prev_kimg = kimg
    return [tuple(s) for s in spans]


def plot_run(run_dir: str | os.PathLike, out_png: str | os.PathLike | None = None) -> Path:
    """Draw losses, images/s and every metric against kimg to a PNG (default run_dir/progress.png)."""
    run_dir = Path(run_dir)
    stats_path = run_dir / "stats.jsonl"
    if not stats_path.is_file():
        raise FileNotFoundError(f"{stats_path} not found: {run_dir} is not a progan run folder (or has not logged a tick yet)")
    stats = read_jsonl(stats_path, "stats")
    if not stats:
        raise PlotError(f"{stats_path} has no stats lines yet")
    metrics_path = run_dir / "metrics.jsonl"
    metrics = read_jsonl(metrics_path, "metrics") if metrics_path.is_file() else []
    out_png = Path(out_png) if out_png is not None else run_dir / "progress.png"

    try:
        # The Agg canvas attached to a bare Figure: no pyplot, no global backend switch, no display needed.
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotError("plotting needs matplotlib, which is not installed: pip install matplotlib") from None

    metric_names = sorted({m["metric"] for m in metrics if isinstance(m.get("metric"), str)})
    panels = ["losses", "speed"] + metric_names
    fig = Figure(figsize=(10, 2.6 * len(panels)), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    spans = resolution_spans(stats)

    for ax in axes:
        for i, (start, end, res) in enumerate(spans):
            ax.axvspan(start, end, color="tab:blue" if i % 2 else "tab:orange", alpha=0.08, lw=0)
        ax.grid(True, alpha=0.3)
    for start, end, res in spans:
        axes[0].text((start + end) / 2, 1.0, f"{res}px", transform=axes[0].get_xaxis_transform(),
                     ha="center", va="bottom", fontsize=8)

    ax = axes[0]
    for key, colour in (("loss_d", "tab:red"), ("loss_g", "tab:green")):
        xs, ys = _series(stats, key)
        if xs:
            ax.plot(xs, ys, color=colour, lw=1, label=key)
    ax.set_ylabel("loss")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right", fontsize=8)

    ax = axes[1]
    xs, ys = _series(stats, "images_per_sec")
    if xs:
        ax.plot(xs, ys, color="tab:purple", lw=1)
    ax.set_ylabel("images / s")

    for ax, name in zip(axes[2:], metric_names):
        rows = sorted((m for m in metrics if m.get("metric") == name and _number(m.get("snapshot_kimg")) is not None),
                      key=lambda m: m["snapshot_kimg"])
        xs, ys = _series(rows, "value", x_key="snapshot_kimg")
        ax.plot(xs, ys, marker="o", ms=3, lw=1, color="black", label=name)
        # The reference each metric carries: SWD's real-vs-real floor, MS-SSIM of reals.
        ref_key, ref_label = {"swd": ("real_floor", "real vs real (noise floor)"),
                              "msssim": ("reals", "real pairs")}.get(name, (None, None))
        if ref_key:
            rx, ry = _series(rows, ref_key, x_key="snapshot_kimg")
            if rx:
                ax.plot(rx, ry, ls="--", lw=1, color="gray", label=ref_label)
        ax.set_ylabel(name)
        ax.legend(loc="upper right", fontsize=8)
    axes[-1].set_xlabel("kimg")
    fig.suptitle(run_dir.name)

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write_bytes(out_png, buf.getvalue())
    return out_png
