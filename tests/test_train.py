import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from progan.cli import main
from progan.presets import preset
from progan.train import checkpoint as ckpt
from progan.train import loop
from progan.train.loop import TrainingError, ema_update, train


def tiny_config(data, **changes):
    cfg = preset("tiny", 8)
    cfg.data = data
    for k, v in changes.items():
        setattr(cfg, k, v)
    return cfg


def weights(state):
    return {f"{n}.{k}": v.clone() for n, m in state.nets.items() for k, v in m.state_dict().items()}


def assert_identical(a: dict, b: dict):
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"differ: {different[:5]}"


def test_ema_update_is_lerp_toward_G():
    G, E = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)
    before = [p.clone() for p in E.parameters()]
    ema_update(E, G, 0.9)
    for e, b, g in zip(E.parameters(), before, G.parameters()):
        torch.testing.assert_close(e, 0.9 * b + 0.1 * g)


def test_same_seed_same_numbers_other_seed_other_numbers(tiny_dataset, tmp_path):
    a = weights(train(tiny_config(tiny_dataset), tmp_path / "a", progress=False))
    b = weights(train(tiny_config(tiny_dataset), tmp_path / "b", progress=False))
    c = weights(train(tiny_config(tiny_dataset, seed=1), tmp_path / "c", progress=False))
    assert_identical(a, b)
    assert not torch.equal(a["G.to_rgb.1.weight"], c["G.to_rgb.1.weight"])
    # training actually moved G, and G_ema is its running average (closer to init than G)
    init = weights(loop.build_state(tiny_config(tiny_dataset), torch.device("cpu")))
    moved = (a["G.to_rgb.1.weight"] - init["G.to_rgb.1.weight"]).abs().mean()
    ema_moved = (a["G_ema.to_rgb.1.weight"] - init["G_ema.to_rgb.1.weight"]).abs().mean()
    assert moved > 0 and 0 < ema_moved < moved


def test_resume_continues_bit_identically(tiny_dataset, tmp_path):
    full = weights(train(tiny_config(tiny_dataset), tmp_path / "full", progress=False))
    half = tiny_config(tiny_dataset)
    half.schedule.total_kimg = 0.16          # stops mid-fade of 8x8: alpha, optimizer moments, EMA all in flight
    train(half, tmp_path / "split", progress=False)
    resumed = weights(train(tiny_config(tiny_dataset), tmp_path / "split", resume=True, progress=False))
    assert_identical(full, resumed)
    state = json.loads((ckpt.latest_checkpoint(tmp_path / "split") / "state.json").read_text())
    assert state["cur_nimg"] == 320 and state["bad_steps_total"] == 0


def test_killed_process_resumes_exactly(tiny_dataset, tmp_path):
    """SIGTERM mid-run writes a checkpoint; resuming it gives the uninterrupted run's weights bit for bit."""
    args = ["--data", tiny_dataset, "--preset", "tiny", "--resolution", "8", "--kimg", "1.6", "--quiet"]
    assert main(["train", "--run", str(tmp_path / "full"), *args]) == 0
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    proc = subprocess.Popen([sys.executable, "-m", "progan.cli", "train", "--run", str(tmp_path / "killed"), *args],
                            env=env, stderr=subprocess.PIPE, text=True)
    stats = tmp_path / "killed" / "stats.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not stats.exists() or len(stats.read_text().splitlines()) < 8):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "stopped by signal" in err
    stopped_at = json.loads((ckpt.latest_checkpoint(tmp_path / "killed") / "state.json").read_text())["cur_nimg"]
    assert 0 < stopped_at < 1600
    assert main(["train", "--resume", str(tmp_path / "killed"), "--quiet"]) == 0
    for name in ("G", "D", "G_ema", "opt_G", "opt_D"):
        a = load_file(str(ckpt.latest_checkpoint(tmp_path / "full") / f"{name}.safetensors"))
        b = load_file(str(ckpt.latest_checkpoint(tmp_path / "killed") / f"{name}.safetensors"))
        assert_identical(a, b)


def test_a_non_finite_step_is_skipped_and_counted(tiny_dataset, tmp_path, monkeypatch):
    real_loss = loop.generator_loss
    calls = {"n": 0}

    def sometimes_nan(D, fake, lod):
        calls["n"] += 1
        loss = real_loss(D, fake, lod)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(loop, "generator_loss", sometimes_nan)
    state = train(tiny_config(tiny_dataset), tmp_path / "run", progress=False)
    assert state.progress.bad_steps_total == 1
    assert all(torch.isfinite(p).all() for p in state.G.parameters())
    lines = [json.loads(x) for x in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]
    assert lines[-1]["bad_steps"] == 1


def test_persistent_non_finite_stops_with_last_good_checkpoint_intact(tiny_dataset, tmp_path, monkeypatch):
    real_loss = loop.discriminator_loss
    cfg = tiny_config(tiny_dataset, max_bad_steps=5)

    def nan_after_first_checkpoint(D, real, fake, lod, mix, loss_cfg, **kwargs):
        loss, stats = real_loss(D, real, fake, lod, mix, loss_cfg, **kwargs)
        return (loss * float("nan"), stats) if ckpt.list_checkpoints(tmp_path / "run") else (loss, stats)

    monkeypatch.setattr(loop, "discriminator_loss", nan_after_first_checkpoint)
    with pytest.raises(TrainingError, match="5 steps in a row"):
        train(cfg, tmp_path / "run", progress=False)
    good = ckpt.list_checkpoints(tmp_path / "run")
    assert len(good) == 1
    state = json.loads((good[0] / "state.json").read_text())
    assert state["cur_nimg"] == 128
    assert all(torch.isfinite(t).all() for t in load_file(str(good[0] / "D.safetensors")).values())


# --- refused before any work starts ------------------------------------------------------------------------------

def run_cli(capsys, *argv):
    code = main(list(argv))
    return code, capsys.readouterr().err


def test_bad_resolution_refused(tiny_dataset, tmp_path, capsys):
    code, err = run_cli(capsys, "train", "--data", tiny_dataset, "--run", str(tmp_path / "r"), "--preset", "tiny",
                        "--resolution", "24")
    assert code == 2 and "power of two" in err and "24" in err
    assert not (tmp_path / "r").exists()


def test_batch_not_divisible_by_group_refused(tiny_dataset, tmp_path, capsys):
    code, err = run_cli(capsys, "train", "--data", tiny_dataset, "--run", str(tmp_path / "r"), "--preset", "tiny",
                        "--batch", "6", "--mbstd-group", "4")
    assert code == 2 and "per-process batch 6 at 4x4 is not a whole number of minibatch-stddev groups of 4" in err
    assert not (tmp_path / "r").exists()


def test_dataset_smaller_than_resolution_refused(tiny_dataset, tmp_path, capsys):
    code, err = run_cli(capsys, "train", "--data", tiny_dataset, "--run", str(tmp_path / "r"), "--preset", "tiny",
                        "--resolution", "32")
    assert code == 2 and "smaller than the training resolution 32" in err


def test_run_folder_with_another_run_refused(tiny_dataset, tmp_path, capsys):
    train(tiny_config(tiny_dataset), tmp_path / "r", progress=False)
    code, err = run_cli(capsys, "train", "--data", tiny_dataset, "--run", str(tmp_path / "r"), "--preset", "tiny")
    assert code == 2 and "already holds a run" in err
    code, err = run_cli(capsys, "train", "--resume", str(tmp_path / "r"), "--fmap-base", "128")
    assert code == 2 and "cannot resume with these changes" in err and "model.fmap_base" in err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    code, err = run_cli(capsys, "train", "--data", tiny_dataset, "--run", str(tmp_path / "other"), "--preset", "tiny")
    assert code == 2 and "not empty" in err


def test_missing_and_mismatched_checkpoints_refused(tiny_dataset, tmp_path, capsys):
    code, err = run_cli(capsys, "train", "--resume", str(tmp_path / "nothing"))
    assert code == 2 and "nothing" in err
    train(tiny_config(tiny_dataset), tmp_path / "r", progress=False)
    for old in ckpt.list_checkpoints(tmp_path / "r"):
        import shutil
        shutil.rmtree(old)
    code, err = run_cli(capsys, "train", "--resume", str(tmp_path / "r"))
    assert code == 2 and "no checkpoint to resume from" in err

    train(tiny_config(tiny_dataset), tmp_path / "m", progress=False)
    latest = ckpt.latest_checkpoint(tmp_path / "m")
    g = load_file(str(latest / "G.safetensors"))
    g["to_rgb.1.weight"] = torch.zeros(3, 5, 1, 1)
    save_file(g, str(latest / "G.safetensors"))
    code, err = run_cli(capsys, "train", "--resume", str(tmp_path / "m"), "--kimg", "0.4")
    assert code == 2 and "G.safetensors does not match" in err and "to_rgb.1.weight" in err


def test_end_to_end_cli(tmp_path, capsys):
    """Images -> dataset -> training through 4x4 and 8x8 -> grids, checkpoints, export -> generate."""
    from PIL import Image
    src = tmp_path / "images"
    src.mkdir()
    for i in range(24):
        Image.new("RGB", (20 + i, 16), (10 * i, 255 - 10 * i, 128)).save(src / f"{i}.png")
    (src / "broken.jpg").write_bytes(b"not a jpeg")
    assert main(["dataset", "--source", str(src), "--out", str(tmp_path / "data"), "--resolution", "8"]) == 0
    assert main(["train", "--data", str(tmp_path / "data"), "--run", str(tmp_path / "run"), "--preset", "tiny",
                 "--resolution", "8", "--quiet"]) == 0
    run = tmp_path / "run"
    samples = sorted(p.name for p in (run / "samples").glob("*.png"))
    assert "reals.png" in samples and "final.png" in samples
    assert any(s.endswith("4x4.png") for s in samples) and any(s.endswith("8x8.png") for s in samples)
    assert len(ckpt.list_checkpoints(run)) == 3
    lines = [json.loads(x) for x in (run / "stats.jsonl").read_text().splitlines()]
    assert {x["resolution"] for x in lines} == {4, 8} and lines[-1]["kimg"] == pytest.approx(0.32)
    assert json.loads((run / "config.json").read_text())["preset"] == "tiny"
    assert (run / "model" / "generator.safetensors").is_file()
    capsys.readouterr()
    assert main(["generate", str(run), "--out", str(tmp_path / "gen"), "--seeds", "0-8",
                 "--video", "walk.gif", "--video-seeds", "0-2", "--frames-per-seed", "3"]) == 0
    grid = Image.open(tmp_path / "gen" / "grid.png")
    assert grid.size == (3 * 64, 3 * 64)
    gif = Image.open(tmp_path / "gen" / "walk.gif")
    assert gif.n_frames == 9


def test_metrics_during_training_leave_training_unchanged(tiny_dataset, tmp_path):
    plain = tiny_config(tiny_dataset)
    plain.model.resolution = 16
    with_metrics = tiny_config(tiny_dataset, metrics=["swd"], metrics_kimg=0.256, metrics_images=64)
    with_metrics.model.resolution = 16
    a = weights(train(plain, tmp_path / "a", progress=False))
    b = weights(train(with_metrics, tmp_path / "b", progress=False))
    assert_identical(a, b)
    rows = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["metric"] for r in rows] == ["swd", "swd"]           # at 0.256 kimg (16x16 reached) and at the end
    assert rows[-1]["snapshot_kimg"] == pytest.approx(0.32) and rows[-1]["resolution"] == 16
    assert not (tmp_path / "a" / "metrics.jsonl").exists()


def test_grid_cells_spread_over_the_whole_dataset():
    from progan.train.loop import grid_indices

    idx = grid_indices(3771, 64)  # the emoji are stored by code point: the first 64 are all keycaps and symbols
    assert idx[0] == 0 and idx[-1] == 3770 and bool((idx.diff() > 50).all())
    assert grid_indices(64, 64).tolist() == list(range(64))
    assert grid_indices(5, 8).tolist() == [0, 1, 2, 3, 4, 0, 1, 2]
