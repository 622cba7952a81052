"""The studio server with real WebSocket clients: uvicorn runs in a background thread on a free port."""

import asyncio
import contextlib
import gc
import io
import json
import socket
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
import websockets
from PIL import Image

from progan.model_io import ModelLoadError, load_generator
from progan.generate import seed_latent
from progan.studio.frames import encode_jpeg, frames_to_uint8
from progan.studio.protocol import unpack_message
from progan.studio.server import (BackgroundServer, Outbox, Studio, StudioError, access_policy, is_loopback,
                                  run_studio)
from progan.studio.sessions import Credits, Session
from progan.studio.steering import Steering
from tests.studio_helpers import export_random_generator

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RES = 32


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return export_random_generator(tmp_path_factory.mktemp("studio"), resolution=RES, kimg=123.0)


@pytest.fixture(scope="module")
def G(model_dir):
    return load_generator(model_dir)


@pytest.fixture(scope="module")
def server(G):
    with BackgroundServer(Studio(G, seed=0)) as srv:
        yield srv


def ws_url(srv, query=""):
    return srv.url.replace("http://", "ws://") + "ws" + query


def decode(jpeg: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")).astype(int)


def render_seed(G, seed) -> np.ndarray:
    with torch.inference_mode():
        return frames_to_uint8(G(seed_latent(seed, G.latent_size).view(1, -1)))[0].astype(int)


class Viewer:
    """A test client: frames with their headers, text messages kept aside, controls with ids."""

    def __init__(self, ws):
        self.ws = ws
        self.texts = []
        self.pngs = []
        self.next_id = 1

    async def recv(self, timeout=10.0):
        return await asyncio.wait_for(self.ws.recv(), timeout)

    async def frame(self, credit=True, timeout=10.0):
        deadline = time.monotonic() + timeout  # text messages (stats every second) do not extend the wait
        while True:
            msg = await self.recv(max(0.0, deadline - time.monotonic()))
            if isinstance(msg, str):
                self.texts.append(json.loads(msg))
                continue
            header, payload = unpack_message(msg)
            if header["kind"] == "png":
                self.pngs.append((header, payload))
                continue
            if credit:
                await self.ws.send(json.dumps({"type": "credit"}))
            return header, payload

    async def control(self, type, **fields):
        cid = self.next_id
        self.next_id += 1
        await self.ws.send(json.dumps({"type": type, "id": cid, **fields}))
        return cid

    async def applied(self, type, timeout=60.0, **fields):
        """Send a control and return the first frame rendered after it was applied; AssertionError when no frame
        within `timeout` seconds acknowledges it (a control the rate limit dropped is never applied)."""
        cid = await self.control(type, **fields)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            header, payload = await self.frame(timeout=max(0.1, deadline - time.monotonic()))
            if header["ack"] is not None and header["ack"] >= cid:
                return header, payload
        raise AssertionError(f"the {type} control {cid} was not applied within {timeout} s")

    async def error(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, t in enumerate(self.texts):
                if t["type"] == "error":
                    return self.texts.pop(i)
            await self.frame(timeout=max(0.1, deadline - time.monotonic()))
        raise AssertionError("no error message arrived")


def run(coro_fn, *args):
    return asyncio.run(coro_fn(*args))


def test_frames_arrive_as_jpegs_of_the_model_resolution(server):
    async def main():
        async with websockets.connect(ws_url(server)) as ws:
            info = json.loads(await ws.recv())
            assert info["type"] == "info" and info["output_resolution"] == RES and info["kimg"] == 123.0
            assert info["parameters"] > 0 and info["sliders"] == 8
            v = Viewer(ws)
            seqs = []
            for _ in range(5):
                header, jpeg = await v.frame()
                assert jpeg[:2] == b"\xff\xd8"
                assert Image.open(io.BytesIO(jpeg)).size == (RES, RES)
                seqs.append(header["seq"])
            assert seqs == sorted(seqs) and len(set(seqs)) == 5
    run(main)


def test_page_assets_and_info(server):
    with urllib.request.urlopen(server.url) as r:
        html = r.read().decode()
        assert "default-src 'none'" in r.headers["Content-Security-Policy"]
    assert 'src="static/studio.js"' in html and "http" not in html.replace("http-equiv", "")
    for name in ("studio.js", "studio.css"):
        with urllib.request.urlopen(server.url + "static/" + name) as r:
            assert r.status == 200 and b"http://" not in r.read()
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(server.url + "static/..%2Fserver.py")
    assert e.value.code == 404
    with urllib.request.urlopen(server.url + "api/info") as r:
        assert json.loads(r.read())["resolution"] == RES


def test_freeze_seed_and_save(server, G):
    async def main():
        async with websockets.connect(ws_url(server)) as ws:
            v = Viewer(ws)
            await v.applied("speed", value=4.0)
            await v.applied("freeze", value=True)
            frames = [(await v.frame())[1] for _ in range(4)]
            assert all(f == frames[0] for f in frames)  # frozen: identical frames

            header, jpeg = await v.applied("seed", value=1234)
            assert header["seed"] == 1234
            expected, other = render_seed(G, 1234), render_seed(G, 99)
            got = decode(jpeg)
            # what G(z_seed) looks like through the same JPEG encoder (random weights make noisy, costly images)
            assert np.abs(got - decode(encode_jpeg(expected.astype(np.uint8)))).mean() < 1
            assert np.abs(got - other).mean() > 4 * np.abs(got - expected).mean()

            await v.control("save")
            while not v.pngs:
                await v.frame()
            png_header, png = v.pngs[0]
            assert png_header["seed"] == 1234
            exact = np.asarray(Image.open(io.BytesIO(png))).astype(int)
            assert np.abs(exact - expected).max() <= 1        # lossless: the render itself

            await v.applied("freeze", value=False)             # the walk goes on from the seed
            later = decode((await v.frame())[1])
            for _ in range(10):
                later = decode((await v.frame())[1])
            assert np.abs(later - expected).mean() > 1
    run(main)


def test_slider_and_truncation_move_the_image(server):
    async def main():
        async with websockets.connect(ws_url(server)) as ws:
            v = Viewer(ws)
            await v.applied("freeze", value=True)
            base = decode((await v.applied("seed", value=5))[1])
            moved = decode((await v.applied("slider", index=0, value=4.0))[1])
            assert np.abs(moved - base).mean() > 5
            back = decode((await v.applied("slider", index=0, value=0.0))[1])
            assert np.abs(back - base).mean() < 1
            # truncation 0 pulls every latent to the mean activation: different seeds, one image
            a = decode((await v.applied("truncation", value=0.0))[1])
            b = decode((await v.applied("seed", value=6))[1])
            assert np.array_equal(a, b)
            half = decode((await v.applied("truncation", value=0.5))[1])
            assert not np.array_equal(half, b)
    run(main)


def test_like_dislike_and_grid(server):
    async def main():
        async with websockets.connect(ws_url(server)) as ws:
            v = Viewer(ws)
            header, _ = await v.frame()
            h, _ = await v.applied("like", frame=header["seq"])
            assert h["likes"] == 1
            h, _ = await v.applied("dislike")
            assert h["dislikes"] == 1
            h, _ = await v.applied("reset_preferences")
            assert h["likes"] == 0 and h["dislikes"] == 0
            h, jpeg = await v.applied("grid", value=3)
            assert h["grid"] == 3 and Image.open(io.BytesIO(jpeg)).size == (3 * RES, 3 * RES)
            h, _ = await v.applied("like", frame=h["seq"], cell=8)
            assert h["likes"] == 1
            h, jpeg = await v.applied("grid", value=1)
            assert Image.open(io.BytesIO(jpeg)).size == (RES, RES)
    run(main)


def test_json_nesting_is_counted_outside_strings():
    from progan.studio.protocol import nesting_depth
    assert nesting_depth('{"type": "speed", "value": 1}') == 1
    assert nesting_depth('{"a": [1, {"b": "[[[{{ \\" ]]"}], "c": []}') == 3
    assert nesting_depth("[" * 1500 + "]" * 1500) == 1500


@pytest.fixture
def high_recursion_limit():
    """The interpreter's recursion limit above the nesting the next test sends, as torch.compile leaves it for the
    whole process: deep JSON must be refused whatever it is."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(5000)
    yield
    sys.setrecursionlimit(limit)


def test_bad_input_gets_errors_and_the_stream_goes_on(server, high_recursion_limit):
    bad = [
        ("not json", "malformed JSON"),
        ("[1, 2, 3]", "JSON object"),
        ('{"type": "teleport"}', "unknown message type"),
        ('{"type": "speed", "value": NaN}', "finite"),
        ('{"type": "speed", "value": Infinity}', "finite"),
        ('{"type": "speed", "value": 1e999}', "finite"),
        ('{"type": "truncation", "value": 7}', "[0, 1]"),
        ('{"type": "slider", "index": 99, "value": 1}', "slider.index"),
        ('{"type": "seed", "value": "abc"}', "integer"),
        ('{"type": "seed", "value": 1' + "0" * 4000 + "}", "seed.value"),
        ('{"type": "seed", "value": 1' + "0" * 5000 + "}", "too large"),
        ("[" * 3000 + "]" * 3000, "too large"),
        ("[" * 1500 + "]" * 1500, "malformed JSON"),
        ('{"type": "freeze"}', "missing field"),
        ('{"type": "speed", "value": 1, "extra": 2}', "unknown field"),
        ('{"type": "x", "pad": "' + "y" * 100_000 + '"}', "too large"),
    ]

    async def main():
        async with websockets.connect(ws_url(server)) as ws, websockets.connect(ws_url(server)) as bystander_ws:
            v, bystander = Viewer(ws), Viewer(bystander_ws)
            await v.frame()
            for text, fragment in bad:
                await ws.send(text)
                err = await v.error()
                assert fragment in err["message"], (text[:40], err)
            await ws.send(b"\x00\x01binary")
            assert "binary" in (await v.error())["message"]
            # a flood of controls: the excess is dropped and counted, the stream keeps flowing
            for i in range(1000):
                await ws.send(json.dumps({"type": "speed", "value": (i % 10) / 10}))
            err = await v.error()
            assert "too many controls" in err["message"] and err["dropped"] > 0
            for _ in range(5):
                await v.frame()
            await bystander.frame()
            # Controls work again once the flood is over: the server may still be reading its backlog, and the
            # rate limit refills at its own pace, so a control sent too soon may be dropped like the flood's.
            h = None
            for _ in range(20):
                with contextlib.suppress(AssertionError):
                    h, _ = await v.applied("speed", value=0.5, timeout=1.0)
                    break
            assert h is not None and h["ack"] is not None, "no control was applied in 20 s after the flood"
            # over the protocol limit (1 MiB) the connection is closed; the server lives on
            # the server may close while the send is still writing, so the send is inside the raises too
            with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                await ws.send("x" * (2 << 20))
                for _ in range(50):
                    await v.frame(timeout=5)
            assert closed.value.rcvd is None or closed.value.rcvd.code == 1009
            await bystander.frame()
        async with websockets.connect(ws_url(server)) as ws:
            await Viewer(ws).frame()
    run(main)


def test_credit_flow_control(server):
    async def main():
        async with websockets.connect(ws_url(server)) as ws:
            v = Viewer(ws)
            got = []
            with pytest.raises(asyncio.TimeoutError):
                while True:
                    got.append(await v.frame(credit=False, timeout=1.5))
            assert len(got) == 2  # never more than 2 frames in flight
            await ws.send(json.dumps({"type": "credit"}))
            got.append(await v.frame(credit=False, timeout=5))
            with pytest.raises(asyncio.TimeoutError):
                await v.frame(credit=False, timeout=0.7)
            assert len(got) == 3
            # a burst of credits never buys more than one frame per credit
            for _ in range(10):
                await ws.send(json.dumps({"type": "credit"}))
            with pytest.raises(asyncio.TimeoutError):
                while True:
                    got.append(await v.frame(credit=False, timeout=1.0))
            assert 3 + 2 <= len(got) <= 11 + 2
    run(main)


def test_token_required_off_loopback(G):
    studio = Studio(G, token="s3cret-token", loopback=False)
    with BackgroundServer(studio) as srv:
        async def main():
            for query in ("", "?token=wrong"):
                with pytest.raises(websockets.exceptions.InvalidStatus) as e:
                    async with websockets.connect(ws_url(srv, query)):
                        pass
                assert e.value.response.status_code == 403
            async with websockets.connect(ws_url(srv, "?token=s3cret-token")) as ws:
                await Viewer(ws).frame()
        run(main)
        for path in ("", "api/info", "stream.mjpg"):
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(srv.url + path)
            assert e.value.code == 403 and b"token" in e.value.read()
        with urllib.request.urlopen(srv.url + "?token=s3cret-token") as r:
            assert r.status == 200 and b"stream.mjpg?token=s3cret-token" in r.read()


def test_loopback_server_refuses_foreign_host_and_origin(server):
    req = urllib.request.Request(server.url, headers={"Host": "evil.example:80"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req)
    assert e.value.code == 403

    async def main():
        with pytest.raises(websockets.exceptions.InvalidStatus):
            async with websockets.connect(ws_url(server), origin="http://evil.example"):
                pass
    run(main)


def test_mjpeg_fallback_streams_and_frees_its_session(server):
    studio_loop = server.studio.render_loop
    before = studio_loop.count()
    host, port = server.host, server.port
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(f"GET /stream.mjpg?fps=30&grid=2&seed=3 HTTP/1.0\r\nHost: {host}:{port}\r\n\r\n".encode())
        data = b""
        while data.count(b"--frame") < 3:
            chunk = s.recv(65536)
            assert chunk
            data += chunk
        assert b"multipart/x-mixed-replace; boundary=frame" in data
        part = data.split(b"--frame\r\n")[1]
        head, body = part.split(b"\r\n\r\n", 1)
        length = int(head.split(b"Content-Length: ")[1])
        assert Image.open(io.BytesIO(body[:length])).size == (2 * RES, 2 * RES)
        assert studio_loop.count() == before + 1
    deadline = time.monotonic() + 10
    while studio_loop.count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert studio_loop.count() == before
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(server.url + "stream.mjpg?fps=abc")
    assert e.value.code == 400


def test_bad_model_path_is_a_clear_error_at_startup(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        run_studio(tmp_path / "nope", port=0)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelLoadError, match="not a progan model"):
        run_studio(tmp_path / "notes.txt", port=0)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def test_twenty_clients_for_twenty_seconds_with_steady_memory(server):
    """20 viewers at once, a quarter of them reconnecting every few seconds, all sending controls."""
    loop_ = server.studio.render_loop
    counts = [0] * 20
    samples = []

    async def viewer(i, stop_at):
        while time.monotonic() < stop_at:
            async with websockets.connect(ws_url(server)) as ws:
                v = Viewer(ws)
                reconnect_at = time.monotonic() + (3.0 if i % 4 == 0 else 1e9)
                n = 0
                while time.monotonic() < min(stop_at, reconnect_at):
                    await v.frame(timeout=15)
                    counts[i] += 1
                    n += 1
                    if n % 10 == 0:
                        await v.control("slider", index=i % 8, value=float((n // 10) % 5 - 2))
                    if n % 25 == 0:
                        await v.control("grid", value=1 + (n // 25) % 2)

    async def monitor(start, stop_at):
        while time.monotonic() < stop_at:
            await asyncio.sleep(1.0)
            samples.append((time.monotonic() - start, rss_mb()))

    async def main():
        start = time.monotonic()
        stop_at = start + 20
        await asyncio.gather(monitor(start, stop_at), *(viewer(i, stop_at) for i in range(20)))

    run(main)
    # RSS swings by +-10 MB with the batch size; a leak shows as a trend from the early to the late window.
    early = np.mean([mb for t, mb in samples if 5 <= t < 10])
    late = np.mean([mb for t, mb in samples if t >= 15])
    assert late - early < 15, f"RSS grew {late - early:.1f} MB after warm-up: {samples}"
    assert min(counts) >= 20, counts  # every viewer kept getting frames
    deadline = time.monotonic() + 10
    while loop_.count() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert loop_.count() == 0  # disconnects free their sessions...
    while True:  # ...and nothing keeps them, once the last handlers have returned
        gc.collect()
        left = sum(type(o) in (Session, Steering, Credits, Outbox) for o in gc.get_objects())
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert left == 0
    assert loop_.errors == 0


def test_port_in_use_and_full_studio_are_clear(G, server):
    with pytest.raises(StudioError, match="cannot listen"):
        BackgroundServer(server.studio, port=server.port)
    with BackgroundServer(Studio(G, max_clients=1)) as srv:
        async def main():
            async with websockets.connect(ws_url(srv)) as first:
                await Viewer(first).frame()
                async with websockets.connect(ws_url(srv)) as second:
                    msg = json.loads(await second.recv())
                    assert msg["type"] == "error" and "full" in msg["message"]
                    with pytest.raises(websockets.exceptions.ConnectionClosed) as e:
                        await second.recv()
                    assert e.value.rcvd.code == 1013
                await Viewer(first).frame()  # the first viewer is not disturbed
        run(main)


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
