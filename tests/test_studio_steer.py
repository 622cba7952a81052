"""Studio maths and rendering without a server: SeFa, truncation, walks, preferences, sessions and their controls."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from progan.config import ModelConfig
from progan.networks import Generator
from progan.generate import mean_embedding, normalize, seed_latent, slerp, truncate
from progan.studio.render import Credits, FrameRenderer, RenderLoop, Session, encode_jpeg, tile, to_uint8
from progan.studio.server import access_policy, is_loopback
from progan.studio.steer import LatentWalk, Preferences, sefa

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def demo_generator(resolution=32, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = ModelConfig(resolution=resolution, latent_size=64, fmap_base=512, fmap_max=64, **kw)
    return Generator(cfg).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def G():
    return demo_generator()


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
    G = demo_generator(num_classes=3)
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
    G = demo_generator(num_classes=4)
    assert torch.isfinite(mean_embedding(G, samples=64)).all()


def test_slerp_endpoints_norm_and_parallel_rows():
    a, b = torch.randn(4, 64), torch.randn(4, 64)
    torch.testing.assert_close(slerp(a, b, 0.0), normalize(a))
    torch.testing.assert_close(slerp(a, b, 1.0), normalize(b), atol=1e-5, rtol=0)
    mid = slerp(a, b, 0.3)
    torch.testing.assert_close(mid.norm(dim=1), torch.full((4,), 8.0))
    # equal angles to both ends at t = 0.5
    half = slerp(a, b, 0.5)
    cos_a = (half * normalize(a)).sum(1)
    cos_b = (half * normalize(b)).sum(1)
    torch.testing.assert_close(cos_a, cos_b, atol=1e-3, rtol=0)
    assert torch.isfinite(slerp(a, a * 3, 0.4)).all()  # parallel rows do not divide by zero


def test_walk_is_continuous_and_endless():
    rng = torch.Generator().manual_seed(1)
    walk = LatentWalk(lambda n: torch.randn(n, 64, generator=rng))
    prev = walk.position()
    biggest = 0.0
    for _ in range(300):  # 300 small steps cross many keyframes
        walk.advance(0.05)
        here = walk.position()
        biggest = max(biggest, (here - prev).norm().item())
        prev = here
    assert biggest < 1.5  # no jumps (a jump between random latents is about sqrt(2) * 8 = 11)
    assert torch.isfinite(prev).all()


def test_walk_jump_stands_exactly_on_the_latent_and_lanes_change():
    rng = torch.Generator().manual_seed(1)
    walk = LatentWalk(lambda n: torch.randn(n, 64, generator=rng))
    z = seed_latent(7, 64).view(1, -1)
    walk.jump(z)
    torch.testing.assert_close(walk.position(), normalize(z))
    walk.set_lanes(9)
    assert walk.position().shape == (9, 64)
    torch.testing.assert_close(walk.position()[0], normalize(z)[0])  # lane 0 goes on from where it was
    walk.set_lanes(1)
    assert walk.position().shape == (1, 64)


def test_seed_latent_is_reproducible():
    assert torch.equal(seed_latent(5, 64), seed_latent(5, 64))
    assert not torch.equal(seed_latent(5, 64), seed_latent(6, 64))


def test_likes_pull_new_keyframes_toward_the_liked_image():
    basis = torch.linalg.qr(torch.randn(64, 8))[0].T  # 8 orthonormal directions
    prefs = Preferences(basis)
    liked = torch.randn(64)
    target = prefs.coords(liked.view(1, -1))[0]
    rng = torch.Generator().manual_seed(0)
    before = (prefs.coords(prefs.sample(512, rng)) - target).norm(dim=1).mean()
    for _ in range(3):
        prefs.like(liked)
    after = (prefs.coords(prefs.sample(512, rng)) - target).norm(dim=1).mean()
    assert prefs.likes == 3
    assert after < 0.5 * before
    # coordinates outside the basis stay random: the stream keeps changing
    samples = prefs.sample(512, rng)
    rest = samples - (samples @ basis.T) @ basis
    assert rest.std() == pytest.approx(1.0, rel=0.1)
    prefs.dislike(liked)
    assert prefs.dislikes == 1
    prefs.reset()
    assert prefs.likes == 0 and prefs.point.abs().sum() == 0


def test_dislikes_push_keyframes_away():
    basis = torch.eye(64)[:8]
    prefs = Preferences(basis)
    disliked = torch.zeros(64)
    disliked[:8] = 2.0
    rng = torch.Generator().manual_seed(0)
    for _ in range(2):
        prefs.dislike(disliked)
    c = prefs.coords(prefs.sample(512, rng))
    assert (c.mean(0) < 0).all()  # moved away from the disliked corner


def test_renderer_matches_generator_and_truncation_zero_collapses(G):
    r = FrameRenderer(G, mean_samples=256)
    z = torch.stack([seed_latent(s, 64) for s in (1, 2)])
    frames = r.render(z, torch.ones(2))
    assert frames.shape == (2, 32, 32, 3) and frames.dtype == np.uint8
    with torch.inference_mode():
        expected = to_uint8(G(z))
    assert np.abs(frames.astype(int) - expected).max() <= 1
    collapsed = r.render(z, torch.zeros(2))
    assert np.array_equal(collapsed[0], collapsed[1])  # psi = 0: every latent gives the mean image
    assert not np.array_equal(frames[0], frames[1])


def test_renderer_splits_and_pads_batches_to_few_shapes(G):
    r = FrameRenderer(G, mean_samples=64, max_pixels=32 * 32 * 5)
    assert r.max_batch == 4  # a power of two
    shapes = set()
    original = r.net.embed
    r.net.embed = lambda z, labels: shapes.add(z.shape[0]) or original(z, labels)
    z = torch.randn(7, 64)
    got = r.render(z, torch.linspace(0.2, 1, 7))
    assert shapes == {4}  # 7 rows: 4, then 3 padded to 4
    with torch.inference_mode():
        expected = to_uint8(G.synthesize(truncate(G.embed(z), r.x4_mean, torch.linspace(0.2, 1, 7)), 3))
    assert got.shape == (7, 32, 32, 3) and np.abs(got.astype(int) - expected).max() <= 1
    assert FrameRenderer(G, mean_samples=64).max_batch == 16


def test_renderer_with_lod_renders_the_trained_resolution():
    G = demo_generator()
    G.lod = 1.5  # fading 16x16 in
    r = FrameRenderer(G, mean_samples=64)
    assert r.size == 16 and r.render(torch.randn(1, 64), torch.ones(1)).shape == (1, 16, 16, 3)


def test_session_applies_controls_and_renders_grid(G):
    r = FrameRenderer(G, mean_samples=64)
    got = []
    s = Session(r, lambda header, jpeg, png: got.append((header, jpeg, png)), seed=0)
    s.post({"type": "grid", "value": 3, "id": 4})
    s.apply_pending()
    assert s.steering.walk.lanes == 9 and s.ack == 4
    z, psi, cond, mean = s.next_latents()
    assert z.shape == (9, 64) and cond is None and mean is None
    assert s.post({"type": "like", "frame": s.seq + 1, "cell": 4})
    s.apply_pending()
    assert s.steering.prefs.likes == 1
    # a seed jump shows exactly the seeds' latents, one per cell
    s.post({"type": "seed", "value": 7})
    s.apply_pending()
    seeds = torch.stack([seed_latent(7, 64), seed_latent(8, 64)])
    torch.testing.assert_close(s.next_latents()[0][:2], normalize(seeds))
    assert s.header("frame")["seed"] == 7
    # the queue is bounded: a flood is dropped and counted, never unbounded memory
    s.max_pending = 3
    assert [s.post({"type": "shuffle"}) for _ in range(5)] == [True, True, True, False, False]
    assert s.stats.dropped == 2


def test_credits_bound_frames_in_flight():
    c = Credits(max_in_flight=2)
    assert c.reserve(0.0)
    assert not c.reserve(0.0)  # busy until the sender takes the frame
    c.frame_taken()
    assert c.reserve(0.0)
    c.frame_taken()
    assert not c.reserve(0.0)  # both credits spent
    assert c.give() and c.reserve(0.0)
    c.frame_taken()
    assert c.give(client_time=12.5) and c.give()
    assert not c.give()  # never more than max_in_flight credits
    assert c.ignored == 1 and c.last_client_time() == 12.5
    capped = Credits(max_in_flight=2, min_interval=0.1)
    assert capped.reserve(0.0) and capped.due_in(0.0) is None  # busy: waits for a wake-up, not a timer
    capped.frame_taken()
    assert capped.due_in(0.05) == pytest.approx(0.05) and not capped.reserve(0.05) and capped.reserve(0.1)
    capped.frame_taken()
    capped.close()
    assert not capped.reserve(1.0) and capped.due_in(1.0) is None


def test_tile_and_jpeg():
    images = np.arange(4 * 2 * 2 * 3, dtype=np.uint8).reshape(4, 2, 2, 3)
    grid = tile(images, 2)
    assert grid.shape == (4, 4, 3)
    assert np.array_equal(grid[:2, 2:], images[1]) and np.array_equal(grid[2:, :2], images[2])
    jpeg = encode_jpeg(np.zeros((8, 8, 3), np.uint8))
    assert Image.open(io.BytesIO(jpeg)).size == (8, 8)


def test_access_policy_requires_a_token_off_loopback():
    assert access_policy("127.0.0.1", None) == (True, None)
    assert access_policy("localhost", "abc") == (True, "abc")
    assert is_loopback("::1") and not is_loopback("0.0.0.0") and not is_loopback("example.org")
    loopback, token = access_policy("0.0.0.0", None)
    assert not loopback and token and len(token) >= 16
    assert access_policy("0.0.0.0", None)[1] != token  # random each time
    assert access_policy("192.168.1.5", "given") == (False, "given")
    with pytest.raises(ValueError):
        access_policy("0.0.0.0", "  ")


def test_render_pass_batches_sessions_and_reuses_frozen_frames():
    G = demo_generator(num_classes=3)
    r = FrameRenderer(G, mean_samples=64)
    loop = RenderLoop(r)
    got = {0: [], 1: []}
    a = Session(r, lambda h, jpeg, png: got[0].append((h, jpeg, png)), seed=0)
    b = Session(r, lambda h, jpeg, png: got[1].append((h, jpeg, png)), seed=1)
    b.post({"type": "grid", "value": 2})
    b.post({"type": "label", "value": 2})
    loop.render_pass([a, b], now=0.0)
    (ha, ja, _), (hb, jb, _) = got[0][-1], got[1][-1]
    assert ha["batch"] == hb["batch"] == 1 + 4  # one forward pass for both viewers
    assert Image.open(io.BytesIO(ja)).size == (32, 32) and Image.open(io.BytesIO(jb)).size == (64, 64)
    assert b.next_latents()[2].tolist() == [[0, 0, 1]] * 4  # the class reaches the generator as one-hot rows
    a.post({"type": "freeze", "value": True})
    a.post({"type": "save"})
    loop.render_pass([a], now=0.1)
    frozen_jpeg, png = got[0][-1][1], got[0][-1][2]
    assert png is not None and Image.open(io.BytesIO(png)).format == "PNG"
    renders = []
    original = r.render
    r.render = lambda *args: renders.append(1) or original(*args)
    loop.render_pass([a], now=0.5)
    assert got[0][-1][1] == frozen_jpeg and not renders  # nothing changed: the frame is reused, not re-rendered
    a.post({"type": "slider", "index": 0, "value": 3.0})
    loop.render_pass([a], now=0.6)
    assert renders and got[0][-1][1] != frozen_jpeg
