"""The exported generator: an export appears whole, whenever the writer dies; readers see one version at a time."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

import progan.model_io as model_io
from progan.config import ModelConfig
from progan.fileio import atomic_save_tensors, atomic_write_json
from progan.model_io import (CONFIG, MODEL_FORMAT, WEIGHTS, ModelLoadError, export_generator, load_generator,
                             resolve_model_path, versions_dir)
from progan.networks import Generator

CFG = ModelConfig(resolution=8, latent_size=8, fmap_base=16, fmap_max=8)
# Each export: its own weights (a constant fill, so a weight tells which export it came from), lod and kimg.
OLD = {"fill": 0.25, "lod": 1.0, "kimg": 100.0}
NEW = {"fill": 0.75, "lod": 0.0, "kimg": 200.0}


def generator(fill: float) -> Generator:
    G = Generator(CFG)
    with torch.no_grad():
        for p in G.parameters():
            p.fill_(fill)
    return G


def export(path, version: dict):
    return export_generator(path, generator(version["fill"]), lod=version["lod"], kimg=version["kimg"],
                            extra={"dataset": "shapes"})


def which_version(path) -> dict:
    """The version a reader loads from `path`; fails if its weights and config come from different exports."""
    G = load_generator(path)
    fill = G.dense.weight.flatten()[0].item()
    version = next(v for v in (OLD, NEW) if v["fill"] == fill)
    assert (G.meta["kimg"], G.lod) == (version["kimg"], version["lod"]), "weights of one export, config of another"
    assert all(torch.all(p == fill) for p in G.parameters())
    return version


def export_legacy(model_dir, version: dict) -> None:
    """model/ as a plain folder, as exports were written before versions existed."""
    G = generator(version["fill"])
    atomic_save_tensors(model_dir / WEIGHTS, G.state_dict(), metadata={"format": MODEL_FORMAT})
    atomic_write_json(model_dir / CONFIG, {"format": MODEL_FORMAT, "model": CFG.__dict__, "lod": version["lod"],
                                           "kimg": version["kimg"], "output_resolution": 4})


class Killed(BaseException):
    """A kill -9 at this point: nothing after it runs, not even cleanup handlers."""


# Every file-system step an export takes; a crash may come before any of them.
STEPS = [(os, "mkdir"), (os, "rename"), (os, "replace"), (os, "symlink"), (os, "fsync"), (os, "unlink"),
         (os, "rmdir"), (shutil, "rmtree")]


def crash_at(monkeypatch, n: int) -> dict:
    """Make the n-th file-system step raise Killed, and every step after it too (the process is gone)."""
    calls = {"count": 0, "dead": False}

    def wrap(real):
        def step(*args, **kwargs):
            calls["count"] += 1
            if calls["dead"] or calls["count"] == n:
                calls["dead"] = True
                raise Killed
            return real(*args, **kwargs)
        return step

    for module, name in STEPS:
        monkeypatch.setattr(module, name, wrap(getattr(module, name)))
    return calls


def test_export_is_a_link_to_one_complete_version(tmp_path):
    run = tmp_path / "run"
    version_dir = export(run / "model", OLD)
    assert (run / "model").is_symlink() and (run / "model").resolve() == version_dir.resolve()
    assert sorted(p.name for p in version_dir.iterdir()) == [CONFIG, WEIGHTS]
    for path in (run, run / "model", version_dir, version_dir / CONFIG):
        assert which_version(path) is OLD
    assert resolve_model_path(run / "model") == (version_dir.resolve(), "model")
    assert load_generator(run).meta["dataset"] == "shapes"


@pytest.mark.parametrize("before", ["link", "legacy folder"])
def test_a_crash_anywhere_in_an_export_leaves_the_old_or_the_new_model(tmp_path, monkeypatch, before):
    seen = []
    for n in range(1, 100):
        run = tmp_path / f"crash{n}"
        (run / "model").mkdir(parents=True) if before == "legacy folder" else None
        (export_legacy if before == "legacy folder" else export)(run / "model", OLD)
        with monkeypatch.context() as m:
            calls = crash_at(m, n)
            try:
                export(run / "model", NEW)
                finished = True
            except Killed:
                finished = False
        for path in (run, run / "model"):
            seen.append(which_version(path)["kimg"])
        if finished:
            assert which_version(run / "model") is NEW
            break
        # The next export after a crash succeeds and clears what the crash left behind.
        export(run / "model", NEW)
        assert which_version(run / "model") is NEW
        leftovers = [p.name for p in versions_dir(run / "model").iterdir()]
        assert len(leftovers) <= 2 and not any(name.startswith(model_io.TMP_PREFIX) for name in leftovers)
        assert not list(run.glob(".model.link-*"))
    else:
        pytest.fail("the export never finished")
    assert calls["count"] >= 8, "fewer file-system steps than expected: is the crash injection still reaching them?"
    assert OLD["kimg"] in seen and NEW["kimg"] in seen  # crashes before and after the switch were both exercised


def test_a_reader_reads_config_and_weights_of_one_version_while_an_export_swaps(tmp_path, monkeypatch):
    run = tmp_path / "run"
    export(run / "model", OLD)
    real_read_tensors = model_io.read_tensors

    def export_then_read(path):  # the writer swaps the link after the reader read config.json, before the weights
        export(run / "model", NEW)
        return real_read_tensors(path)

    monkeypatch.setattr(model_io, "read_tensors", export_then_read)
    assert which_version(run / "model") is OLD
    monkeypatch.setattr(model_io, "read_tensors", real_read_tensors)
    assert which_version(run / "model") is NEW


def test_old_versions_are_removed_keeping_the_one_before(tmp_path):
    model = tmp_path / "run" / "model"
    written = [export(model, OLD) for _ in range(3)] + [export(model, NEW)]
    assert sorted(p.name for p in versions_dir(model).iterdir()) == sorted(p.name for p in written[-2:])
    assert which_version(model) is NEW


def test_a_legacy_model_folder_becomes_a_version(tmp_path):
    model = tmp_path / "run" / "model"
    model.mkdir(parents=True)
    export_legacy(model, OLD)
    assert which_version(model) is OLD
    export(model, NEW)
    assert model.is_symlink() and which_version(model) is NEW
    old = [p for p in versions_dir(model).iterdir() if "-old-" in p.name]
    assert len(old) == 1 and which_version(old[0]) is OLD  # kept as the version before


def test_a_checkpoint_of_a_conditional_run_takes_the_runs_conditioning(tmp_path):
    """A checkpoint holds G_ema and the training state; a conditional run's class names (or captions and their
    vectors) come from the model it exports, so generate and eval work from any checkpoint of it."""
    import dataclasses
    import json

    from progan.train.checkpoint import CHECKPOINT_FORMAT

    cfg = dataclasses.replace(CFG, num_classes=2)
    run = tmp_path / "run"
    export_generator(run / "model", Generator(cfg), lod=0.0, kimg=200.0,
                     extra={"dataset": "shapes", "conditioning": {"kind": "class", "classes": ["cat", "dog"]}},
                     tensors={"class_counts": torch.tensor([3.0, 5.0])})
    torch.manual_seed(7)
    earlier = Generator(cfg)
    ckpt = run / "checkpoints" / "ckpt-000000150000"
    ckpt.mkdir(parents=True)
    atomic_save_tensors(ckpt / "G_ema.safetensors", earlier.state_dict())
    (ckpt / "state.json").write_text(json.dumps({"format": CHECKPOINT_FORMAT, "cur_nimg": 150_000, "lod": 0.0,
                                                 "config": {"model": dataclasses.asdict(cfg)}}))
    G = load_generator(ckpt)
    assert G.meta["kimg"] == 150.0 and G.meta["dataset"] == "shapes"
    assert G.meta["conditioning"]["classes"] == ["cat", "dog"]
    assert torch.equal(G.meta["conditioning"]["class_counts"], torch.tensor([3.0, 5.0]))
    assert all(torch.equal(a, b) for a, b in zip(G.state_dict().values(), earlier.state_dict().values()))
    # without the run's model beside it, a checkpoint still loads, with what it holds itself
    moved = shutil.copytree(ckpt, tmp_path / "alone")
    assert "conditioning" not in load_generator(moved).meta


def test_missing_and_bad_paths_say_what_is_wrong(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_generator(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="is not a progan model"):
        load_generator(tmp_path / "empty")
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        export(tmp_path / "file", OLD)


def test_generate_eval_and_studio_load_on_cuda_when_there_is_one(monkeypatch, capsys):
    from progan.cli import build_parser
    parser = build_parser()
    for available, expected in ((True, "cuda"), (False, "cpu")):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
        for argv in (["generate", "run", "--out", "out"], ["eval", "run"], ["studio", "run"]):
            assert parser.parse_args(argv).device == expected
            assert parser.parse_args(argv + ["--device", "cpu"]).device == "cpu"
    with pytest.raises(SystemExit):  # no GPU now
        parser.parse_args(["generate", "run", "--out", "out", "--device", "cuda"])
    assert "torch sees no CUDA GPU" in capsys.readouterr().err


def test_json_is_written_indented_or_on_one_line_and_reads_back_the_same(tmp_path):
    record = {"b": [1, 2.5, None], "a": {"name": "päivä", "ok": True}}
    atomic_write_json(tmp_path / "indented.json", record)
    atomic_write_json(tmp_path / "line.json", record, indent=None)
    indented, line = (tmp_path / "indented.json").read_text(), (tmp_path / "line.json").read_text()
    assert json.loads(indented) == json.loads(line) == record
    assert indented.count("\n") > 5 and line.count("\n") == 1 and ", " not in line
    assert line.index('"a"') < line.index('"b"')  # sorted keys: the same record always gives the same bytes
