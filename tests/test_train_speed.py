"""benchmarks.train_speed --device: the training table (images/s and peak memory per resolution and precision), run
on the CPU at a tiny size; on a GPU the same code runs with --device cuda."""

import importlib
import json

import pytest

train_speed = importlib.import_module("benchmarks.train_speed")


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_training_table_runs_on_the_cpu(tmp_path, capsys):
    out = tmp_path / "table.json"
    assert train_speed.main(["--device", "cpu", "--preset", "tiny", "--resolution", "8", "--steps", "2",
                             "--warmup", "1", "--modes", "fp32,bf16", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert [(r["resolution"], r["mode"]) for r in rows] == [(4, "fp32"), (4, "bf16"), (8, "fp32"), (8, "bf16")]
    for r in rows:
        assert r["images_per_sec"] > 0 and len(r["seconds"]) == 2 and r["batch"] == 8
        assert r["peak_bytes"] > 0 and r["first_step_seconds"] > 0 and not r["compiled"]
    assert {r["precision"] for r in rows} == {"fp32", "bf16"}
    # a bigger image holds more activations at its peak
    assert rows[2]["peak_bytes"] > rows[0]["peak_bytes"]
    assert all(days > 0 for days in result["schedule_days"].values())
    printed = capsys.readouterr().out
    assert "| resolution | batch | fp32 img/s | fp32 peak MiB | bf16 img/s | bf16 peak MiB |" in printed
    assert "| 8x8 | 8 |" in printed and "tiny preset's whole schedule" in printed


def test_compiled_mode_runs(tmp_path):
    """G under torch.compile, D eager (the penalty's double backward cannot be compiled): one resolution."""
    out = tmp_path / "compiled.json"
    assert train_speed.main(["--device", "cpu", "--preset", "tiny", "--resolution", "4", "--steps", "1",
                             "--warmup", "1", "--modes", "compiled", "--out", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["compiled"] and row["precision"] == "bf16" and row["images_per_sec"] > 0


def test_modes_and_schedule_days():
    assert train_speed.parse_mode("fp32") == ("fp32", False)
    assert train_speed.parse_mode("compiled") == ("bf16", True)
    assert train_speed.parse_mode("fp32-compiled") == ("fp32", True)
    with pytest.raises(ValueError):
        train_speed.parse_mode("fp16")
    cfg = train_speed.preset("tiny", 8)  # 0.064 kimg at 4x4, then 0.064 fading 8x8 in and 0.192 stable: 0.32 kimg
    rows = [{"resolution": 4, "mode": "fp32", "images_per_sec": 64.0},
            {"resolution": 8, "mode": "fp32", "images_per_sec": 256.0}]
    assert train_speed.schedule_days(cfg, rows, "fp32") == pytest.approx((64 / 64 + 256 / 256) / 86400)
    assert train_speed.schedule_days(cfg, rows[:1], "fp32") is None  # 8x8 not measured


def test_cuda_without_a_gpu_says_so(monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="no CUDA GPU"):
        train_speed.main(["--device", "cuda", "--preset", "tiny", "--resolution", "4"])
