"""The generator baked for streaming: SeFa, the truncation centre, and batched rendering to uint8 frames."""

import numpy as np
import pytest
import torch

from progan.generate import mean_embedding, seed_latent, truncate
from progan.studio.frames import frames_to_uint8
from progan.studio.renderer import FrameRenderer, sefa
from tests.studio_helpers import random_generator

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def G():
    return random_generator()


def test_sefa_directions_are_orthonormal_and_ordered(G):
    values, dirs = sefa(G)
    assert dirs.shape == (64, 64)
    torch.testing.assert_close(dirs @ dirs.T, torch.eye(64), atol=1e-4, rtol=0)
    assert torch.all(values[:-1] >= values[1:] - 1e-5)
    # The first direction is the unit latent step that moves the (row-normalised) dense output most.
    w = G.dense.weight * G.dense.scale
    w = w / w.norm(dim=1, keepdim=True)
    random_dirs = torch.randn(64, 500)
    gains = (w @ (random_dirs / random_dirs.norm(dim=0))).norm(dim=0)
    assert (w @ dirs[0]).norm() >= gains.max() - 1e-4
    assert (w @ dirs[0]).norm() ** 2 == pytest.approx(values[0].item(), rel=1e-4)


def test_sefa_ignores_class_columns():
    G = random_generator(num_classes=3)
    values, dirs = sefa(G)
    assert dirs.shape == (64, 64)


def test_truncation_pulls_toward_the_mean(G):
    x4 = G.embed(torch.randn(3, 64))
    mean = mean_embedding(G, samples=256)
    assert torch.equal(truncate(x4, mean, torch.ones(3)), x4)  # psi = 1 is exactly no truncation
    torch.testing.assert_close(truncate(x4, mean, torch.zeros(3)), mean.expand_as(x4))
    half = truncate(x4, mean, torch.full((3,), 0.5))
    torch.testing.assert_close(half, (x4 + mean) / 2)
    # and the mean is a real average, not the activation of the mean latent
    assert mean.shape == (1, G.dense_bias.shape[0], 4, 4)
    assert mean.abs().sum() > 0


def test_mean_embedding_handles_class_conditional_models():
    G = random_generator(num_classes=4)
    assert torch.isfinite(mean_embedding(G, samples=64)).all()


def test_renderer_matches_generator_and_truncation_zero_collapses(G):
    r = FrameRenderer(G, mean_samples=256)
    z = torch.stack([seed_latent(s, 64) for s in (1, 2)])
    frames = r.render(z, torch.ones(2))
    assert frames.shape == (2, 32, 32, 3) and frames.dtype == np.uint8
    with torch.inference_mode():
        expected = frames_to_uint8(G(z))
    assert np.abs(frames.astype(int) - expected).max() <= 1
    collapsed = r.render(z, torch.zeros(2))
    assert np.array_equal(collapsed[0], collapsed[1])  # psi = 0: every latent gives the mean image
    assert not np.array_equal(frames[0], frames[1])


def test_renderer_splits_and_pads_batches_to_few_shapes(G):
    r = FrameRenderer(G, mean_samples=64, max_pixels=32 * 32 * 5)
    assert r.max_batch == 4  # a power of two
    shapes = set()
    original = r.net.embed
    r.net.embed = lambda z, *args, **kwargs: shapes.add(z.shape[0]) or original(z, *args, **kwargs)
    z = torch.randn(7, 64)
    got = r.render(z, torch.linspace(0.2, 1, 7))
    assert shapes == {4}  # 7 rows: 4, then 3 padded to 4
    with torch.inference_mode():
        expected = frames_to_uint8(G.synthesize(truncate(G.embed(z), r.x4_mean, torch.linspace(0.2, 1, 7)), 3))
    assert got.shape == (7, 32, 32, 3) and np.abs(got.astype(int) - expected).max() <= 1
    assert FrameRenderer(G, mean_samples=64).max_batch == 16


def test_renderer_with_lod_renders_the_trained_resolution():
    G = random_generator()
    G.lod = 1.5  # fading 16x16 in
    r = FrameRenderer(G, mean_samples=64)
    assert r.size == 16 and r.render(torch.randn(1, 64), torch.ones(1)).shape == (1, 16, 16, 3)
