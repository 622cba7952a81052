"""Labels, captions and caption embeddings from the source to PreparedDataset (the real text encoder)."""

import json
import warnings
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from progan.cli import main as cli_main
from progan.data import emoji as emoji_module
from progan.data.dataset import CAPTION_EMBEDDINGS, DatasetError, PreparedDataset
from progan.data.emoji import build_emoji_dataset, group_of, load_emoji_groups
from progan.data.prepare import prepare_dataset
from progan.conditioning.encoder import load_text_encoder
from progan.conditioning.spec import export_conditioning
from progan.config import ModelConfig


@pytest.fixture(scope="module")
def enc():
    return load_text_encoder()


def image(seed, size=(10, 10)):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size[::-1], 3), dtype=np.uint8))


@pytest.fixture
def src(tmp_path):
    root = tmp_path / "src"
    for cls, files in {"cats": ["c1", "c2", "c3"], "dogs": ["d1"]}.items():
        (root / cls).mkdir(parents=True)
        for i, f in enumerate(files):
            image(hash(f) % 1000).save(root / cls / f"{f}.png")
    (root / "cats" / "c1.txt").write_text("a tabby cat sleeping\n", encoding="utf-8")
    (root / "dogs" / "d1.txt").write_text("a puppy on the beach", encoding="utf-8")
    (root / "cats" / "c3.png").write_bytes(b"broken")  # skipped: its class still counts in label_names
    return root


def test_folder_labels_captions_and_embeddings(src, tmp_path, enc):
    m = prepare_dataset(src, tmp_path / "out", 8, labels_from_folders=True, text_encoder=enc)
    assert m["label_names"] == ["cats", "dogs"] and m["labels"] == [0, 0, 1]
    assert m["captions"] == ["a tabby cat sleeping", "", "a puppy on the beach"]
    assert m["text_encoder"] == {**enc.info(), "file": CAPTION_EMBEDDINGS, "encoded": "captions"}
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["label_counts"] == {"cats": 2, "dogs": 1}
    assert report["caption_embeddings"] == "encoded with all-MiniLM-L6-v2 (captions)"

    ds = PreparedDataset(tmp_path / "out", verify=True)
    assert ds.labels.dtype == torch.long and ds.labels.tolist() == [0, 0, 1] and ds.num_classes == 2
    E = ds.caption_embeddings
    assert E.shape == (3, 384) and E.dtype == torch.float32
    want = enc.encode(["a tabby cat sleeping", "a puppy on the beach"])
    assert torch.allclose(E[[0, 2]], want, atol=1e-5)
    assert torch.equal(E[1], torch.zeros(384))  # no caption: a zero row, never a vector for ""

    # verify() covers the embeddings too; a wrong shape is caught at load time.
    arr = np.load(tmp_path / "out" / CAPTION_EMBEDDINGS)
    arr[0, 0] += 1e-4
    np.save(tmp_path / "out" / CAPTION_EMBEDDINGS, arr)
    PreparedDataset(tmp_path / "out")
    with pytest.raises(DatasetError, match="caption_embeddings.npy: sha256 mismatch"):
        PreparedDataset(tmp_path / "out", verify=True)
    np.save(tmp_path / "out" / CAPTION_EMBEDDINGS, arr[:2])
    with pytest.raises(DatasetError, match=r"expected float32 array of shape \(3, 384\)"):
        PreparedDataset(tmp_path / "out")
    np.save(tmp_path / "out" / CAPTION_EMBEDDINGS, arr * 2)
    with pytest.raises(DatasetError, match="unit vectors"):
        PreparedDataset(tmp_path / "out")
    (tmp_path / "out" / CAPTION_EMBEDDINGS).unlink()
    with pytest.raises(FileNotFoundError, match="caption_embeddings.npy is missing"):
        PreparedDataset(tmp_path / "out")


def test_zip_carries_the_same_labels_captions_and_vectors(src, tmp_path, enc):
    zpath = tmp_path / "data.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in sorted(src.rglob("*")):
            if p.is_file():
                zf.write(p, "top/" + p.relative_to(src).as_posix())
    prepare_dataset(src, tmp_path / "a", 8, labels_from_folders=True, text_encoder=enc)
    prepare_dataset(zpath, tmp_path / "b", 8, labels_from_folders=True, text_encoder=enc)
    a, b = PreparedDataset(tmp_path / "a"), PreparedDataset(tmp_path / "b")
    assert torch.equal(a.labels, b.labels) and a.label_names == b.label_names == ["cats", "dogs"]
    assert a.captions == b.captions and torch.equal(a.caption_embeddings, b.caption_embeddings)


def test_without_encoder_or_captions(src, tmp_path, enc):
    m = prepare_dataset(src, tmp_path / "none", 8, text_encoder=None)
    assert m["text_encoder"] is None and m["labels"] is None and m["captions"][0] == "a tabby cat sleeping"
    assert not (tmp_path / "none" / CAPTION_EMBEDDINGS).exists()
    ds = PreparedDataset(tmp_path / "none")
    assert ds.caption_embeddings is None and ds.labels is None
    (tmp_path / "plain").mkdir()
    image(1).save(tmp_path / "plain" / "x.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no captions: nothing to encode and nothing to warn about
        m = prepare_dataset(tmp_path / "plain", tmp_path / "p", 8, text_encoder="auto")
    assert m["text_encoder"] is None
    assert json.loads((tmp_path / "p" / "report.json").read_text())["caption_embeddings"] == "no captions"


def test_cli_labels_from_folders_reach_the_manifest(src, tmp_path, enc):
    assert cli_main(["dataset", "--source", str(src), "--out", str(tmp_path / "cli"), "--resolution", "8",
                     "--labels-from-folders"]) == 0
    ds = PreparedDataset(tmp_path / "cli")
    assert ds.label_names == ["cats", "dogs"] and ds.labels.tolist() == [0, 0, 1]


def test_emoji_groups_descriptions_and_embeddings(tmp_path, enc):
    m = build_emoji_dataset(tmp_path / "e", 8, limit=12, text_encoder=enc)
    ds = PreparedDataset(tmp_path / "e", verify=True)
    assert ds.captions[:3] == ["keycap: #", "keycap: *", "keycap: 0"]
    assert ds.column("groups")[:3] == ["Symbols"] * 3 and ds.column("subgroups")[0] == "keycap"
    assert ds.column("descriptions")[0] == ("keycap: # (hash); keywords: symbol, blue-square, twitter, hashtag, key, "
                                            "number, octothorpe, pound, sign; keycap, symbols")
    assert ds.column("sequences")[0] == "#\ufe0f\u20e3"
    assert m["text_encoder"]["encoded"] == "captions"
    assert torch.allclose(ds.caption_embeddings, enc.encode(ds.captions), atol=1e-5)
    # Every image's caption variants, encoded image after image; the exported model reads prompts against them all.
    texts = [t for variants in ds.column("caption_variants") for t in variants]
    assert ds.variant_embeddings.shape == (len(texts), 384) and "hashtag" in ds.column("caption_variants")[0]
    assert torch.allclose(ds.variant_embeddings, enc.encode(texts), atol=1e-5)
    meta, tensors = export_conditioning(ds, ModelConfig(text_size=384), with_variants=True)
    assert set(meta["captions"]) == set(ds.captions) | set(texts) and len(meta["captions"]) == len(set(texts))
    assert tensors["caption_vectors"].shape == (len(meta["captions"]), 384)
    assert export_conditioning(ds, ModelConfig(text_size=384))[0]["captions"] == ds.captions


def test_emoji_without_unicode_data(tmp_path, monkeypatch, enc):
    monkeypatch.setattr(emoji_module, "DEFAULT_EMOJI_TEST", str(tmp_path / "absent.txt"))
    with pytest.warns(UserWarning, match="apt-get install unicode-data"):
        m = build_emoji_dataset(tmp_path / "e", 8, limit=3, text_encoder=None)
    assert "groups" not in m and m["descriptions"][0].startswith("keycap: # (hash); keywords: symbol, ")
    assert PreparedDataset(tmp_path / "e").column("groups") is None
    report = json.loads((tmp_path / "e" / "report.json").read_text())
    assert report["groups"].startswith("none:") and "unicode-data" in report["groups"]
    with pytest.raises(FileNotFoundError, match="unicode-data"):  # a file named by the caller must exist
        build_emoji_dataset(tmp_path / "f", 8, limit=3, emoji_test=tmp_path / "named.txt", text_encoder=None)


def test_emoji_test_parsing_and_newer_sequences(tmp_path):
    groups = load_emoji_groups()
    assert groups["\U0001f600"] == ("Smileys & Emotion", "face-smiling")
    assert groups["\U0001f412"] == ("Animals & Nature", "animal-mammal")
    # Newer than the file (Emoji 15.1): the group of its first component, skin tone dropped.
    assert group_of("\U0001f642\u200d\u2194\ufe0f", groups)[0] == "Smileys & Emotion"
    assert group_of("\U0001f3c3\U0001f3fd\u200d\u27a1\ufe0f", groups) == groups["\U0001f3c3"]
    assert group_of("\U0010fffd", groups) == (None, None)
    bad = tmp_path / "bad.txt"
    bad.write_text("# group: A\n# subgroup: b\n1F600 ; fully-qualified # x\nZZZZ ; fully-qualified # y\n")
    with pytest.raises(DatasetError, match=r"bad.txt:4: not a line of emoji-test.txt"):
        load_emoji_groups(bad)
    bad.write_text("1F600 ; fully-qualified # x\n")
    with pytest.raises(DatasetError, match="before any group"):
        load_emoji_groups(bad)
