"""The studio's web server: one asyncio process (Starlette on uvicorn) serving an Engine's page, a WebSocket per
viewer and an MJPEG fallback. Rendering and prompt reading happen on threads of the engine (engine.py); this module
only moves bytes, validates controls and enforces limits.

The WebSocket's messages are described, validated and packed by protocol.py.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import html
import ipaddress
import itertools
import json
import logging
import math
import os
import secrets
import socket
import threading
import time
import webbrowser
from pathlib import Path
from urllib.parse import quote, urlsplit

import torch
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from progan.model_io import load_generator
from progan.networks import Generator
from progan.studio.engine import Engine
from progan.studio.patterns import Pattern
from progan.studio.protocol import MAX_NESTING, ControlError, nesting_depth, number, pack_message, parse_control, short
from progan.studio.sessions import Session
from progan.studio.setlist import Entry, SetlistError, parse_setlist
from progan.conditioning.encoder import TextEncoder, TextEncoderMissing
from progan.conditioning.prompts import PromptError
from progan.conditioning.spec import ConditionError

log = logging.getLogger("progan.studio")

STATIC = Path(__file__).parent / "static"
PAGE_FILES = {"studio.js": "text/javascript; charset=utf-8", "studio.css": "text/css; charset=utf-8"}
# The page loads nothing from anywhere but this server; media: a song the viewer picks, played from the page's memory.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; media-src blob:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

class StudioError(ValueError):
    """A studio that cannot start (for example, the port is taken)."""


class TokenBucket:
    """Rate limit: `rate` tokens a second, up to `burst` saved."""

    def __init__(self, rate: float, burst: float):
        self.rate, self.burst = rate, burst
        self.tokens, self.time = burst, time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.time) * self.rate)
        self.time = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------------------------------

class Outbox:
    """What the event loop still has to send to one viewer: a latest-frame slot, saved PNGs and text messages.

    The render thread fills it through `sink`, which hops onto the event loop; one sender task empties it, so
    frames and text never interleave mid-message.
    """

    MAX_TEXTS = 64

    def __init__(self, loop: asyncio.AbstractEventLoop, packed: bool = True):
        self.loop, self.packed = loop, packed
        self.event = asyncio.Event()
        self.frame: bytes | None = None
        self.pngs: collections.deque = collections.deque(maxlen=4)
        self.texts: collections.deque = collections.deque(maxlen=self.MAX_TEXTS)
        self.sent = 0
        self.errors = 0
        self.read_ms: float | None = None  # how long the latest prompt took to read (encode and fit)
        self.rate_limited = 0
        self._error_replies = TokenBucket(rate=10, burst=30)
        self._last_limit_notice = 0.0

    def sink(self, header: dict, jpeg: bytes, png: bytes | None) -> None:
        """Called on the render thread."""
        frame = pack_message(header, jpeg) if self.packed else jpeg
        png_msg = None if png is None else pack_message({**header, "kind": "png"}, png)
        try:
            self.loop.call_soon_threadsafe(self._put, frame, png_msg)
        except RuntimeError:  # the event loop is gone: the server is shutting down
            pass

    def _put(self, frame: bytes, png: bytes | None) -> None:
        self.frame = frame
        if png is not None:
            self.pngs.append(png)
        self.event.set()

    def text(self, obj: dict) -> None:
        self.texts.append(json.dumps(obj, separators=(",", ":")))
        self.event.set()

    def notice(self, obj: dict) -> None:
        """A text message from the render thread."""
        try:
            self.loop.call_soon_threadsafe(self.text, obj)
        except RuntimeError:  # the event loop is gone
            pass

    def error(self, message: str, about: str | None = None) -> None:
        """Answer a bad message (about 10 answers a second at most; beyond that they are only counted); `about`:
        the type of the control it was, so the page can show it beside that control."""
        self.errors += 1
        if self._error_replies.take():
            self.text({"type": "error", "message": message, "errors": self.errors,
                       **({"about": about} if about else {})})

    def limited(self, rate: float) -> None:
        self.rate_limited += 1
        now = time.monotonic()
        if now - self._last_limit_notice >= 1.0:
            self._last_limit_notice = now
            self.text({"type": "error", "message": f"too many controls: over {rate:g} a second are dropped "
                       f"({self.rate_limited} so far)", "errors": self.errors, "dropped": self.rate_limited})


class Studio(Engine):
    """An Engine served over the web: a Starlette app (`.app`) whose lifespan starts and stops the engine. `token`:
    when set, every request must carry it (?token=...). `loopback`: the server listens on a loopback address only,
    so requests must name it in their Host header (defeats DNS rebinding). `text_encoder` and the other engine
    settings: see Engine."""

    MAX_READINGS = 2  # prompts of one viewer waiting to be read

    def __init__(self, G: Generator, *, token: str | None = None, loopback: bool = True, jpeg_quality: int = 80,
                 max_clients: int = 32, sliders: int = 8, seed: int | None = None, control_rate: float = 100.0,
                 control_burst: float = 200.0, max_message: int = 4096, mjpeg_fps: float = 25.0,
                 text_encoder: TextEncoder | str | os.PathLike | None = None, pattern: Pattern = Pattern(),
                 taste: dict | None = None, setlist: list[Entry] | None = None, setlist_name: str = "setlist",
                 condition_noise: bool = False, reading: str = "draw"):
        super().__init__(G, sliders=sliders, jpeg_quality=jpeg_quality, max_clients=max_clients, seed=seed,
                         text_encoder=text_encoder, pattern=pattern, taste=taste, setlist=setlist,
                         setlist_name=setlist_name, condition_noise=condition_noise, reading=reading)
        self.token, self.loopback = token, loopback
        self.control_rate, self.control_burst, self.max_message = control_rate, control_burst, max_message
        self.mjpeg_fps = mjpeg_fps
        self._static = {name: (STATIC / name).read_bytes() for name in ["index.html", *PAGE_FILES]}
        self.app = Starlette(routes=[
            Route("/", self.page),
            Route("/static/{name}", self.static),
            Route("/api/info", self.api_info),
            Route("/stream.mjpg", self.mjpeg),
            WebSocketRoute("/ws", self.websocket),
        ], lifespan=self._lifespan)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app):
        self.start()
        try:
            yield
        finally:
            self.stop()

    # -- prompts ------------------------------------------------------------------------------------------------
    async def _prompt(self, cmd: dict, outbox: Outbox, session: Session) -> None:
        """Read a prompt off the event loop, then hand it to the render thread. One that nothing in the data is close
        to plays as it was read, as `progan generate` renders it, and the viewer is told so."""
        text = cmd["text"]
        t0 = time.perf_counter()
        try:
            reading = await asyncio.wrap_future(self.reader.submit(self.read_prompt, text))
            outbox.read_ms = (time.perf_counter() - t0) * 1e3
        except (PromptError, ConditionError, TextEncoderMissing) as e:
            outbox.error(f"prompt {short(text)}: {e}", about="prompt")
            return
        except RuntimeError:  # the reader was shut down: the studio is stopping
            return
        except Exception as e:  # a broken encoder must not take the connection down
            log.exception("studio: reading prompt %r failed", text)
            outbox.error(f"prompt {short(text)} could not be read: {type(e).__name__}: {e}", about="prompt")
            return
        if reading.off_data:
            outbox.text({"type": "notice", "message": f"{short(text)}: {reading.describe()}; played as read",
                         "text": text, "reading": reading.describe()})
        if session.post({**cmd, "reading": reading}):
            self.render_loop.wake()
        else:
            outbox.error("too many controls waiting to be applied; this one was dropped", about="prompt")

    async def _setlist(self, cmd: dict, outbox: Outbox, session: Session) -> None:
        """Parse a setlist from the page, read its prompts off the event loop, then hand it to the render thread."""
        where = cmd.get("name") or "the setlist"
        try:
            entries = parse_setlist(cmd["text"], where)
            if self.reader is not None and any(e.kind == "prompt" for e in entries):
                targets = await asyncio.wrap_future(self.reader.submit(self.resolve_setlist, entries, where))
            else:
                targets = self.resolve_setlist(entries, where)
        except SetlistError as e:
            outbox.error(str(e), about="setlist")
            return
        except RuntimeError:  # the reader was shut down: the studio is stopping
            return
        if session.post({**cmd, "entries": targets}):
            self.render_loop.wake()
        else:
            outbox.error("too many controls waiting to be applied; this one was dropped", about="setlist")

    # -- access -------------------------------------------------------------------------------------------------
    def _refusal(self, conn) -> str | None:
        """Why this request may not proceed, or None."""
        headers = conn.headers
        host = headers.get("host", "")
        if self.loopback and not self.token:
            hostname = urlsplit(f"//{host}").hostname or ""
            if not is_loopback(hostname):
                return f"host {host!r} is not a loopback name; open the studio at 127.0.0.1 or localhost"
        origin = headers.get("origin")
        if origin and origin != "null" and urlsplit(origin).netloc != host:
            return f"cross-origin request from {origin!r} refused"
        if self.token:
            given = conn.query_params.get("token", "")
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                return "missing or wrong access token: open the URL that progan studio printed (it ends in ?token=...)"
        return None

    # -- HTTP ---------------------------------------------------------------------------------------------------
    async def page(self, request: Request) -> Response:
        if reason := self._refusal(request):
            return PlainTextResponse(reason + "\n", status_code=403)
        query = "?token=" + quote(self.token, safe="") if self.token else ""
        body = self._static["index.html"].replace(b"{{query}}", html.escape(query).encode())
        return Response(body, media_type="text/html; charset=utf-8",
                        headers={"Content-Security-Policy": CSP, "Referrer-Policy": "no-referrer",
                                 "Cache-Control": "no-store"})

    async def static(self, request: Request) -> Response:
        # The script and style sheet hold no secrets; the token guards the model's page, info and frames.
        name = request.path_params["name"]
        if name not in PAGE_FILES:
            return PlainTextResponse("not found\n", status_code=404)
        return Response(self._static[name], media_type=PAGE_FILES[name], headers={"Cache-Control": "no-cache"})

    async def api_info(self, request: Request) -> Response:
        if reason := self._refusal(request):
            return PlainTextResponse(reason + "\n", status_code=403)
        return JSONResponse(self.info())

    async def mjpeg(self, request: Request) -> Response:
        """multipart/x-mixed-replace JPEG stream for viewers without JavaScript; query: seed, speed, truncation,
        grid, fps. TCP back-pressure paces it: one frame in flight, at most `fps` a second."""
        if reason := self._refusal(request):
            return PlainTextResponse(reason + "\n", status_code=403)
        try:
            commands, fps = self._mjpeg_options(request.query_params)
        except ControlError as e:
            return PlainTextResponse(f"{e}\n", status_code=400)
        if self.full():
            return PlainTextResponse("the studio is full; try again later\n", status_code=503)
        outbox = Outbox(asyncio.get_running_loop(), packed=False)
        session = self.new_session(outbox.sink, max_in_flight=1, min_interval=1 / fps)
        for cmd in commands:
            session.post(cmd)

        async def parts():
            self.render_loop.add(session)  # here, so that a response never started never holds a session
            try:
                while True:
                    await outbox.event.wait()
                    outbox.event.clear()
                    if outbox.frame is None:
                        continue
                    jpeg, outbox.frame = outbox.frame, None
                    session.credits.frame_taken()
                    yield (b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: " + str(len(jpeg)).encode()
                           + b"\r\n\r\n" + jpeg + b"\r\n")
                    outbox.sent += 1
                    session.credits.give()
                    self.render_loop.wake()
            finally:
                self.render_loop.remove(session)

        return StreamingResponse(parts(), media_type="multipart/x-mixed-replace; boundary=frame",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    def _mjpeg_options(self, query) -> tuple[list[dict], float]:
        def convert(key, kind):
            try:
                return kind(query[key])
            except ValueError:
                raise ControlError(f"{key} must be {'an integer' if kind is int else 'a number'}, "
                                   f"got {short(query[key])}") from None

        commands = [parse_control({"type": key, "value": convert(key, kind)}, self.renderer.controls)
                    for key, kind in (("speed", float), ("truncation", float), ("grid", int), ("seed", int))
                    if key in query]
        fps = number(0.5, 60.0)("fps", convert("fps", float)) if "fps" in query else self.mjpeg_fps
        return commands, fps

    # -- WebSocket ----------------------------------------------------------------------------------------------
    async def websocket(self, ws: WebSocket) -> None:
        if self._refusal(ws):
            await ws.close(code=1008)  # before accept: the handshake is refused with HTTP 403
            return
        await ws.accept()
        if self.full():
            await ws.send_text(json.dumps({"type": "error", "message": "the studio is full; try again later"}))
            await ws.close(code=1013)
            return
        outbox = Outbox(asyncio.get_running_loop())
        session = self.new_session(outbox.sink, notice=outbox.notice)
        outbox.text({"type": "info", **self.info()})
        self.render_loop.add(session)
        readings: set[asyncio.Task] = set()  # prompts being read, cancelled with the connection
        tasks = [asyncio.create_task(self._receive(ws, outbox, session, readings)),
                 asyncio.create_task(self._send(ws, outbox, session))]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and task.exception() is not None and not _is_disconnect(task.exception()):
                    log.error("studio connection failed", exc_info=task.exception())
        finally:
            self.render_loop.remove(session)  # disconnects free everything the session held
            for task in [*tasks, *readings]:
                task.cancel()
            for task in [*tasks, *readings]:
                with contextlib.suppress(BaseException):
                    await task

    async def _receive(self, ws: WebSocket, outbox: Outbox, session: Session, readings: set) -> None:
        bucket = TokenBucket(self.control_rate, self.control_burst)
        for n in itertools.count(1):
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                return
            if n % 64 == 0:
                await asyncio.sleep(0)  # a flood of messages must not starve the other viewers
            text = msg.get("text")
            if text is None:
                outbox.error("binary messages are not accepted; send JSON text")
                continue
            if len(text) > self.max_message:
                outbox.error(f"message of {len(text)} characters is too large (limit {self.max_message})")
                continue
            if nesting_depth(text) > MAX_NESTING:
                outbox.error(f"malformed JSON: nested deeper than {MAX_NESTING} levels")
                continue
            try:
                obj = json.loads(text)
            except (ValueError, RecursionError) as e:
                outbox.error(f"malformed JSON: {short(str(e))}")
                continue
            if isinstance(obj, dict) and obj.get("type") == "credit":
                t = obj.get("t")
                ok = isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t)
                session.credits.give(float(t) if ok else None)
                self.render_loop.wake()
                continue
            if not bucket.take():
                outbox.limited(self.control_rate)
                continue
            try:
                cmd = parse_control(obj, self.renderer.controls)
            except ControlError as e:
                kind = obj.get("type") if isinstance(obj, dict) else None
                outbox.error(str(e), about=kind if isinstance(kind, str) and kind in self.renderer.controls else None)
                continue
            cmd["received"] = time.perf_counter()  # a morph is timed from here (the render thread's clock)
            if cmd["type"] == "ping":
                outbox.text({"type": "pong", "t": cmd.get("t")})
            elif cmd["type"] in ("prompt", "setlist"):
                if len(readings) >= self.MAX_READINGS:
                    outbox.error(f"{cmd['type']}s come faster than they can be read; this one was dropped",
                                 about=cmd["type"])
                    continue
                read = self._prompt if cmd["type"] == "prompt" else self._setlist
                task = asyncio.create_task(read(cmd, outbox, session))
                readings.add(task)
                task.add_done_callback(readings.discard)
            elif session.post(cmd):
                self.render_loop.wake()
            else:
                outbox.error("too many controls waiting to be applied; this one was dropped")

    async def _send(self, ws: WebSocket, outbox: Outbox, session: Session) -> None:
        loop = asyncio.get_running_loop()
        next_stats, last_sent = loop.time() + 1.0, 0
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(outbox.event.wait(), max(0.0, next_stats - loop.time()))
            outbox.event.clear()
            now = loop.time()
            if now >= next_stats:
                stats = session.stats
                outbox.text({"type": "stats", "fps": outbox.sent - last_sent, "render_ms": round(stats.render_ms, 2),
                             "batch": stats.batch, "clients": self.render_loop.count(), "errors": outbox.errors,
                             "dropped": outbox.rate_limited + stats.dropped,
                             "ignored_credits": session.credits.ignored, "render_errors": self.render_loop.errors,
                             "read_ms": None if outbox.read_ms is None else round(outbox.read_ms, 1)})
                next_stats, last_sent = now + 1.0, outbox.sent
            while outbox.texts:
                await ws.send_text(outbox.texts.popleft())
            while outbox.pngs:
                await ws.send_bytes(outbox.pngs.popleft())
            if outbox.frame is not None:
                frame, outbox.frame = outbox.frame, None
                session.credits.frame_taken()
                self.render_loop.wake()
                await ws.send_bytes(frame)
                outbox.sent += 1


def _is_disconnect(exc: BaseException) -> bool:
    from starlette.websockets import WebSocketDisconnect
    return isinstance(exc, (WebSocketDisconnect, OSError, RuntimeError))


# ---------------------------------------------------------------------------------------------------------------
# Serving

def bind_socket(host: str, port: int) -> socket.socket:
    """Bind before printing the URL, so a taken port is a clear error and port 0 gets a real number."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise StudioError(f"cannot resolve host {host!r}: {e}") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise StudioError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.set_inheritable(True)
    return sock


def uvicorn_config(app, log_level: str = "warning") -> uvicorn.Config:
    return uvicorn.Config(app, log_level=log_level, lifespan="on", ws_max_size=1 << 20,
                          ws_per_message_deflate=False,  # JPEGs do not compress; deflate only costs time
                          timeout_graceful_shutdown=2)


class BackgroundServer:
    """Serve a Studio from a background thread: `with BackgroundServer(studio) as srv: srv.url`. For tests,
    benchmarks and notebooks."""

    def __init__(self, studio: Studio, host: str = "127.0.0.1", port: int = 0):
        self.studio = studio
        self.sock = bind_socket(host, port)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn_config(studio.app))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="progan-studio-server", daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def __enter__(self) -> "BackgroundServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise StudioError("the studio server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()


def access_policy(host: str, token: str | None) -> tuple[bool, str | None]:
    """-> (loopback, token). Off loopback a token is required: a random one when none is given."""
    loopback = is_loopback(host)
    if token is not None and not token.strip():
        raise StudioError("the access token must not be empty")
    if not loopback and token is None:
        token = secrets.token_urlsafe(16)
    return loopback, token


def studio_url(host: str, port: int, token: str | None) -> str:
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}/" + (f"?token={token}" if token else "")


def run_studio(model_path, host: str = "127.0.0.1", port: int = 8000, device: str = "cpu", token: str | None = None,
               open_browser: bool = False, threads: int | None = None, jpeg_quality: int = 80,
               max_clients: int = 32, text_encoder: str | os.PathLike | None = None, pattern: Pattern = Pattern(),
               taste: dict | None = None, seed: int | None = None, setlist: list[Entry] | None = None,
               setlist_name: str = "setlist", condition_noise: bool = False, reading: str = "draw") -> None:
    """`progan studio`: load the model, print the URL and serve until interrupted (`text_encoder`: see Engine).

    A host other than loopback needs an access token; one is made up when not given and printed in the URL.
    `threads` sets torch's intra-op threads for rendering (default: leave one core to the event loop).
    Raises ModelLoadError for a path that is not a model and StudioError when the port cannot be used.
    """
    if threads is None:
        threads = max(1, min(torch.get_num_threads(), (os.cpu_count() or 2) - 1))
    if threads < 1:
        raise StudioError(f"threads must be >= 1, got {threads}")
    if not 1 <= jpeg_quality <= 95:
        raise StudioError(f"jpeg_quality must be in [1, 95], got {jpeg_quality}")
    loopback, token = access_policy(host, token)
    G = load_generator(model_path, device)
    torch.set_num_threads(threads)
    if setlist is not None and any(e.kind == "prompt" for e in setlist):
        print("setlist: reading its prompts (the text encoder loads first, a few seconds)", flush=True)
    studio = Studio(G, token=token, loopback=loopback, jpeg_quality=jpeg_quality, max_clients=max_clients,
                    text_encoder=text_encoder, pattern=pattern, taste=taste, seed=seed, setlist=setlist,
                    setlist_name=setlist_name, condition_noise=condition_noise, reading=reading)
    sock = bind_socket(host, port)
    port = sock.getsockname()[1]
    url = studio_url(host, port, token)
    info = studio.info()
    print(f"progan studio: {info['output_resolution']}x{info['output_resolution']} model, {info['kimg']:g} kimg, "
          f"{info['parameters']:,} parameters, {info['conditioning']['describe']}, on {device}, render threads: "
          f"{threads}", flush=True)
    if studio.encoder is not None:
        print("prompts: loading the text encoder in the background (a few seconds)", flush=True)
    print(f"open {url}", flush=True)
    if not loopback:
        print("the token in the URL is required: share it only with people who may use this machine", flush=True)
    if open_browser:
        threading.Timer(1.0, webbrowser.open, args=(url,)).start()
    server = uvicorn.Server(uvicorn_config(studio.app))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
