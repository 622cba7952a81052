"""PreparedDataset reading and its errors; the data order; mirror; pixel conversions; fade-in of reals."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from progan.data.dataset import (
    DatasetError,
    PreparedDataset,
    blend_reals,
    mirror,
    mirror_flags,
    rank_batch_indices,
    stream_indices,
    to_float,
    to_uint8,
)
from progan.data.prepare import DatasetWriter


@pytest.fixture
def ds_path(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 16, 16, 3), dtype=np.uint8)
    with DatasetWriter(tmp_path / "ds", 16, capacity=7) as w:
        for i, img in enumerate(images):
            w.add(img, caption=f"image {i}")
        w.finish(source="test")
    return tmp_path / "ds", images


def edit_manifest(path, **changes):
    m = json.loads((path / "manifest.json").read_text())
    m.update(changes)
    (path / "manifest.json").write_text(json.dumps(m))


def test_reads_levels_and_images(ds_path):
    path, images = ds_path
    ds = PreparedDataset(path, verify=True)
    assert (ds.resolution, ds.count, len(ds)) == (16, 7, 7)
    assert ds.captions[3] == "image 3" and ds.labels is None and ds.num_classes == 0
    assert ds.level(16) is ds.level(16)  # opened once
    assert isinstance(ds.level(8), np.memmap) and ds.level(8).shape == (7, 3, 8, 8)
    idx = torch.tensor([5, 0, 5, 2, 0])  # unsorted, with repeats
    batch = ds.images(16, idx)
    assert batch.dtype == torch.uint8 and batch.shape == (5, 3, 16, 16)
    assert (batch.numpy() == images[idx.numpy()].transpose(0, 3, 1, 2)).all()
    assert (ds.images(4, [6, 1]).numpy() == ds.level(4)[[6, 1]]).all()
    with pytest.raises(IndexError):
        ds.images(16, [7])
    with pytest.raises(DatasetError, match="no level 32"):
        ds.level(32)


def test_missing_and_corrupt_datasets(ds_path, tmp_path):
    path, _ = ds_path
    with pytest.raises(FileNotFoundError, match="does not exist"):
        PreparedDataset(tmp_path / "nope")
    (tmp_path / "plain").mkdir()
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        PreparedDataset(tmp_path / "plain")

    good = (path / "manifest.json").read_text()
    (path / "manifest.json").write_text(good[: len(good) // 2])
    with pytest.raises(DatasetError, match="not valid JSON"):
        PreparedDataset(path)
    (path / "manifest.json").write_text(good)
    edit_manifest(path, format="stylegan/9")
    with pytest.raises(DatasetError, match="expected format"):
        PreparedDataset(path)
    (path / "manifest.json").write_text(good)
    edit_manifest(path, count=8, captions=None)
    with pytest.raises(DatasetError, match="shape"):
        PreparedDataset(path)
    (path / "manifest.json").write_text(good)
    edit_manifest(path, levels={"4": "level_0004.npy", "16": "level_0016.npy"})
    with pytest.raises(DatasetError, match="levels"):
        PreparedDataset(path)
    for field, value, match in [
        ("resolution", 12, "bad or missing resolution"),
        ("columns", ["groups"], "column 'groups' must be a list of 7 values"),
        ("captions", ["x"] * 6, "captions must be a list of 7 strings"),
        ("labels", [0, 1, 0, 1, 0, 1, True], r"labels must be ints in \[0, 2\)"),
        ("labels", [0] * 7, "label_names is missing"),
        ("text_encoder", {"name": "x"}, "malformed text_encoder"),
        ("text_encoder", {"name": "x", "dimension": 4, "file": "../e.npy"}, "plain file name"),
    ]:
        edit_manifest(path, **{field: value}, **({"label_names": ["a", "b"]} if field == "labels" and True in value
                                                 else {}))
        with pytest.raises(DatasetError, match=match):
            PreparedDataset(path)
        (path / "manifest.json").write_text(good)

    (path / "level_0008.npy").rename(path / "moved.npy")
    with pytest.raises(FileNotFoundError, match="level_0008.npy"):
        PreparedDataset(path)
    (path / "moved.npy").rename(path / "level_0008.npy")

    np.save(path / "level_0004.npy", np.zeros((7, 3, 4, 5), np.uint8))  # wrong shape, sha now stale too
    with pytest.raises(DatasetError, match=r"level_0004.npy: expected uint8 array of shape \(7, 3, 4, 4\)"):
        PreparedDataset(path)
    np.save(path / "level_0004.npy", np.zeros((7, 3, 4, 4), np.uint8))  # right shape, wrong bytes
    PreparedDataset(path)  # only verify=True reads every byte
    with pytest.raises(DatasetError, match="sha256 mismatch"):
        PreparedDataset(path, verify=True)


def test_stream_covers_each_epoch_once_and_spans_boundaries():
    n, seed = 10, 3
    stream = stream_indices(0, 35, n, seed)
    assert stream.dtype == torch.int64 and stream.shape == (35,)
    for e in range(3):
        assert sorted(stream[e * n : (e + 1) * n].tolist()) == list(range(n))
    assert sorted(stream[30:].tolist()) == sorted(stream_indices(30, 5, n, seed).tolist())
    assert torch.equal(stream_indices(7, 9, n, seed), stream[7:16])  # crosses the epoch 0/1 boundary
    assert torch.equal(stream_indices(0, 35, n, seed), stream)  # pure function
    assert not torch.equal(stream_indices(0, 10, n, seed + 1), stream[:10])
    assert not torch.equal(stream[:10], stream[10:20])  # epochs are shuffled differently
    assert stream_indices(5, 0, n, seed).shape == (0,)
    with pytest.raises(ValueError):
        stream_indices(0, 4, 0, seed)


def test_rank_shards_are_disjoint_and_cover_the_global_batch():
    n, seed, local, world = 50, 1, 4, 3
    for cursor in (0, 12, 48):  # 48: the global batch crosses an epoch boundary
        shards = [rank_batch_indices(cursor, local, r, n, seed) for r in range(world)]
        assert torch.equal(torch.cat(shards), stream_indices(cursor, local * world, n, seed))
        if cursor + local * world <= n:
            assert len(set(torch.cat(shards).tolist())) == local * world


def test_mirror_flags_depend_only_on_position():
    flags = mirror_flags(100, 1000, seed=5)
    assert flags.dtype == torch.bool and flags.shape == (1000,)
    assert torch.equal(torch.cat([mirror_flags(100, 300, 5), mirror_flags(400, 700, 5)]), flags)
    assert 400 < int(flags.sum()) < 600
    assert not torch.equal(mirror_flags(100, 1000, seed=6), flags)

    x = torch.arange(2 * 1 * 2 * 3).reshape(2, 1, 2, 3)
    out = mirror(x, torch.tensor([True, False]))
    assert torch.equal(out[0], x[0].flip(-1)) and torch.equal(out[1], x[1])


def test_pixel_conversions_round_trip():
    u = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    f = to_float(u)
    assert f.dtype == torch.float32 and f.min() == -1 and f.max() == 1
    assert torch.equal(to_uint8(f), u)
    assert to_uint8(torch.tensor([-3.0, 0.0, 5.0])).tolist() == [0, 128, 255]


def test_blend_reals():
    x = torch.randn(2, 3, 8, 8)
    assert blend_reals(x, 1.0) is x
    assert torch.equal(blend_reals(x, torch.tensor(1.0)), x)
    low = F.avg_pool2d(x, 2)
    up = low.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    assert torch.allclose(blend_reals(x, 0.0), up)
    assert torch.allclose(blend_reals(x, 0.25), 0.75 * up + 0.25 * x, atol=1e-6)
    assert torch.allclose(F.avg_pool2d(blend_reals(x, 0.3), 2), low, atol=1e-6)  # coarse content is kept
