"""FID / KID statistics against direct numpy/scipy computations, and the FID Inception network's
compatibility with pytorch-fid's weight file (names and shapes transcribed from the reference)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from progan.metrics import inception as inc
from progan.metrics.fid import (
    feature_statistics,
    fid_from_features,
    frechet_distance,
    kid_from_features,
    kid_subsets,
    mmd2_polynomial_unbiased,
)

# ----------------------------------------------------------------------------------------------
# The reference state dict: torchvision's Inception3(num_classes=1008, aux_logits=False) with
# pytorch-fid's FIDInceptionA/C/E_1/E_2 blocks (same parameters as torchvision's InceptionA/C/E).
# Written out from the reference code, not from our module: (module, in, out, kh, kw) per BasicConv2d.


def _a(name, cin, pool):
    return [(f"{name}.branch1x1", cin, 64, 1, 1), (f"{name}.branch5x5_1", cin, 48, 1, 1),
            (f"{name}.branch5x5_2", 48, 64, 5, 5), (f"{name}.branch3x3dbl_1", cin, 64, 1, 1),
            (f"{name}.branch3x3dbl_2", 64, 96, 3, 3), (f"{name}.branch3x3dbl_3", 96, 96, 3, 3),
            (f"{name}.branch_pool", cin, pool, 1, 1)]


def _b(name, cin):
    return [(f"{name}.branch3x3", cin, 384, 3, 3), (f"{name}.branch3x3dbl_1", cin, 64, 1, 1),
            (f"{name}.branch3x3dbl_2", 64, 96, 3, 3), (f"{name}.branch3x3dbl_3", 96, 96, 3, 3)]


def _c(name, cin, c7):
    return [(f"{name}.branch1x1", cin, 192, 1, 1), (f"{name}.branch7x7_1", cin, c7, 1, 1),
            (f"{name}.branch7x7_2", c7, c7, 1, 7), (f"{name}.branch7x7_3", c7, 192, 7, 1),
            (f"{name}.branch7x7dbl_1", cin, c7, 1, 1), (f"{name}.branch7x7dbl_2", c7, c7, 7, 1),
            (f"{name}.branch7x7dbl_3", c7, c7, 1, 7), (f"{name}.branch7x7dbl_4", c7, c7, 7, 1),
            (f"{name}.branch7x7dbl_5", c7, 192, 1, 7), (f"{name}.branch_pool", cin, 192, 1, 1)]


def _d(name, cin):
    return [(f"{name}.branch3x3_1", cin, 192, 1, 1), (f"{name}.branch3x3_2", 192, 320, 3, 3),
            (f"{name}.branch7x7x3_1", cin, 192, 1, 1), (f"{name}.branch7x7x3_2", 192, 192, 1, 7),
            (f"{name}.branch7x7x3_3", 192, 192, 7, 1), (f"{name}.branch7x7x3_4", 192, 192, 3, 3)]


def _e(name, cin):
    return [(f"{name}.branch1x1", cin, 320, 1, 1), (f"{name}.branch3x3_1", cin, 384, 1, 1),
            (f"{name}.branch3x3_2a", 384, 384, 1, 3), (f"{name}.branch3x3_2b", 384, 384, 3, 1),
            (f"{name}.branch3x3dbl_1", cin, 448, 1, 1), (f"{name}.branch3x3dbl_2", 448, 384, 3, 3),
            (f"{name}.branch3x3dbl_3a", 384, 384, 1, 3), (f"{name}.branch3x3dbl_3b", 384, 384, 3, 1),
            (f"{name}.branch_pool", cin, 192, 1, 1)]


REFERENCE_CONVS = (
    [("Conv2d_1a_3x3", 3, 32, 3, 3), ("Conv2d_2a_3x3", 32, 32, 3, 3), ("Conv2d_2b_3x3", 32, 64, 3, 3),
     ("Conv2d_3b_1x1", 64, 80, 1, 1), ("Conv2d_4a_3x3", 80, 192, 3, 3)]
    + _a("Mixed_5b", 192, 32) + _a("Mixed_5c", 256, 64) + _a("Mixed_5d", 288, 64) + _b("Mixed_6a", 288)
    + _c("Mixed_6b", 768, 128) + _c("Mixed_6c", 768, 160) + _c("Mixed_6d", 768, 160) + _c("Mixed_6e", 768, 192)
    + _d("Mixed_7a", 768) + _e("Mixed_7b", 1280) + _e("Mixed_7c", 2048)
)


def reference_shapes() -> dict[str, tuple]:
    shapes = {}
    for name, cin, cout, kh, kw in REFERENCE_CONVS:
        shapes[f"{name}.conv.weight"] = (cout, cin, kh, kw)
        for p in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.bn.{p}"] = (cout,)
    shapes["fc.weight"] = (1008, 2048)
    shapes["fc.bias"] = (1008,)
    return shapes


def reference_state_dict(seed=0, num_batches_tracked=False) -> dict[str, torch.Tensor]:
    """Random values with the reference names and shapes, scaled so activations stay O(1)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in reference_shapes().items():
        if k.endswith("conv.weight"):
            fan_in = shape[1] * shape[2] * shape[3]
            sd[k] = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
        elif k.endswith("running_var") or k.endswith("bn.weight"):
            sd[k] = torch.rand(shape, generator=g) + 0.5
        else:
            sd[k] = torch.randn(shape, generator=g) * 0.1
        if num_batches_tracked and k.endswith("bn.running_var"):
            sd[k.replace("running_var", "num_batches_tracked")] = torch.tensor(0)
    return sd


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """One safetensors file of the reference state dict for the tests that only need some weights."""
    path = tmp_path_factory.mktemp("inception") / "fid_inception.safetensors"
    save_file(reference_state_dict(), str(path))
    return path


def test_reference_spec_is_the_published_layout():
    """Sanity of the transcription itself: representative entries and the total count."""
    shapes = reference_shapes()
    assert len(REFERENCE_CONVS) == 94
    assert len(shapes) == 94 * 5 + 2 == 472
    expected = {
        "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
        "Conv2d_4a_3x3.bn.running_var": (192,),
        "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
        "Mixed_5d.branch5x5_2.conv.weight": (64, 48, 5, 5),
        "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
        "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7),
        "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
        "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
        "Mixed_7b.branch3x3dbl_1.conv.weight": (448, 1280, 1, 1),
        "Mixed_7c.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
        "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1),
        "fc.weight": (1008, 2048),
    }
    for k, v in expected.items():
        assert shapes[k] == v, k


@pytest.mark.parametrize("fmt,nbt", [(".pth", False), (".pth", True), (".safetensors", False)])
def test_reference_state_dict_loads_strictly(tmp_path, fmt, nbt):
    sd = reference_state_dict(num_batches_tracked=nbt)
    path = tmp_path / f"weights{fmt}"
    if fmt == ".pth":
        torch.save(sd, path)
    else:
        save_file(sd, str(path))
    model, sha = inc.load_inception(path)
    own = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert own == reference_shapes()
    assert not any(t.is_meta for t in model.state_dict().values())
    assert torch.equal(model.state_dict()["Mixed_6c.branch7x7dbl_3.conv.weight"],
                       sd["Mixed_6c.branch7x7dbl_3.conv.weight"])
    assert len(sha) == 64
    # And torch's own strict loader agrees on a freshly built module.
    inc.FIDInceptionV3().load_state_dict(sd, strict=True)


def test_forward_random_weights_gives_2048_features(weights_file):
    model, _ = inc.load_inception(weights_file)
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    feats = inc.inception_features(model, images)
    assert feats.shape == (2, 2048) and feats.dtype == torch.float64
    assert torch.isfinite(feats).all() and feats.abs().sum() > 0
    assert not torch.allclose(feats[0], feats[1])
    # BatchNorm stays frozen after .train(); FID of the same images through the network is ~0.
    model.train()
    again = inc.inception_features(model, images)
    assert torch.allclose(feats, again, rtol=1e-5, atol=1e-7)
    scale = float(torch.trace(feature_statistics(feats)[1]))
    assert abs(fid_from_features(feats, again)) < 1e-6 * scale


def test_fid_blocks_use_tf_pooling():
    """FIDInceptionA's pool branch averages without the zero padding; Mixed_7c's pool branch is a max pool."""
    g = torch.Generator().manual_seed(0)
    model = inc.FIDInceptionV3().eval()
    model.load_state_dict(reference_state_dict(), strict=True)
    x = torch.randn(1, 192, 9, 9, generator=g)
    pool_branch = model.Mixed_5b(x)[:, -32:]       # branch_pool has 32 channels, concatenated last
    conv = model.Mixed_5b.branch_pool
    want = conv(F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))
    torchvision_style = conv(F.avg_pool2d(x, 3, 1, 1))
    assert torch.allclose(pool_branch, want, atol=1e-5)
    assert not torch.allclose(pool_branch, torchvision_style, atol=1e-3)
    y = torch.randn(1, 2048, 5, 5, generator=g)
    assert torch.allclose(model.Mixed_7c(y)[:, -192:], model.Mixed_7c.branch_pool(F.max_pool2d(y, 3, 1, 1)), atol=1e-5)


def test_preprocess_matches_pytorch_fid_convention():
    img = torch.tensor([0, 255], dtype=torch.uint8).repeat_interleave(299 * 299 * 3 // 2 + 1)[: 299 * 299 * 3]
    x = inc.preprocess(img.view(1, 3, 299, 299))
    assert x.min() == -1.0 and x.max() == 1.0                  # 299 px: no resize, just [0,255] -> [-1,1]
    small = torch.full((1, 3, 32, 32), 51, dtype=torch.uint8)
    assert inc.preprocess(small).shape == (1, 3, 299, 299)
    assert torch.allclose(inc.preprocess(small), torch.full((1, 3, 299, 299), 51 / 255 * 2 - 1))


def test_missing_weights_error_explains_what_to_get(monkeypatch, tmp_path):
    monkeypatch.delenv(inc.WEIGHTS_ENV, raising=False)
    with pytest.raises(inc.MissingInceptionWeights) as e:
        inc.load_inception(None)
    msg = str(e.value)
    assert "pt_inception-2015-12-05-6726825d.pth" in msg
    assert "https://github.com/mseitzer/pytorch-fid/releases" in msg
    assert "PROGAN_INCEPTION_WEIGHTS" in msg and "--inception-weights" in msg
    assert isinstance(e.value, FileNotFoundError)
    missing = tmp_path / "nope.pth"
    with pytest.raises(inc.MissingInceptionWeights, match="nope.pth"):
        inc.load_inception(missing)
    monkeypatch.setenv(inc.WEIGHTS_ENV, str(missing))
    with pytest.raises(inc.MissingInceptionWeights, match="nope.pth"):
        inc.load_inception(None)


def test_env_var_is_used(monkeypatch, weights_file):
    monkeypatch.setenv(inc.WEIGHTS_ENV, str(weights_file))
    model, _ = inc.load_inception(None)
    assert isinstance(model, inc.FIDInceptionV3)


def test_bad_weight_files_are_rejected_clearly(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(inc.BadInceptionWeights, match="garbage.pth"):
        inc.load_inception(garbage)
    sd = reference_state_dict()
    sd["Mixed_6b.branch7x7_2.conv.weight"] = torch.zeros(128, 128, 7, 1)   # transposed kernel
    del sd["fc.bias"]
    wrong = tmp_path / "wrong.safetensors"
    save_file(sd, str(wrong))
    with pytest.raises(inc.BadInceptionWeights) as e:
        inc.load_inception(wrong)
    assert "fc.bias" in str(e.value) and "Mixed_6b.branch7x7_2.conv.weight" in str(e.value)
    # Pickled objects other than tensors are refused by weights_only loading.
    pickled = tmp_path / "obj.pth"
    torch.save({"a": torch.zeros(1), "b": {1, 2}}, pickled)
    with pytest.raises(inc.BadInceptionWeights):
        inc.load_inception(pickled)


# ----------------------------------------------------------------------------------------------
# FID and KID statistics


def _features(n, d, seed, shift=0.0):
    """Correlated Gaussian features; the same distribution for every seed (up to `shift`)."""
    mix = np.random.default_rng(12345).normal(size=(d, d)) / np.sqrt(d)
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(n, d)) @ mix + shift)


def test_statistics_match_numpy():
    f = _features(300, 12, 0)
    mu, sigma = feature_statistics(f)
    assert np.allclose(mu.numpy(), f.numpy().mean(axis=0))
    assert np.allclose(sigma.numpy(), np.cov(f.numpy(), rowvar=False))


def test_frechet_distance_matches_scipy_sqrtm():
    a, b = _features(400, 16, 1), _features(300, 16, 2, shift=0.3)
    mu1, s1 = a.numpy().mean(0), np.cov(a.numpy(), rowvar=False)
    mu2, s2 = b.numpy().mean(0), np.cov(b.numpy(), rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    want = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    got = fid_from_features(a, b)
    assert got == pytest.approx(want, rel=1e-8)
    assert frechet_distance(torch.from_numpy(mu1), torch.from_numpy(s1), torch.from_numpy(mu2),
                            torch.from_numpy(s2)) == pytest.approx(want, rel=1e-8)


def test_fid_of_a_set_with_itself_is_zero():
    f = _features(500, 32, 3)
    assert abs(fid_from_features(f, f)) < 1e-8 * float(torch.trace(feature_statistics(f)[1]))
    # Rank-deficient covariance (fewer samples than dimensions), as with few images and 2048-d features.
    g = _features(20, 64, 4)
    assert abs(fid_from_features(g, g)) < 1e-8 * float(torch.trace(feature_statistics(g)[1]))
    assert fid_from_features(g, g + 1.0) == pytest.approx(64.0, rel=1e-8)  # pure mean shift


def _mmd2_loops(x: np.ndarray, y: np.ndarray) -> float:
    m, d = x.shape
    k = lambda a, b: (a @ b / d + 1.0) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(m), 2))
    yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(m), 2))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return xx / (m * (m - 1)) + yy / (m * (m - 1)) - 2 * xy / (m * m)


def test_kid_estimator_matches_direct_sum():
    x, y = _features(12, 5, 5), _features(12, 5, 6, shift=0.5)
    assert mmd2_polynomial_unbiased(x, y) == pytest.approx(_mmd2_loops(x.numpy(), y.numpy()), rel=1e-10)


def test_kid_subsets_match_direct_sum():
    x, y = _features(30, 6, 7), _features(25, 6, 8, shift=0.2)
    out = kid_from_features(x, y, num_subsets=4, subset_size=10, generator=torch.Generator().manual_seed(3))
    subsets = kid_subsets(30, 25, 4, 10, torch.Generator().manual_seed(3))
    vals = [_mmd2_loops(x[ia].numpy(), y[ib].numpy()) for ia, ib in subsets]
    assert all(len(set(ia.tolist())) == 10 and len(set(ib.tolist())) == 10 for ia, ib in subsets)
    assert out["value"] == pytest.approx(np.mean(vals), rel=1e-10)
    assert out["std"] == pytest.approx(np.std(vals), rel=1e-8)
    assert out["subsets"] == 4 and out["subset_size"] == 10
    # The subset size is capped by the smaller set.
    assert kid_from_features(x, y, num_subsets=2, subset_size=1000)["subset_size"] == 25


def test_kid_is_near_zero_for_same_distribution_and_positive_otherwise():
    a, b = _features(400, 8, 9), _features(400, 8, 10)
    c = _features(400, 8, 11, shift=1.0)
    same = kid_from_features(a, b, num_subsets=10, subset_size=200)["value"]
    diff = kid_from_features(a, c, num_subsets=10, subset_size=200)["value"]
    assert abs(same) < 0.05 * diff
    assert diff > 0
