"""plot_run on a synthetic run folder: a valid PNG, tolerant of missing fields, clear errors."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from progan.plot import PlotError, plot_run, resolution_spans


def write_run(run, stats, metrics=None):
    run.mkdir(parents=True, exist_ok=True)
    (run / "stats.jsonl").write_text("".join(json.dumps(s) + "\n" for s in stats))
    if metrics is not None:
        (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))


def synthetic_stats():
    stats = []
    for i in range(1, 31):
        kimg = i * 10.0
        res = 4 if kimg <= 100 else 8 if kimg <= 200 else 16
        stats.append({"kimg": kimg, "resolution": res, "lod": 2.0, "alpha": 1.0, "loss_d": -1.0 / i,
                      "loss_g": 0.5 + 0.01 * i, "images_per_sec": 100.0 + i, "seconds": 5.0 * i})
    del stats[3]["loss_g"], stats[4]["images_per_sec"], stats[5]["resolution"]  # fields may be missing
    return stats


def test_plot_writes_a_valid_png(tmp_path):
    metrics = [{"metric": "swd", "value": 50.0 - k / 10, "snapshot_kimg": k, "real_floor": 3.0} for k in (100, 200, 300)]
    metrics += [{"metric": "msssim", "value": 0.3, "snapshot_kimg": 300.0, "reals": 0.25},
                {"metric": "fid", "value": 80.0, "snapshot_kimg": None}]  # ad-hoc eval without a kimg: skipped
    write_run(tmp_path / "run", synthetic_stats(), metrics)
    out = plot_run(tmp_path / "run", tmp_path / "out" / "plot.png")
    assert out == tmp_path / "out" / "plot.png"
    with Image.open(out) as img:
        img.verify()
    with Image.open(out) as img:
        assert img.format == "PNG" and img.width >= 800 and img.height > img.width  # 5 stacked panels
    assert not list((tmp_path / "out").glob(".*tmp"))  # written atomically, no temp file left


def test_plot_without_metrics_and_default_name(tmp_path):
    stats = synthetic_stats()
    stats.append("not json")  # a half-written last line while the run is writing: ignored
    run = tmp_path / "run"
    run.mkdir()
    (run / "stats.jsonl").write_text("".join((json.dumps(s) if isinstance(s, dict) else s) + "\n" for s in stats)[:-1])
    out = plot_run(run)
    assert out == run / "progress.png"
    with Image.open(out) as img:
        assert img.format == "PNG"


def test_resolution_spans():
    spans = resolution_spans(synthetic_stats())
    assert [s[2] for s in spans] == [4, 8, 16]
    assert spans[0][0] == 0.0 and spans[0][1] == 100.0
    assert spans[1][0] == 100.0 and spans[1][1] == 200.0
    assert spans[2][1] == 300.0


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="stats.jsonl"):
        plot_run(tmp_path / "nothing-here", tmp_path / "x.png")
    run = tmp_path / "run"
    run.mkdir()
    (run / "stats.jsonl").write_text('{"kimg": 1}\n[broken\n{"kimg": 2}\n')
    with pytest.raises(PlotError, match=r"stats.jsonl:2"):
        plot_run(run)
    (run / "stats.jsonl").write_text("")
    with pytest.raises(PlotError, match="no stats"):
        plot_run(run)
