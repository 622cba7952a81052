"""SWD: each stage against a direct numpy/scipy transcription of the paper's code, the streamed (bounded-memory)
computation against the former all-in-memory one, plus end-to-end properties."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
import scipy.ndimage
import torch

from progan.metrics import swd as S
from progan.metrics.common import MetricInputError
from progan.seeds import derive_seed

BINOMIAL_5X5 = np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]).astype(np.float32) / 256.0


def np_pyr_down(x):
    return scipy.ndimage.convolve(x, BINOMIAL_5X5[None, None], mode="mirror")[:, :, ::2, ::2]


def np_pyr_up(x):
    up = np.zeros((x.shape[0], x.shape[1], x.shape[2] * 2, x.shape[3] * 2), x.dtype)
    up[:, :, ::2, ::2] = x
    return scipy.ndimage.convolve(up, BINOMIAL_5X5[None, None] * 4.0, mode="mirror")


def np_laplacian(x, levels):
    pyr = [x.astype(np.float32)]
    for _ in range(1, levels):
        pyr.append(np_pyr_down(pyr[-1]))
        pyr[-2] = pyr[-2] - np_pyr_up(pyr[-1])
    return pyr


def smooth_images(n, res, seed):
    """Blurry blobs: a different distribution from uniform noise."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g) * 255
    return torch.nn.functional.interpolate(low, size=(res, res), mode="bilinear", align_corners=False).round().to(torch.uint8)


def rect_images(n, res, seed):
    """One random-coloured rectangle per image on white: structured, like simple shape datasets."""
    g = torch.Generator().manual_seed(seed)
    img = torch.full((n, 3, res, res), 255.0)
    for i in range(n):
        x0, y0 = torch.randint(0, res // 2, (2,), generator=g).tolist()
        w, h = torch.randint(4, res // 2, (2,), generator=g).tolist()
        img[i, :, y0:y0 + h, x0:x0 + w] = torch.rand(3, 1, 1, generator=g) * 255
    return img.round().to(torch.uint8)


def noise_images(n, res, seed):
    return torch.randint(0, 256, (n, 3, res, res), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


FAST = dict(nhoods_per_image=16, dir_repeats=2, dirs_per_repeat=32)


def test_pyramid_matches_scipy_mirror_convolution():
    x = noise_images(3, 64, 0).numpy()
    ours = S.laplacian_pyramid(torch.from_numpy(x).float(), 3)
    ref = np_laplacian(x, 3)
    assert [tuple(t.shape) for t in ours] == [(3, 3, 64, 64), (3, 3, 32, 32), (3, 3, 16, 16)]
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a.numpy(), b, atol=2e-4)


def test_pyramid_reconstructs_the_image():
    x = smooth_images(2, 32, 1).float() + noise_images(2, 32, 2).float() * 0.1
    levels = S.laplacian_pyramid(x, 2)
    assert torch.allclose(S.pyr_up(levels[1]) + levels[0], x, atol=1e-3)


def test_extract_patches_are_the_right_windows():
    level = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    centers = torch.tensor([[[3, 3], [12, 5]], [[7, 12], [10, 10]]])
    patches = S.extract_patches(level, centers, 7)
    assert patches.shape == (4, 3, 7, 7)
    for b in range(2):
        for p in range(2):
            y, x = centers[b, p].tolist()
            assert torch.equal(patches[b * 2 + p], level[b, :, y - 3:y + 4, x - 3:x + 4])


def test_descriptors_match_numpy_transcription():
    """Pyramid -> patches at the same positions -> per-channel normalisation, all in numpy."""
    images = torch.cat([smooth_images(3, 32, 4), noise_images(2, 32, 5)])
    seed, nh = 11, 8
    with S.descriptors(images, seed, nhoods_per_image=nh, batch_size=2) as stored:
        res, desc = stored.resolutions, [stored.normalized(lvl) for lvl in range(2)]
    assert res == [32, 16]
    pyr = np_laplacian(images.numpy(), 2)
    for lvl, r in enumerate(res):
        gen = torch.Generator().manual_seed(derive_seed(seed, "swd-patches", r))
        patches = []
        for i in range(images.shape[0]):  # positions are drawn one image at a time, (y, x) pairs
            for y, x in torch.randint(3, r - 3, (nh, 2), generator=gen).tolist():
                patches.append(pyr[lvl][i, :, y - 3:y + 4, x - 3:x + 4])
        d = np.stack(patches).astype(np.float64)
        d -= d.mean(axis=(0, 2, 3), keepdims=True)
        d /= d.std(axis=(0, 2, 3), keepdims=True)
        np.testing.assert_allclose(desc[lvl].numpy(), d.reshape(d.shape[0], -1), atol=1e-4)


def test_normalized_descriptors_have_unit_channel_statistics():
    with S.descriptors(smooth_images(6, 32, 6), 0, nhoods_per_image=32) as stored:
        d = stored.normalized(0).view(-1, 3, 49).double()
    assert torch.allclose(d.mean(dim=(0, 2)), torch.zeros(3, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(d.std(dim=(0, 2), correction=0), torch.ones(3, dtype=torch.float64), atol=1e-5)


def test_flat_images_do_not_produce_nan():
    flat = torch.full((4, 3, 16, 16), 128, dtype=torch.uint8)
    out = S.swd(flat, flat, seed=0, **FAST)
    assert out["value"] == 0.0


def test_sliced_wasserstein_matches_numpy():
    g = torch.Generator().manual_seed(7)
    a = torch.randn(200, 147, generator=g)
    b = torch.randn(200, 147, generator=g) * 1.3 + 0.2
    dirs = S.random_directions(147, 3, 16, torch.Generator().manual_seed(8))
    assert torch.allclose(dirs.norm(dim=1), torch.ones(3, 16), atol=1e-6)
    want = np.mean([
        np.mean(np.abs(np.sort(a.numpy() @ d, axis=0) - np.sort(b.numpy() @ d, axis=0)))
        for d in dirs.numpy()
    ])
    assert S.sliced_wasserstein(a, b, dirs) == pytest.approx(want, rel=1e-5)
    assert S.sliced_wasserstein(a, a, dirs) == 0.0


def test_swd_ranks_distributions_and_reports_levels():
    a, b = rect_images(24, 32, 10), rect_images(24, 32, 11)
    c = noise_images(24, 32, 12)
    same = S.swd(a, b, seed=1, **FAST)
    diff = S.swd(a, c, seed=1, **FAST)
    assert set(same["levels"]) == {"32", "16"}
    assert same["value"] == pytest.approx(np.mean(list(same["levels"].values())))
    assert 0 < same["value"] < diff["value"] / 3
    for r in ("32", "16"):
        assert same["levels"][r] < diff["levels"][r]


def test_swd_is_deterministic_and_batch_size_independent():
    a, b = smooth_images(10, 32, 13), noise_images(10, 32, 14)
    one = S.swd(a, b, seed=5, batch_size=3, **FAST)
    two = S.swd(a, b, seed=5, batch_size=64, **FAST)
    three = S.swd(iter([a[:7], a[7:]]), b, seed=5, **FAST)
    assert one == two == three
    assert S.swd(a, b, seed=6, **FAST) != one


def test_swd_leaves_global_rng_alone():
    state = torch.get_rng_state()
    S.swd(smooth_images(4, 16, 0), noise_images(4, 16, 1), seed=0, **FAST)
    assert torch.equal(state, torch.get_rng_state())


def test_swd_rejects_bad_input():
    with pytest.raises(MetricInputError, match="16"):
        S.swd(noise_images(4, 8, 0), noise_images(4, 8, 1), **FAST)
    with pytest.raises(MetricInputError, match="power of two"):
        S.swd(noise_images(4, 24, 0), noise_images(4, 24, 1), **FAST)
    with pytest.raises(MetricInputError, match="same size"):
        S.swd(noise_images(4, 16, 0), noise_images(5, 16, 1), **FAST)
    with pytest.raises(MetricInputError, match="uint8"):
        S.swd(noise_images(4, 16, 0).float(), noise_images(4, 16, 1), **FAST)
    assert S.pyramid_resolutions(128) == [128, 64, 32, 16]


# -- the former all-in-memory implementation (descriptors held whole, normalised in place, 128 directions at a
#    time), kept as the reference the streamed one must agree with -------------------------------------------------

def reference_descriptors(images, seed, nhoods_per_image, batch_size=64):
    resolutions = S.pyramid_resolutions(images.shape[2])
    gens = [torch.Generator().manual_seed(derive_seed(seed, "swd-patches", r)) for r in resolutions]
    parts = [[] for _ in resolutions]
    for i in range(0, images.shape[0], batch_size):
        batch = images[i:i + batch_size]
        pyramid = S.laplacian_pyramid(batch.float(), len(resolutions))
        for lvl, (level, r) in enumerate(zip(pyramid, resolutions)):
            centers = torch.stack([torch.randint(3, r - 3, (nhoods_per_image, 2), generator=gens[lvl])
                                   for _ in range(batch.shape[0])])
            parts[lvl].append(S.extract_patches(level, centers, 7))
    out = []
    for p in parts:
        desc = torch.cat(p)
        desc.sub_(desc.mean(dim=(0, 2, 3), keepdim=True))
        std = desc.square().mean(dim=(0, 2, 3), keepdim=True).sqrt()
        out.append(desc.div_(torch.where(std > 0, std, torch.ones_like(std))).reshape(desc.shape[0], -1))
    return resolutions, out


def reference_swd(images_a, images_b, seed, nhoods_per_image, dir_repeats, dirs_per_repeat):
    res, da = reference_descriptors(images_a, derive_seed(seed, "a"), nhoods_per_image)
    _, db = reference_descriptors(images_b, derive_seed(seed, "b"), nhoods_per_image)
    levels = {}
    for r, a, b in zip(res, da, db):
        dirs = S.random_directions(a.shape[1], dir_repeats, dirs_per_repeat,
                                   torch.Generator().manual_seed(derive_seed(seed, "swd-directions", r)))
        dists = []
        for d in dirs:
            pa, pb = torch.sort(d.T @ a.T, dim=1).values, torch.sort(d.T @ b.T, dim=1).values
            dists.append((pa - pb).abs().mean().item())
        levels[str(r)] = sum(dists) / len(dists) * 1e3
    return {"levels": levels, "value": sum(levels.values()) / len(levels)}


@pytest.mark.parametrize("max_bytes", [S.MAX_BYTES, 1])
def test_streamed_swd_matches_the_in_memory_reference(max_bytes):
    """max_bytes=1: one direction at a time, every level file read back once per direction."""
    a = torch.cat([rect_images(10, 64, 20), smooth_images(6, 64, 21)])
    b = torch.cat([noise_images(5, 64, 22), rect_images(11, 64, 23)])
    kw = dict(nhoods_per_image=16, dir_repeats=2, dirs_per_repeat=8)
    want = reference_swd(a, b, 4, **kw)
    got = S.swd(a, b, seed=4, batch_size=5, max_bytes=max_bytes, **kw)
    assert list(got["levels"]) == ["64", "32", "16"]
    for r in want["levels"]:
        assert got["levels"][r] == pytest.approx(want["levels"][r], rel=1e-4)
    assert got["value"] == pytest.approx(want["value"], rel=1e-4)


def test_descriptor_blocks_cover_the_set_and_files_are_removed(monkeypatch):
    monkeypatch.setattr(S, "BLOCK_ROWS", 10)
    images = rect_images(7, 32, 30)
    workdir = tempfile.mkdtemp()
    with S.descriptors(images, 3, nhoods_per_image=6, workdir=workdir) as stored:
        assert len(os.listdir(workdir)) == 1
        blocks = list(stored.blocks(1))
        assert [len(b) for b in blocks] == [10, 10, 10, 10, 2] and stored.rows == 42
        _, want = reference_descriptors(images, 3, 6)
        torch.testing.assert_close(torch.cat(blocks), want[1], atol=1e-4, rtol=1e-4)
    assert os.listdir(workdir) == []
    with pytest.raises(MetricInputError):
        S.descriptors(iter([images, noise_images(2, 16, 0)]), 0, workdir=workdir)
    assert os.listdir(workdir) == []  # a failed set leaves nothing behind either
