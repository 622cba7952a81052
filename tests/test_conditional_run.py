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
    assert "prompt read as: a green circle 1.00" in out
    assert main(["generate", str(full), "--out", str(tmp_path / "g"), "--prompt", "\x00\x01"]) == 2
    assert "prompt" in capsys.readouterr().err


def test_a_model_and_a_dataset_that_do_not_fit_are_refused(folders, tmp_path, capsys, tiny_dataset):
    capsys.readouterr()
    code = main(["train", "--data", tiny_dataset, "--run", str(tmp_path / "r"), "--condition", "class", *TRAIN])
    assert code == 2 and "has no class labels" in capsys.readouterr().err
