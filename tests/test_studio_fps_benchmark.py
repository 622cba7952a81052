"""benchmarks/studio_fps.py's CPU forms: the GPU mode (--paper) at a small size on the CPU, compiled and not, in
both precisions; and the per-pattern browser measurement (--browser) in chromium, briefly."""

import json

import pytest

from benchmarks import studio_fps


def test_the_gpu_mode_runs_on_the_cpu(tmp_path, capsys):
    out = tmp_path / "paper.json"
    assert studio_fps.main(["--paper", "--device", "cpu", "--resolutions", "8", "--batches", "1", "2", "--dtypes",
                            "float32", "bfloat16", "--compile", "none", "reduce-overhead", "--seconds", "0.1",
                            "--threads", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert [(r["batch"], r["dtype"], r["compile"]) for r in rows] == [
        (1, "float32", "none"), (2, "float32", "none"), (1, "bfloat16", "none"), (2, "bfloat16", "none")]  # no CUDA
    for r in rows:                                                                                   # graphs here
        assert r["resolution"] == 8 and r["step_ms"] > 0 and r["jpeg_ms"] > 0 and r["jpeg_kib"] > 0
        assert r["generator_fps"] == pytest.approx(1000 * r["batch"] / r["step_ms"])
        assert r["serial_fps"] <= r["pipelined_fps"]
        assert r["bottleneck"] in ("generator", "copy to host", "JPEG encode")
    assert "8x8: at best" in capsys.readouterr().out and result["model"].startswith("paper widths")


def test_the_gpu_mode_compiles_on_the_cpu(tmp_path):
    out = tmp_path / "compiled.json"
    assert studio_fps.main(["--paper", "--device", "cpu", "--resolutions", "4", "--batches", "2", "--dtypes",
                            "float32", "--compile", "default", "--seconds", "0.1", "--threads", "1", "--out",
                            str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["compile"] == "default" and "error" not in row
    assert row["first_call_s"] * 1000 > 5 * row["step_ms"]  # the first call compiled


def test_per_pattern_frames_rendered_and_displayed_in_the_browser(tmp_path):
    out = tmp_path / "browser.json"
    assert studio_fps.main(["--browser", "--resolutions", "16", "--patterns", "field", "loop+kaleidoscope6",
                            "--seconds", "1.5", "--threads", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["display"] == "crossfade between the last two rendered frames"
    assert [r["pattern"] for r in result["rows"]] == ["field", "loop+kaleidoscope6"]
    for r in result["rows"]:
        assert r["resolution"] == 16 and r["canvas"][0] >= 500
        assert r["rendered_fps"] > 1 and r["displayed_fps"] > 20 and r["refresh_hz"] > 20
        assert r["max_gap_ms"] < 1000  # controls kept arriving; the display never stopped
