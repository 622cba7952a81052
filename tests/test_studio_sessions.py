"""Sessions and the render loop without a server: controls applied to a viewer's steering, credits, and render
passes that batch every viewer."""

import io

import pytest
import torch
from PIL import Image

from progan.generate import normalize, seed_latent
from progan.studio.renderer import FrameRenderer
from progan.studio.sessions import Credits, RenderLoop, Session
from tests.studio_helpers import random_generator

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def G():
    return random_generator()


def test_session_applies_controls_and_renders_grid(G):
    r = FrameRenderer(G, mean_samples=64)
    got = []
    s = Session(r, lambda header, jpeg, png: got.append((header, jpeg, png)), seed=0)
    s.post({"type": "grid", "value": 3, "id": 4})
    s.apply_pending()
    assert s.steering.walk.lanes == 9 and s.ack == 4
    z, psi, cond, mean, noise = s.next_latents()
    assert z.shape == (9, 64) and cond is None and mean is None and noise is None
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


def test_render_pass_batches_sessions_and_reuses_frozen_frames():
    G = random_generator(num_classes=3)
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
