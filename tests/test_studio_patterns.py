"""Patterns and the offline show: the latent maths (pure, seeded), the layouts' geometry, the studio's frames against
the offline render's, taste profiles, and `progan generate --pattern`."""

import asyncio
import json
import math
import time

import numpy as np
import pytest
import torch
import websockets
from PIL import Image

from progan.cli import main as progan
from progan.model_io import load_generator
from progan.studio.frames import encode_jpeg
from progan.studio.patterns import (COUPLING, Anchors, Pattern, PatternError, compose, field_latents, loop_latents,
                                    parse_pattern, source_coords)
from progan.studio.protocol import unpack_message
from progan.studio.renderer import FrameRenderer
from progan.studio.server import BackgroundServer, Studio
from progan.studio.show import ShowError, ShowSettings, parse_size, show_frame, show_frames
from progan.studio.taste import Preferences, TasteError, read_profile
from tests.studio_helpers import export_random_generator

pytestmark = pytest.mark.usefixtures("one_torch_thread")

L = 64


def cos(a, b):
    return float((a @ b) / (a.norm() * b.norm()))


# -- the motions --------------------------------------------------------------------------------------------------

def test_field_is_seeded_gaussian_and_smooth_in_time():
    a = field_latents(3, 1.37, 4, 0.5, Anchors(L))
    assert torch.equal(a, field_latents(3, 1.37, 4, 0.5, Anchors(L)))  # a function of (seed, phase): no hidden state
    assert not torch.equal(a, field_latents(4, 1.37, 4, 0.5, Anchors(L)))
    # every cell an ordinary N(0, I) latent, blended or not (unit-norm weights over independent anchors)
    many = torch.cat([field_latents(s, 0.41 + s, 4, 0.5, Anchors(L)) for s in range(8)])
    assert many.std().item() == pytest.approx(1.0, abs=0.05)
    assert many.norm(dim=1).mean().item() == pytest.approx(math.sqrt(L), rel=0.05)
    prev, biggest = field_latents(3, 0.0, 3, 0.5, Anchors(L)), 0.0
    anchors = Anchors(L)
    for k in range(1, 200):  # across several lattice steps in time and drift
        here = field_latents(3, k * 0.02, 3, 0.5, anchors)
        biggest = max(biggest, (here - prev).norm(dim=1).max().item())
        prev = here
    assert biggest < 1.5  # no jumps (between independent latents: about sqrt(2 L) = 11)


def test_field_coupling_makes_neighbours_relatives():
    def neighbour_cos(coupling):
        z = field_latents(1, 0.0, 6, coupling, Anchors(L)).view(6, 6, L)
        return np.mean([cos(z[r, c], z[r, c + 1]) for r in range(6) for c in range(5)])

    assert abs(neighbour_cos(0.0)) < 0.2     # at phase 0 every cell sits on its own anchor: unrelated
    assert neighbour_cos(0.5) > 0.3
    assert neighbour_cos(COUPLING[1]) > 0.95  # almost one image across the wall
    z = field_latents(1, 0.0, 6, 0.8, Anchors(L)).view(6, 6, L)
    assert cos(z[0, 0], z[0, 1]) > cos(z[0, 0], z[0, 5])  # relatives fade with distance


def test_loop_closes_without_a_seam():
    anchors = Anchors(L)
    start = loop_latents(9, 0.0, 4, anchors)
    torch.testing.assert_close(start.norm(dim=1), torch.full((4,), math.sqrt(L)))
    torch.testing.assert_close(loop_latents(9, 1.0, 4, anchors), start)
    torch.testing.assert_close(loop_latents(9, 2.25, 4, anchors), loop_latents(9, 0.25, 4, anchors))
    near_end = loop_latents(9, 1 - 1 / 240, 4, anchors)  # the last frame of a 240-frame loop
    step = (loop_latents(9, 1 / 240, 4, anchors) - start).norm(dim=1)
    torch.testing.assert_close((near_end - start).norm(dim=1), step, atol=1e-4, rtol=0)  # the wrap is one step
    half = loop_latents(9, 0.5, 4, anchors)
    torch.testing.assert_close(half, -start, atol=1e-4, rtol=0)  # a great circle: opposite at half a turn


def test_parse_pattern_names_the_choices():
    assert parse_pattern("field") == Pattern("field", "plain")
    assert parse_pattern("mirror") == Pattern("walk", "mirror")
    assert parse_pattern("loop+kaleidoscope6", period=4) == Pattern("loop", "kaleidoscope6", period=4.0)
    assert parse_pattern("Tile+Field").name == "field+tile"
    with pytest.raises(PatternError, match="unknown 'spiral'; motions: walk, field, loop; layouts: plain, mirror"):
        parse_pattern("spiral")
    with pytest.raises(PatternError, match=r"coupling must be in \[0, 0.95\], got 2"):
        parse_pattern("field", coupling=2)
    with pytest.raises(PatternError, match=r"period must be in \[1, 600\] seconds"):
        parse_pattern("loop", period=0)
    with pytest.raises(PatternError, match="motion\\+layout"):
        parse_pattern("field+loop+tile")


# -- the layouts ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def picture():
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((32, 32), Image.BILINEAR))


def test_layout_symmetries(picture):
    mirror = compose(picture, "mirror", 160, 90).astype(int)
    assert np.abs(mirror - mirror[:, ::-1]).max() <= 1
    kaleido = compose(picture, "kaleidoscope", 120, 120).astype(int)
    assert np.abs(kaleido - kaleido[::-1]).max() <= 1 and np.abs(kaleido - kaleido[:, ::-1]).max() <= 1
    plain = compose(picture, "plain", 160, 90).astype(int)
    assert np.abs(plain - plain[:, ::-1]).mean() > 20  # the control: a plain frame is not symmetric
    assert plain[:, :30].max() == 0  # letterboxed: the square frame, as large as fits, black beside it
    # six-fold: a point and the same point turned by 60 degrees sample the same place of the frame
    u, v, _ = source_coords("kaleidoscope6", 201, 201)
    for x, y in [(150, 110), (60, 40), (120, 180)]:
        px, py = x - 100, y - 100
        a = math.pi / 3
        rx, ry = round(100 + px * math.cos(a) - py * math.sin(a)), round(100 + px * math.sin(a) + py * math.cos(a))
        assert abs(u[y, x] - u[ry, rx]) < 0.02 and abs(v[y, x] - v[ry, rx]) < 0.02
    six = compose(picture, "kaleidoscope6", 201, 201).astype(int)
    assert np.abs(six - six[::-1]).max() <= 1  # mirror lines through the centre
    # tile: a mirrored wallpaper, TILES copies across the shorter side, edges meeting
    tile = compose(picture, "tile", 128, 128).astype(int)
    assert np.abs(tile[:, :64] - tile[:, 64:]).max() <= 1  # period: two copies (one mirrored pair)
    assert np.abs(tile[:, 32:48] - tile[:, 48:64][:, ::-1]).max() <= 1  # copies meet mirrored (at 48: centred)


def test_layout_upscale_is_smooth(picture):
    big = compose(picture, "plain", 256, 256).astype(int)
    # bilinear: neighbouring pixels inside a source pixel differ; nearest-neighbour would repeat blocks of 8x8
    blocks = big.reshape(32, 8, 32, 8, 3)
    assert (blocks.max(axis=(1, 3)) - blocks.min(axis=(1, 3))).mean() > 3
    with pytest.raises(PatternError, match="unknown layout 'spiral'"):
        source_coords("spiral", 4, 4)


# -- the studio and the offline render ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return export_random_generator(tmp_path_factory.mktemp("patterns"), resolution=16, latent_size=L, fmap_base=256, fmap_max=32)


@pytest.fixture(scope="module")
def G(model_dir):
    return load_generator(model_dir)


@pytest.fixture(scope="module")
def server(G):
    with BackgroundServer(Studio(G, seed=0)) as srv:
        yield srv


class Client:
    def __init__(self, ws):
        self.ws, self.texts, self.next_id = ws, [], 1

    async def frame(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            msg = await asyncio.wait_for(self.ws.recv(), max(0.01, deadline - time.monotonic()))
            if isinstance(msg, str):
                self.texts.append(json.loads(msg))
                continue
            header, payload = unpack_message(msg)
            await self.ws.send(json.dumps({"type": "credit"}))
            if header["kind"] == "frame":
                return header, payload

    async def applied(self, type, **fields):
        cid = self.next_id
        self.next_id += 1
        await self.ws.send(json.dumps({"type": type, "id": cid, **fields}))
        while True:
            header, payload = await self.frame()
            if header["ack"] is not None and header["ack"] >= cid:
                return header, payload

    async def text(self, kind, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, t in enumerate(self.texts):
                if t["type"] == kind:
                    return self.texts.pop(i)
            await self.frame()
        raise AssertionError(f"no {kind} message arrived")


def ws_url(srv):
    return srv.url.replace("http://", "ws://") + "ws"


def test_offline_frames_are_the_studios_frames(server, G):
    """The studio's JPEGs, byte for byte, against the offline render's frames at the phase each header names; with
    a like (the taste, saved and loaded into the offline render) and a slider-free, untruncated stream."""
    offline = FrameRenderer(G)  # a renderer of its own, as `progan generate` makes

    async def main():
        async with websockets.connect(ws_url(server)) as ws:
            c = Client(ws)
            await c.applied("grid", value=3)
            await c.applied("pattern", motion="field", coupling=0.7)
            await c.applied("speed", value=2.0)
            header, _ = await c.applied("seed", value=77)
            assert header["pattern"] == "field" and header["show_seed"] == 77
            checked = 0
            for _ in range(6):
                header, jpeg = await c.frame()
                frame = show_frame(offline, Pattern("field", coupling=0.7), 77, header["phase"], 3,
                                   Anchors(L), Preferences(offline.pref_basis))
                assert encode_jpeg(frame) == jpeg
                checked += header["phase"] > 0
            assert checked  # the field was moving, not only at its start

            await c.applied("like", cell=4)
            await c.applied("pattern", motion="loop", period=3.0)
            await c.applied("save_taste")
            profile = (await c.text("taste"))["profile"]
            assert profile["likes"] == 1 and profile["format"] == "progan-taste-1"
            prefs = Preferences(offline.pref_basis)
            prefs.load_profile(json.loads(json.dumps(profile)), offline.taste_model)
            for _ in range(4):
                header, jpeg = await c.frame()
                assert header["pattern"] == "loop" and 0 <= header["phase"] < 1
                frame = show_frame(offline, Pattern("loop", period=3.0), 77, header["phase"], 3, Anchors(L), prefs)
                assert encode_jpeg(frame) == jpeg
            # a fresh seed starts the show at its beginning: frame 0 of the offline render
            await c.applied("freeze", value=True)
            header, jpeg = await c.applied("seed", value=5)
            assert header["phase"] == 0.0
            settings = ShowSettings(Pattern("loop", period=3.0), seed=5, seconds=1, fps=10, size=(48, 48), grid=3)
            first = next(show_frames(offline, settings, prefs))
            assert encode_jpeg(first) == jpeg  # plain layout at the frame's own size: the frame itself
    asyncio.run(main())


def test_taste_profile_survives_a_restart(G, tmp_path):
    """Liked in one studio, saved to a file, loaded by a new one (as `progan studio --taste` does)."""
    async def like_and_save(srv):
        async with websockets.connect(ws_url(srv)) as ws:
            c = Client(ws)
            await c.applied("like")
            await c.applied("like")
            await c.applied("dislike")
            await c.applied("save_taste")
            return (await c.text("taste"))["profile"]

    with BackgroundServer(Studio(G, seed=1)) as srv:
        profile = asyncio.run(like_and_save(srv))
    path = tmp_path / "taste.json"
    path.write_text(json.dumps(profile))
    studio = Studio(G, seed=2, taste=read_profile(path))
    session = studio.new_session(lambda *a: None)
    prefs = session.steering.prefs
    assert (prefs.likes, prefs.dislikes) == (2, 1)
    assert prefs.point.tolist() == pytest.approx(profile["point"], abs=1e-6)

    async def load_back(srv):
        async with websockets.connect(ws_url(srv)) as ws:
            c = Client(ws)
            header, _ = await c.applied("load_taste", profile=profile)
            assert (header["likes"], header["dislikes"]) == (2, 1)
            await ws.send(json.dumps({"type": "load_taste", "profile": {**profile, "point": [1.0]}}))
            err = await c.text("error")
            assert "point must be" in err["message"] and err["about"] == "load_taste"
            other = {**profile, "model": {**profile["model"], "latent_size": 512}}
            await ws.send(json.dumps({"type": "load_taste", "profile": other}))
            assert "for another model" in (await c.text("error"))["message"]
            header, _ = await c.frame()
            assert (header["likes"], header["dislikes"]) == (2, 1)  # a bad profile changes nothing

    with BackgroundServer(Studio(G, seed=3)) as srv:
        asyncio.run(load_back(srv))
    with pytest.raises(TasteError, match="not a taste profile"):
        Studio(G, taste={"likes": 3})
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(TasteError, match="bad.json is not a taste profile"):
        read_profile(tmp_path / "bad.json")


def test_show_limits_are_named():
    with pytest.raises(ShowError, match=r"--size 99999x720: each side must be in \[1, 4096\]"):
        ShowSettings(size=(99999, 720)).check()
    with pytest.raises(ShowError, match=r"--seconds 1e\+06: must be in \(0, 3600\]"):
        ShowSettings(seconds=1e6).check()
    with pytest.raises(ShowError, match="at most 216000"):
        ShowSettings(seconds=3600, fps=120).check()
    with pytest.raises(ShowError, match="WIDTHxHEIGHT"):
        parse_size("big")
    assert parse_size("1280x720") == (1280, 720)


def test_generate_pattern_writes_the_show(model_dir, G, tmp_path, capsys):
    video = tmp_path / "show.mp4"
    assert progan(["generate", str(model_dir), "--pattern", "loop+mirror", "--period", "2", "--seconds", "1",
                   "--fps", "6", "--size", "96x64", "--cells", "2", "--seed", "11", "--video", str(video),
                   "--device", "cpu"]) == 0
    assert "loop+mirror, seed 11, 2x2 cells: 6 frames" in capsys.readouterr().out
    import imageio_ffmpeg
    reader = imageio_ffmpeg.read_frames(str(video))
    meta = reader.__next__()
    assert meta["size"] == (96, 64)

    def blur(f):  # 4x4 means: H.264 at 4:2:0 smears a random-weight model's pixel noise, not the picture
        return f.reshape(16, 4, 24, 4, 3).mean(axis=(1, 3))

    got = [blur(np.frombuffer(f, np.uint8).reshape(64, 96, 3).astype(float)) for f in reader]
    settings = ShowSettings(parse_pattern("loop+mirror", period=2), seed=11, seconds=1, fps=6, size=(96, 64), grid=2)
    want = [blur(f.astype(float)) for f in show_frames(FrameRenderer(G), settings)]
    assert len(got) == len(want) == 6
    for g, w in zip(got, want):
        assert np.abs(g - w).mean() < 5  # H.264 is lossy; the frames are those of the show
    assert np.abs(got[0] - want[3]).mean() > 2 * np.abs(got[0] - want[0]).mean()  # and in their order

    gif = tmp_path / "show.gif"
    assert progan(["generate", str(model_dir), "--pattern", "field", "--seconds", "0.5", "--fps", "4", "--size",
                   "40x40", "--video", str(gif), "--device", "cpu"]) == 0
    assert Image.open(gif).n_frames == 2

    assert progan(["generate", str(model_dir), "--pattern", "field", "--size", "100000x100000", "--video",
                   str(gif), "--device", "cpu"]) == 2
    assert "each side must be in [1, 4096]" in capsys.readouterr().err
    assert progan(["generate", str(model_dir), "--pattern", "spiral", "--video", str(gif)]) == 2
    assert "unknown 'spiral'" in capsys.readouterr().err
    assert progan(["generate", str(model_dir), "--pattern", "loop", "--video", str(tmp_path / "x.avi"),
                   "--seconds", "0.1", "--device", "cpu"]) == 2
    assert "must end in .mp4 or .gif" in capsys.readouterr().err
