"""--precision auto|fp32|bf16: what auto chooses and why, its record in config.json, resume, the old --bf16 spelling
and old config files."""

import json

import pytest
import torch

from progan import cli
from progan.config import ConfigError, TrainConfig
from progan.presets import preset
from progan.train import precision
from progan.train.loop import train
from progan.train.precision import BF16_MIN_SPEEDUP, resolve

CPU = torch.device("cpu")


@pytest.fixture
def cpu_probe(monkeypatch):
    """Set what the CPU probe finds: fake_probe(speedup) (None: torch has no bf16 kernels for this CPU at all)."""
    calls = []

    def fake_probe(speedup):
        monkeypatch.setattr(precision, "cpu_has_bf16", lambda: speedup is not None)

        def probe(channels):
            calls.append(channels)
            assert speedup is not None, "the probe must not run where torch has no bf16 kernels"
            return speedup
        monkeypatch.setattr(precision, "cpu_bf16_speedup", probe)
        return calls
    return fake_probe


def test_auto_on_a_cpu_without_fast_bf16_is_fp32_and_says_why(cpu_probe):
    model = preset("paper").model
    calls = cpu_probe(0.4)  # bf16 emulated: slower than fp32
    choice = resolve("auto", CPU, model)
    assert choice.name == "fp32" and choice.autocast_dtype is None
    assert "0.40x as fast in bf16" in choice.reason and f"{BF16_MIN_SPEEDUP}x" in choice.reason
    assert calls == [512]  # the probe runs at the run's own width (paper: 512 channels at 16x16)
    calls = cpu_probe(BF16_MIN_SPEEDUP - 0.05)  # faster, but not clearly
    assert resolve("auto", CPU, model).name == "fp32"
    cpu_probe(None)
    choice = resolve("auto", CPU, model)
    assert choice.name == "fp32" and "no bf16 kernels" in choice.reason


def test_auto_on_a_cpu_with_fast_bf16_is_bf16(cpu_probe):
    calls = cpu_probe(BF16_MIN_SPEEDUP + 0.3)
    choice = resolve("auto", CPU, preset("demo").model)
    assert choice.name == "bf16" and choice.autocast_dtype == torch.bfloat16
    assert f"{BF16_MIN_SPEEDUP + 0.3:.2f}x" in choice.reason
    assert calls == [32]  # demo: 32 channels at 16x16


def test_auto_on_cuda_follows_native_bf16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Some GPU")
    for capability, expected in (((8, 0), "bf16"), ((9, 0), "bf16"), ((7, 5), "fp32"), ((6, 1), "fp32")):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=capability: c)
        choice = resolve("auto", torch.device("cuda"), preset("tiny").model)
        assert choice.name == expected and f"{capability[0]}.{capability[1]}" in choice.reason


def test_an_explicit_precision_is_taken_as_asked(cpu_probe):
    cpu_probe(None)
    assert resolve("fp32", CPU, preset("tiny").model).name == "fp32"
    choice = resolve("bf16", CPU, preset("tiny").model)
    assert choice.name == "bf16" and "emulated" in choice.reason  # asked for: taken, with a warning
    with pytest.raises(ValueError):
        resolve("fp16", CPU, preset("tiny").model)


def test_the_probe_is_cheap_cached_and_restores_the_threads():
    threads = torch.get_num_threads()
    precision.cpu_bf16_speedup.cache_clear()
    speedup = precision.cpu_bf16_speedup(8)
    assert 0 < speedup < 100 and torch.get_num_threads() == threads
    assert precision.cpu_bf16_speedup(8) == speedup  # once per process and width
    assert precision.cpu_bf16_speedup.cache_info().hits == 1


def tiny_run(data, total_kimg=0.064, **changes):
    cfg = preset("tiny", 8)
    cfg.data, cfg.schedule.total_kimg = data, total_kimg
    for key, value in changes.items():
        setattr(cfg, key, value)
    return cfg


def test_auto_is_resolved_recorded_and_kept_on_resume(tiny_dataset, tmp_path, cpu_probe, capsys):
    run = tmp_path / "run"
    cpu_probe(0.9)
    assert tiny_run(tiny_dataset).precision == "auto"  # the default
    train(tiny_run(tiny_dataset), run, progress=False)
    assert json.loads((run / "config.json").read_text())["precision"] == "fp32"
    err = capsys.readouterr().err
    assert "precision: fp32 (auto: " in err and "0.90x" in err

    # the machine (or the probe) now says bf16: the run keeps what it recorded, and says so
    cpu_probe(3.0)
    assert cli.main(["train", "--resume", str(run), "--kimg", "0.128", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "precision: fp32 (the run's own, from its config.json" in err
    assert json.loads((run / "config.json").read_text())["precision"] == "fp32"
    assert not (run / "changes.jsonl").exists() or "precision" not in (run / "changes.jsonl").read_text()

    # unless asked: --precision auto resolves again, and the change is noted and recorded
    assert cli.main(["train", "--resume", str(run), "--kimg", "0.192", "--precision", "auto", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "precision: bf16 (changed from the run's fp32; auto: " in err
    assert "resumed with precision: 'fp32' -> 'bf16'" in err
    assert json.loads((run / "config.json").read_text())["precision"] == "bf16"
    assert "precision: 'fp32' -> 'bf16'" in (run / "changes.jsonl").read_text()


def test_bf16_runs_repeat_bit_for_bit(tiny_dataset, tmp_path):
    """Same seed and machine, same numbers: in bf16 as in fp32 (tests/test_train.py)."""
    a = train(tiny_run(tiny_dataset, precision="bf16"), tmp_path / "a", progress=False)
    b = train(tiny_run(tiny_dataset, precision="bf16"), tmp_path / "b", progress=False)
    for name in ("G", "D", "G_ema"):
        for (key, p), q in zip(a.nets[name].state_dict().items(), b.nets[name].state_dict().values()):
            assert torch.equal(p, q), f"{name}.{key}"
    assert json.loads((tmp_path / "a" / "config.json").read_text())["precision"] == "bf16"


def parsed(tmp_path, *words) -> TrainConfig:
    run = tmp_path / "old"
    run.mkdir(exist_ok=True)
    (run / "config.json").write_text(json.dumps(preset("tiny", 8).to_dict()))
    return cli.train_config_from_args(cli.build_parser().parse_args(["train", "--resume", str(run), *words]))


def test_bf16_flag_is_precision_bf16(tmp_path):
    assert parsed(tmp_path, "--bf16").precision == "bf16"
    assert parsed(tmp_path, "--no-bf16").precision == "fp32"
    assert parsed(tmp_path, "--precision", "fp32").precision == "fp32"
    assert parsed(tmp_path).precision == "auto"  # what the config says when no flag is given
    with pytest.raises(SystemExit):
        parsed(tmp_path, "--precision", "fp16")


@pytest.mark.parametrize("bf16, expected", [(True, "bf16"), (False, "fp32")])
def test_old_config_files_load(bf16, expected):
    """A run from before --precision recorded bf16: true / false; it resumes in the precision it trained in."""
    old = preset("tiny", 8).to_dict()
    del old["precision"]
    old["bf16"] = bf16
    cfg = TrainConfig.from_dict(json.loads(json.dumps(old)))
    assert cfg.precision == expected and not hasattr(cfg, "bf16")
    cfg.validate()


def test_an_unknown_precision_is_refused():
    cfg = preset("tiny", 8)
    cfg.precision = "fp16"
    with pytest.raises(ConfigError, match="precision"):
        cfg.validate()
