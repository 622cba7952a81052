"""MS-SSIM against pytorch-msssim (an independent implementation) where their settings coincide, and
against a numpy/scipy transcription of the paper's variant (small images, colour averaging)."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_msssim
import torch
from scipy import signal

from progan.metrics.common import MetricInputError
from progan.metrics.msssim import WANG_WEIGHTS, gaussian_window_1d, ms_ssim, pairwise_msssim


def structured(n, res, seed, channels=3):
    """Smooth gradients plus a few rectangles: images with real structure at several scales."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, channels, 6, 6, generator=g) * 255
    img = torch.nn.functional.interpolate(low, size=(res, res), mode="bicubic", align_corners=False)
    for i in range(n):
        for _ in range(3):
            x0, y0 = torch.randint(0, res * 3 // 4, (2,), generator=g).tolist()
            s = int(torch.randint(res // 8, res // 3, (1,), generator=g))
            img[i, :, y0:y0 + s, x0:x0 + s] = torch.rand(channels, 1, 1, generator=g) * 255
    return img.clamp(0, 255).round()


def noisy_copy(x, amount, seed):
    g = torch.Generator().manual_seed(seed)
    return (x + torch.randn(x.shape, generator=g) * amount).clamp(0, 255).round()


# ----------------------------------------------------------------------------------------------
# The paper's code (progressive_growing_of_gans metrics/ms_ssim.py), transcribed to numpy float64.


def np_fspecial(size, sigma):
    c = np.arange(size) - (size - 1) / 2
    x, y = np.meshgrid(c, c)
    g = np.exp(-(x**2 + y**2) / (2.0 * sigma**2))
    return g / g.sum()


def np_ssim_cs(img1, img2, max_val=255, filter_size=11, filter_sigma=1.5, k1=0.01, k2=0.03):
    _, h, w, _ = img1.shape
    size = min(filter_size, h, w)
    sigma = size * filter_sigma / filter_size
    window = np_fspecial(size, sigma).reshape(1, size, size, 1)
    mu1 = signal.fftconvolve(img1, window, mode="valid")
    mu2 = signal.fftconvolve(img2, window, mode="valid")
    s11 = signal.fftconvolve(img1 * img1, window, mode="valid") - mu1 * mu1
    s22 = signal.fftconvolve(img2 * img2, window, mode="valid") - mu2 * mu2
    s12 = signal.fftconvolve(img1 * img2, window, mode="valid") - mu1 * mu2
    c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
    v1, v2 = 2.0 * s12 + c2, s11 + s22 + c2
    ssim = np.mean(((2.0 * mu1 * mu2 + c1) * v1) / ((mu1 * mu1 + mu2 * mu2 + c1) * v2), axis=(1, 2, 3))
    return ssim, np.mean(v1 / v2, axis=(1, 2, 3))


def np_msssim(x, y):
    """NCHW torch -> per-pair MS-SSIM exactly as the paper's code computes it (before its final mean)."""
    im1, im2 = (t.permute(0, 2, 3, 1).double().numpy() for t in (x, y))
    weights = np.array(WANG_WEIGHTS)
    mssim, mcs = [], []
    for _ in range(len(weights)):
        s, c = np_ssim_cs(im1, im2)
        mssim.append(s)
        mcs.append(c)
        im1, im2 = [(a[:, 0::2, 0::2] + a[:, 1::2, 0::2] + a[:, 0::2, 1::2] + a[:, 1::2, 1::2]) * 0.25 for a in (im1, im2)]
    mssim, mcs = np.clip(np.asarray(mssim), 0, None), np.clip(np.asarray(mcs), 0, None)
    return np.prod(mcs[:-1] ** weights[:-1, None], axis=0) * mssim[-1] ** weights[-1]


# ----------------------------------------------------------------------------------------------


def test_window_matches_matlab_fspecial():
    for size, sigma in [(11, 1.5), (8, 8 * 1.5 / 11), (1, 1.5 / 11)]:
        w = gaussian_window_1d(size, sigma, torch.float64)
        assert np.allclose(torch.outer(w, w).numpy(), np_fspecial(size, sigma))


@pytest.mark.parametrize("kind", ["random", "structured"])
def test_matches_pytorch_msssim_at_256px_grey(kind):
    """Single-channel 256x256: every scale uses the full 11 px window, so both implementations agree."""
    if kind == "random":
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (3, 1, 256, 256), generator=g).float()
        y = noisy_copy(x * 0.6 + 50, 40, 1)
    else:
        x = structured(3, 256, 2, channels=1)
        y = torch.cat([noisy_copy(x[:1], 10, 3), structured(1, 256, 4, channels=1), x[2:]])
    ref = pytorch_msssim.ms_ssim(x, y, data_range=255, size_average=False)
    ours = ms_ssim(x, y)
    assert torch.allclose(ours, ref, atol=2e-5)
    if kind == "structured":
        assert ours[2] == pytest.approx(1.0, abs=1e-5)  # identical pair
        assert ours[0] > ours[1]                        # a noisy copy is more similar than another image


def test_matches_pytorch_msssim_on_grey_rgb():
    grey = structured(2, 256, 5, channels=1)
    x, y = grey.expand(-1, 3, -1, -1), noisy_copy(grey, 25, 6).expand(-1, 3, -1, -1)
    ref = pytorch_msssim.ms_ssim(x, y, data_range=255, size_average=False)
    assert torch.allclose(ms_ssim(x, y), ref, atol=2e-5)


@pytest.mark.parametrize("res", [16, 32, 128, 256])
def test_matches_paper_variant_on_colour_and_small_images(res):
    """Colour averaged per scale, windows shrinking below 11 px: the paper's code, in numpy."""
    x = structured(4, res, 7)
    y = torch.cat([noisy_copy(x[:2], 20, 8), structured(2, res, 9)])
    want = np_msssim(x, y)
    got = ms_ssim(x, y).double().numpy()
    np.testing.assert_allclose(got, want, atol=5e-5)


def test_pairwise_uses_consecutive_pairs_and_any_batching():
    base = structured(5, 32, 10).to(torch.uint8)
    images = torch.stack([base[0], base[0], base[1], base[2], base[3], base[3], base[4]])  # odd count
    value, pairs = pairwise_msssim(images)
    x = images[:6].float()
    want = ms_ssim(x[0::2], x[1::2]).double().mean().item()
    assert pairs == 3 and value == pytest.approx(want, abs=1e-6)
    batched, n = pairwise_msssim(iter([images[:3], images[3:4], images[4:]]), batch_size=2)
    assert n == 3 and batched == pytest.approx(value, abs=1e-6)
    assert pairwise_msssim(images, batch_size=1)[0] == pytest.approx(value, abs=1e-6)


def test_diversity_ordering():
    """A collapsed set (all images alike) scores near 1; a varied set scores lower."""
    one = structured(1, 32, 11).to(torch.uint8)
    collapsed = one.expand(8, -1, -1, -1).contiguous()
    varied = structured(8, 32, 12).to(torch.uint8)
    assert pairwise_msssim(collapsed)[0] == pytest.approx(1.0, abs=1e-5)
    assert pairwise_msssim(varied)[0] < 0.7


def test_rejects_bad_input():
    with pytest.raises(MetricInputError, match="16"):
        ms_ssim(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8))
    with pytest.raises(MetricInputError, match="equal shape"):
        ms_ssim(torch.rand(2, 3, 16, 16), torch.rand(2, 3, 32, 32))
    with pytest.raises(MetricInputError, match="pair"):
        pairwise_msssim(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(MetricInputError, match="uint8"):
        pairwise_msssim(torch.zeros(4, 3, 16, 16))
