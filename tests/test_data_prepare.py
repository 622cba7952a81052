"""prepare_dataset: every kind of bad input, the level pyramid, manifest, atomic writes."""

import hashlib
import io
import json
import os
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from progan.config import ConfigError
from progan.data.dataset import DatasetError, PreparedDataset
from progan.data.prepare import DatasetWriter, _shrink_npy, downsample_box, prepare_dataset, write_subset

BG = (10, 200, 30)


def rgb_noise(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def png_bytes(img):
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def save(img, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def load_top(out):
    m = json.loads((out / "manifest.json").read_text())
    return m, np.load(out / m["levels"][str(m["resolution"])])


def report(out):
    return {s["file"]: s["reason"] for s in json.loads((out / "report.json").read_text())["skipped"]}


@pytest.fixture
def messy(tmp_path):
    """A folder with one file of each awkward kind; returns (folder, names of the usable ones)."""
    src = tmp_path / "src"
    save(Image.fromarray(rgb_noise(12, 20)), src / "a_nonsquare.png")
    save(Image.fromarray(rgb_noise(8, 8, 1)[..., 0], "L"), src / "b_gray.png")
    save(Image.fromarray(rgb_noise(9, 9, 2)).convert("P"), src / "c_palette.png")
    save(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), src / "d_cmyk.jpg")
    save(Image.fromarray(np.full((8, 8), 40000, np.uint16)), src / "e_16bit.png")
    save(Image.new("LA", (8, 8), (90, 255)), src / "f_la.png")
    (src / "g_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg" * 10)
    (src / "h_empty.png").write_bytes(b"")
    good_png = png_bytes(Image.fromarray(rgb_noise(32, 32, 3)))
    (src / "i_truncated.png").write_bytes(good_png[: len(good_png) // 2])
    jpg = io.BytesIO()
    Image.fromarray(rgb_noise(64, 64, 4)).save(jpg, "JPEG", quality=90)
    (src / "j_truncated.jpg").write_bytes(jpg.getvalue()[: len(jpg.getvalue()) // 2])
    (src / "k_notes.md").write_text("# not an image\n")
    save(Image.fromarray(rgb_noise(4, 6, 5)), src / "l_small.png")
    os.symlink(src / "does_not_exist.png", src / "m_broken_link.png")
    (src / "n_dir.png").mkdir()  # a folder named like an image: not a file, so not a candidate
    return src, ["a_nonsquare.png", "b_gray.png", "c_palette.png", "d_cmyk.jpg", "e_16bit.png", "f_la.png"]


def test_messy_folder_skips_bad_files_with_reasons(messy, tmp_path):
    src, good = messy
    m = prepare_dataset(src, tmp_path / "out", 8)
    assert m["count"] == len(good) and m["skipped"] == 7
    reasons = report(tmp_path / "out")
    assert set(reasons) == {
        "g_corrupt.jpg", "h_empty.png", "i_truncated.png", "j_truncated.jpg",
        "k_notes.md", "l_small.png", "m_broken_link.png",
    }
    assert reasons["h_empty.png"].startswith("empty file")
    assert reasons["i_truncated.png"].startswith("corrupt or truncated")
    assert reasons["j_truncated.jpg"].startswith("corrupt or truncated")
    assert reasons["k_notes.md"].startswith("not an image")
    assert reasons["g_corrupt.jpg"].startswith(("not an image", "corrupt"))
    assert reasons["l_small.png"].startswith("too small")
    assert reasons["m_broken_link.png"].startswith("cannot read file")

    _, top = load_top(tmp_path / "out")
    assert top.shape == (len(good), 3, 8, 8) and top.dtype == np.uint8
    gray, cmyk, i16, la = top[1], top[3], top[4], top[5]
    assert (gray[0] == gray[1]).all() and (gray[1] == gray[2]).all()  # grey stays grey
    assert np.abs(cmyk.reshape(3, -1).mean(1) - [255, 0, 0]).max() < 8  # C=0 M=Y=255 -> red
    assert (i16 == round(40000 * 255 / 65535)).all()  # scaled, not clipped to 255
    assert (la == 90).all()  # opaque LA -> grey 90


def test_conversions_exact_pixels(tmp_path):
    src = tmp_path / "src"
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., :3] = (200, 0, 0)
    rgba[0, 0, 3] = 0  # transparent -> background
    rgba[0, 1, 3] = 255  # opaque -> its own colour
    rgba[0, 2, 3] = 128  # half -> blend
    rgba[1:, :, 3] = 255
    save(Image.fromarray(rgba, "RGBA"), src / "rgba.png")
    pal = Image.new("P", (8, 8), 1)
    pal.putpalette([0, 0, 0, 12, 34, 56] + [0] * 762)
    save(pal, src / "pal.png")
    i16 = np.zeros((8, 8), np.uint16)
    i16[:, 4:] = 65535
    save(Image.fromarray(i16), src / "i16.png")

    prepare_dataset(src, tmp_path / "out", 8, background=BG)
    _, top = load_top(tmp_path / "out")  # sorted: i16, pal, rgba
    i16_out, pal_out, rgba_out = top[0], top[1], top[2]
    assert tuple(rgba_out[:, 0, 0]) == BG
    assert tuple(rgba_out[:, 0, 1]) == (200, 0, 0)
    blend = [round((200 * 128 + 10 * 127) / 255), round(200 * 127 / 255), round(30 * 127 / 255)]
    assert np.abs(rgba_out[:, 0, 2].astype(int) - blend).max() <= 1
    assert (pal_out.reshape(3, -1).T == (12, 34, 56)).all()
    assert (i16_out[:, :, :4] == 0).all() and (i16_out[:, :, 4:] == 255).all()


def test_center_crop_and_pad(tmp_path):
    wide = rgb_noise(8, 16, 7)
    save(Image.fromarray(wide), tmp_path / "src" / "wide.png")
    prepare_dataset(tmp_path / "src", tmp_path / "center", 8)
    _, top = load_top(tmp_path / "center")
    assert (top[0].transpose(1, 2, 0) == wide[:, 4:12]).all()  # no resize needed: exact central square

    short = rgb_noise(4, 8, 8)
    save(Image.fromarray(short), tmp_path / "src2" / "short.png")
    prepare_dataset(tmp_path / "src2", tmp_path / "pad", 8, crop="pad", background=BG)
    _, top = load_top(tmp_path / "pad")
    img = top[0].transpose(1, 2, 0)
    assert (img[2:6] == short).all()
    assert (img[:2] == BG).all() and (img[6:] == BG).all()


def test_small_images_skipped_or_upscaled(tmp_path):
    save(Image.fromarray(rgb_noise(6, 6)), tmp_path / "src" / "small.png")
    save(Image.fromarray(rgb_noise(20, 30)), tmp_path / "src" / "big.png")
    m = prepare_dataset(tmp_path / "src", tmp_path / "a", 16)
    assert m["count"] == 1 and "too small" in report(tmp_path / "a")["small.png"]
    m = prepare_dataset(tmp_path / "src", tmp_path / "b", 16, upscale=True)
    assert m["count"] == 2 and m["skipped"] == 0


@pytest.mark.parametrize("limit", [1000, 3000])  # 4096 px: > 2x limit (Pillow raises) / > limit (our check)
def test_decompression_bomb_skipped_and_limit_restored(tmp_path, limit):
    save(Image.fromarray(rgb_noise(64, 64)), tmp_path / "src" / "bomb.png")
    save(Image.fromarray(rgb_noise(16, 16)), tmp_path / "src" / "ok.png")
    before = Image.MAX_IMAGE_PIXELS
    m = prepare_dataset(tmp_path / "src", tmp_path / "out", 8, max_pixels=limit)
    assert Image.MAX_IMAGE_PIXELS == before
    assert m["count"] == 1
    assert report(tmp_path / "out")["bomb.png"].startswith("decompression bomb")


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        prepare_dataset(tmp_path / "nope", tmp_path / "out", 8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="contains no files"):
        prepare_dataset(tmp_path / "empty", tmp_path / "out", 8)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.txt").write_text("hello")
    (tmp_path / "junk" / "b.png").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"no usable images in .*junk"):
        prepare_dataset(tmp_path / "junk", tmp_path / "out", 8)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # temp folder cleaned up
    save(Image.fromarray(rgb_noise(8, 8)), tmp_path / "ok" / "x.png")
    for bad in (2, 48, 2048, 0, True, 8.0):
        with pytest.raises(ConfigError, match="power of two"):
            prepare_dataset(tmp_path / "ok", tmp_path / "out", bad)
    with pytest.raises(DatasetError, match="crop"):
        prepare_dataset(tmp_path / "ok", tmp_path / "out", 8, crop="random")
    with pytest.raises(DatasetError, match="background"):
        prepare_dataset(tmp_path / "ok", tmp_path / "out", 8, background=(0, 0, 300))
    with pytest.raises(DatasetError, match="would contain the source"):
        prepare_dataset(tmp_path / "ok", tmp_path, 8, overwrite=True)
    (tmp_path / "file.bin").write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="folder or a .zip"):
        prepare_dataset(tmp_path / "file.bin", tmp_path / "out", 8)


def test_overwrite_and_atomicity(tmp_path):
    save(Image.fromarray(rgb_noise(8, 8)), tmp_path / "src" / "x.png")
    out = tmp_path / "out"
    out.mkdir()
    prepare_dataset(tmp_path / "src", out, 8)  # an empty folder is fine to fill
    with pytest.raises(DatasetError, match="not empty"):
        prepare_dataset(tmp_path / "src", out, 8)
    save(Image.fromarray(rgb_noise(8, 8, 1)), tmp_path / "src" / "y.png")
    m = prepare_dataset(tmp_path / "src", out, 8, overwrite=True)
    assert m["count"] == 2 and PreparedDataset(out).count == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]  # no temp or old folders left
    (tmp_path / "ref").mkdir()  # the dataset folder gets ordinary permissions, not a temp dir's 0700
    assert out.stat().st_mode == (tmp_path / "ref").stat().st_mode


def test_pyramid_is_rounded_box_average(tmp_path):
    x = np.array([[1, 2], [3, 4]], np.uint8)  # 10/4 = 2.5 -> 3 (half up)
    assert downsample_box(x).item() == 3
    for block, want in [((0, 0, 0, 1), 0), ((0, 0, 1, 1), 1), ((1, 1, 1, 2), 1), ((1, 2, 2, 2), 2), ((255,) * 4, 255)]:
        assert downsample_box(np.array(block, np.uint8).reshape(2, 2)).item() == want

    save(Image.fromarray(rgb_noise(16, 16, 9)), tmp_path / "src" / "a.png")
    save(Image.fromarray(rgb_noise(16, 16, 10)), tmp_path / "src" / "b.png")
    m = prepare_dataset(tmp_path / "src", tmp_path / "out", 16)
    assert sorted(m["levels"], key=int) == ["4", "8", "16"]
    levels = {int(r): np.load(tmp_path / "out" / f) for r, f in m["levels"].items()}
    assert (levels[16][0].transpose(1, 2, 0) == rgb_noise(16, 16, 9)).all()
    for r in (8, 4):  # by hand, in Python ints, from the level above
        up = levels[2 * r].astype(int)
        for n, c, i, j in [(0, 0, 0, 0), (1, 2, r - 1, r - 1), (0, 1, 1, r // 2), (1, 0, r - 1, 0)]:
            s = sum(up[n, c, 2 * i + di, 2 * j + dj] for di in (0, 1) for dj in (0, 1))
            assert levels[r][n, c, i, j] == (s + 2) // 4
        assert (levels[r] == downsample_box(levels[2 * r])).all()


def test_manifest_checksums_and_determinism(tmp_path):
    for i in range(5):
        save(Image.fromarray(rgb_noise(10 + i, 12, i)), tmp_path / "src" / f"{i}.png")
    m1 = prepare_dataset(tmp_path / "src", tmp_path / "a", 8, workers=2)
    m2 = prepare_dataset(tmp_path / "src", tmp_path / "b", 8, workers=1)
    assert m1["sha256"] == m2["sha256"]
    assert m1["format"] == "progan-dataset/1" and m1["count"] == 5 and m1["skipped"] == 0
    assert m1["captions"] is None and m1["labels"] is None and m1["label_names"] is None
    assert m1["background"] == [255, 255, 255] and m1["crop"] == "center"
    for name, digest in m1["sha256"].items():
        assert hashlib.sha256((tmp_path / "a" / name).read_bytes()).hexdigest() == digest
        arr = np.load(tmp_path / "a" / name, mmap_mode="r")
        assert arr.shape[0] == 5 and arr.shape[1] == 3
    assert json.loads((tmp_path / "a" / "manifest.json").read_text()) == m1
    m3 = prepare_dataset(tmp_path / "src", tmp_path / "c", 8, max_images=3)
    assert m3["count"] == 3 and np.load(tmp_path / "c" / "level_0008.npy").shape == (3, 3, 8, 8)


def test_labels_and_captions(tmp_path):
    src = tmp_path / "src"
    save(Image.fromarray(rgb_noise(8, 8, 1)), src / "dogs" / "d1.png")
    save(Image.fromarray(rgb_noise(8, 8, 2)), src / "cats" / "c1.png")
    save(Image.fromarray(rgb_noise(8, 8, 3)), src / "cats" / "c2.jpg")
    (src / "cats" / "c1.txt").write_text("a tabby cat\n")
    save(Image.fromarray(rgb_noise(8, 8, 4)), src / "stray.png")
    (src / "readme.txt").write_text("not a caption of anything")

    m = prepare_dataset(src, tmp_path / "out", 8, labels_from_folders=True, text_encoder=None)
    assert m["label_names"] == ["cats", "dogs"]
    assert m["labels"] == [0, 0, 1]  # cats/c1, cats/c2, dogs/d1
    assert m["captions"] == ["a tabby cat", "", ""]
    reasons = report(tmp_path / "out")
    assert "class folder" in reasons["stray.png"] and "readme.txt" in reasons
    assert "cats/c1.txt" not in reasons  # a sidecar is not a skipped file
    ds = PreparedDataset(tmp_path / "out")
    assert ds.num_classes == 2 and ds.labels.tolist() == [0, 0, 1] and ds.labels.dtype == torch.long

    (tmp_path / "flat").mkdir()
    save(Image.fromarray(rgb_noise(8, 8)), tmp_path / "flat" / "a.png")
    with pytest.raises(DatasetError, match="no class subfolders"):
        prepare_dataset(tmp_path / "flat", tmp_path / "out2", 8, labels_from_folders=True)


def test_zip_source_matches_folder(tmp_path):
    src = tmp_path / "src"
    save(Image.fromarray(rgb_noise(12, 9, 1)), src / "cats" / "a.png")
    save(Image.fromarray(rgb_noise(9, 12, 2)), src / "dogs" / "b.png")
    (src / "dogs" / "b.txt").write_text("dog")
    zpath = tmp_path / "data.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in sorted(src.rglob("*")):
            if p.is_file():
                zf.write(p, "wrapper/" + p.relative_to(src).as_posix())  # one top folder, like most zips
        zf.writestr("wrapper/cats/broken.png", b"\x89PNG\r\n\x1a\n garbage")
    m_dir = prepare_dataset(src, tmp_path / "from_dir", 8, labels_from_folders=True, text_encoder=None)
    m_zip = prepare_dataset(zpath, tmp_path / "from_zip", 8, labels_from_folders=True, text_encoder=None)
    assert m_zip["count"] == 2 and m_zip["skipped"] == 1
    assert m_zip["sha256"] == m_dir["sha256"]
    assert m_zip["labels"] == m_dir["labels"] and m_zip["label_names"] == ["cats", "dogs"]
    assert m_zip["captions"] == ["", "dog"]
    assert "cats/broken.png" in report(tmp_path / "from_zip")


def test_writer_shrink_paths_agree(tmp_path):
    for in_place in (True, False):
        path = tmp_path / f"a{in_place}.npy"
        arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(10, 3, 4, 4))
        arr[:] = np.arange(10 * 48, dtype=np.uint8).reshape(10, 3, 4, 4)
        arr.flush()
        del arr
        _shrink_npy(path, 4, in_place=in_place)
        got = np.load(path)
        assert got.shape == (4, 3, 4, 4)
        assert (got == np.arange(10 * 48, dtype=np.uint8).reshape(10, 3, 4, 4)[:4]).all()


def test_writer_rejects_wrong_shape_and_cleans_up(tmp_path):
    with pytest.raises(ValueError, match="shape"):
        with DatasetWriter(tmp_path / "out", 8, 2) as w:
            w.add(np.zeros((8, 8, 3), np.uint8))
            w.add(np.zeros((16, 16, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_small_write_chunks_give_the_same_dataset(tmp_path, monkeypatch):
    for i in range(7):
        save(Image.fromarray(rgb_noise(8, 8, i)), tmp_path / "src" / f"{i}.png")
    (tmp_path / "src" / "3b.png").write_bytes(b"broken")  # a skip between chunks
    m_big = prepare_dataset(tmp_path / "src", tmp_path / "big", 8)
    monkeypatch.setattr("progan.data.prepare.CHUNK_BYTES", 2 * 3 * 8 * 8)  # flush every 2 images
    m_small = prepare_dataset(tmp_path / "src", tmp_path / "small", 8, workers=1)
    assert m_small["count"] == m_big["count"] == 7
    assert m_small["sha256"] == m_big["sha256"]
    top = np.load(tmp_path / "small" / "level_0008.npy")
    assert all((top[i].transpose(1, 2, 0) == rgb_noise(8, 8, i)).all() for i in range(7))


def test_int32_and_float_modes_scaled_by_range():
    from progan.data.images import to_rgb

    as_int = Image.fromarray(np.array([[0, 1], [255, 128]], np.int32), "I")  # fits 8 bits: kept
    assert np.asarray(to_rgb(as_int))[..., 0].tolist() == [[0, 1], [255, 128]]
    wide = Image.fromarray(np.array([[0, 65535], [32768, 257]], np.int32), "I")  # 16-bit range
    assert np.asarray(to_rgb(wide))[..., 0].tolist() == [[0, 255], [128, 1]]
    unit = Image.fromarray(np.array([[0.0, 1.0], [0.5, 0.25]], np.float32), "F")  # [0, 1] floats
    assert np.asarray(to_rgb(unit))[..., 0].tolist() == [[0, 255], [128, 64]]


class HashVectors:
    """A stand-in sentence model: a fixed unit vector per text (the real encoder takes seconds to load)."""

    def encode(self, texts, **_):
        rows = [np.random.default_rng(int(hashlib.sha256(t.encode()).hexdigest()[:8], 16)).standard_normal(6)
                for t in texts]
        v = torch.tensor(np.array(rows), dtype=torch.float32)
        return v / v.norm(dim=1, keepdim=True)


def test_write_subset_copies_images_captions_labels_columns_and_vectors(tmp_path):
    from progan.conditioning.encoder import TextEncoder

    enc = TextEncoder(name="hash-encoder", folder="/nowhere", dimension=6, sha256="ab" * 32, model=HashVectors())
    captions = ["a cat", "", "a dog", "a cat", "a bird"]
    with DatasetWriter(tmp_path / "full", 8, len(captions)) as w:
        for i, c in enumerate(captions):
            w.add(rgb_noise(8, 8, i), caption=c, label=i % 2)
        w.finish(source="test", background=BG, label_names=["even", "odd"], text_encoder=enc,
                 columns={"groups": ["pets", None, "pets", "pets", "birds"], "keywords": [["k"], [], [], ["x"], []],
                          "caption_variants": [["cat", "pet"], [], ["dog", "pet"], ["cat"], ["bird", "pet", "wings"]]})
    full = PreparedDataset(tmp_path / "full")

    m = write_subset(full, [4, 0, 1], tmp_path / "sub")
    sub = PreparedDataset(tmp_path / "sub", verify=True)
    assert sub.count == 3 and m["background"] == list(BG)
    for res in (4, 8):
        assert (sub.images(res, [0, 1, 2]) == full.images(res, [4, 0, 1])).all()
    assert sub.captions == ["a bird", "a cat", ""]
    assert sub.labels.tolist() == [0, 0, 1] and sub.label_names == ["even", "odd"]
    assert sub.column("groups") == ["birds", "pets", None] and sub.column("keywords") == [[], ["k"], []]
    assert torch.equal(sub.caption_embeddings, full.caption_embeddings[[4, 0, 1]])  # the very rows; zero stays zero
    assert sub.column("caption_variants") == [["bird", "pet", "wings"], ["cat", "pet"], []]
    assert torch.equal(sub.variant_embeddings, full.variant_embeddings[[5, 6, 7, 0, 1]])  # image after image
    assert sub.text_encoder == full.text_encoder

    with pytest.raises(DatasetError, match="must be in"):
        write_subset(full, [5], tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
