"""The render loop: per-viewer sessions and one render thread that batches every viewer's next frame.

Threading: the event loop (server.py) validates controls and queues them on a Session; the render thread owns all
of a session's walk and steering state (steering.Steering), applies queued controls at the start of each pass (so a
control is visible in the very next frame), renders every ready session in one forward pass, encodes JPEGs and
hands the bytes to the session's `sink` (which the server makes thread-safe). Only the flow control (`Credits`) is
shared, under a lock: a session is rendered only while it holds a credit and its previous frame has been taken, so
a slow client gets fresh frames, never a backlog.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from progan.studio.frames import encode_jpeg, encode_png, tile
from progan.studio.protocol import ControlError
from progan.studio.patterns import Pattern
from progan.studio.renderer import FrameRenderer
from progan.studio.steering import FrameInputs, Steering

log = logging.getLogger("progan.studio")


class Credits:
    """Flow control for one viewer, shared between the event loop and the render thread (under a lock): a frame is
    rendered only against a credit and once the previous one has been taken, at most one per `min_interval`."""

    def __init__(self, max_in_flight: int = 2, min_interval: float = 0.0):
        self.lock = threading.Lock()
        self.max_in_flight = max_in_flight
        self.credits = max_in_flight
        self.busy = False                      # a rendered frame not yet taken by the sender
        self.min_interval, self.next_due = min_interval, 0.0
        self.client_time: float | None = None  # client's timestamp on its latest credit, echoed in the next frame
        self.closed = False
        self.ignored = 0                       # credits beyond max_in_flight

    # -- the event loop -----------------------------------------------------------------------------------------
    def give(self, client_time: float | None = None) -> bool:
        """A credit back from the client; False (and counted) if it already holds all it may."""
        with self.lock:
            if self.credits >= self.max_in_flight:
                self.ignored += 1
                return False
            self.credits += 1
            if client_time is not None:
                self.client_time = client_time
            return True

    def frame_taken(self) -> None:
        with self.lock:
            self.busy = False

    def close(self) -> None:
        with self.lock:
            self.closed = True

    # -- the render thread --------------------------------------------------------------------------------------
    def reserve(self, now: float) -> bool:
        """Take a credit for one frame if this viewer can be sent one now."""
        with self.lock:
            if self.closed or self.busy or self.credits <= 0 or now < self.next_due:
                return False
            self.credits -= 1
            self.busy = True
            self.next_due = now + self.min_interval
            return True

    def due_in(self, now: float) -> float | None:
        """Seconds until the frame-rate cap lets this viewer be rendered, or None while it waits for a credit or for
        its last frame to be taken (a wake-up will come then)."""
        with self.lock:
            if self.closed or self.busy or self.credits <= 0:
                return None
            return max(0.0, self.next_due - now)

    def last_client_time(self) -> float | None:
        with self.lock:
            return self.client_time


@dataclass
class SessionStats:
    frames: int = 0          # frames handed to the sink
    dropped: int = 0         # controls dropped because the queue was full
    render_ms: float = 0.0   # the latest forward pass that rendered this viewer's frame
    batch: int = 0           # and how many images it rendered in all


class Session:
    """One viewer: its steering (render thread), its queued controls, its credits (shared) and its statistics.
    `sink(header, jpeg, png)` receives each frame and `notice(message)` the text messages of the render thread
    (what plays now, a control that failed); both must be thread-safe."""

    def __init__(self, renderer: FrameRenderer, sink: Callable[[dict, bytes, bytes | None], None], seed: int,
                 max_in_flight: int = 2, min_interval: float = 0.0, max_pending: int = 256,
                 notice: Callable[[dict], None] | None = None, pattern: Pattern = Pattern()):
        self.renderer, self.sink, self.notice = renderer, sink, notice
        self.steering = Steering(renderer, seed, pattern)
        self.credits = Credits(max_in_flight, min_interval)
        self.stats = SessionStats()
        self.pending: collections.deque = collections.deque()  # filled by the event loop, emptied by the render thread
        self.max_pending = max_pending
        self.ack: int | None = None           # id of the last control applied
        self.seq = 0
        self.last_frame: tuple[np.ndarray, bytes] | None = None  # reused while nothing changes (frozen)
        self.dirty = True

    def post(self, command: dict) -> bool:
        """Queue a validated control for the render thread (event loop). False (and counted) when the queue is full."""
        if len(self.pending) >= self.max_pending:
            self.stats.dropped += 1
            return False
        self.pending.append(command)
        return True

    def apply_pending(self) -> None:
        while self.pending:
            cmd = self.pending.popleft()
            try:
                self.apply(cmd)
            except ControlError as e:  # acceptable on the wire, not in this state (a full queue)
                self.tell({"type": "error", "message": str(e), "about": cmd["type"]})
            except Exception:  # one bad control must not stop this session's stream, let alone the others
                log.exception("studio: applying control %r failed", cmd)

    def apply(self, cmd: dict) -> None:
        control = self.renderer.controls.get(cmd["type"])
        if control is None or control.apply is None:  # the server validates types; reaching here is a bug
            raise ValueError(f"unknown control {cmd['type']!r}")
        control.apply(self.steering, cmd)
        if cmd.get("id") is not None:
            self.ack = cmd["id"]
        self.dirty = True

    def tell(self, message: dict) -> None:
        if self.notice is not None:
            self.notice(message)

    def step(self, now: float) -> None:
        if self.steering.step(now):
            self.dirty = True
        if self.steering.changed:
            self.steering.changed = False
            self.tell(self.steering.condition_state())
        while self.steering.messages:
            self.tell(self.steering.messages.popleft())

    def next_latents(self) -> FrameInputs:
        return self.steering.latents(self.seq + 1)

    def header(self, kind: str) -> dict:
        st = self.steering
        return {"kind": kind, "seq": self.seq, "ack": self.ack, "t": self.credits.last_client_time(), "seed": st.seed,
                "frozen": st.frozen, "grid": st.grid, "likes": st.prefs.likes, "dislikes": st.prefs.dislikes,
                "render_ms": round(self.stats.render_ms, 2), "batch": self.stats.batch,
                "morph": None if st.morph_progress is None else round(st.morph_progress, 4),
                "pattern": st.pattern.motion, "phase": st.phase, "show_seed": st.show_seed,
                "rate": round(0.0 if st.frozen else st.rate(), 4), "hits": st.hits}


class RenderLoop:
    """One thread renders for every session: each pass batches all sessions that can take a frame."""

    def __init__(self, renderer: FrameRenderer, jpeg_quality: int = 80):
        self.renderer = renderer
        self.jpeg_quality = jpeg_quality
        self.sessions: set[Session] = set()
        self.lock = threading.Lock()
        self.wake_event = threading.Event()
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.passes = 0
        self.errors = 0

    def add(self, session: Session) -> None:
        with self.lock:
            self.sessions.add(session)
        self.wake()

    def remove(self, session: Session) -> None:
        session.credits.close()
        with self.lock:
            self.sessions.discard(session)

    def count(self) -> int:
        with self.lock:
            return len(self.sessions)

    def wake(self) -> None:
        self.wake_event.set()

    def start(self) -> None:
        if self.thread is None:
            self.stop_event.clear()
            self.thread = threading.Thread(target=self._run, name="progan-studio-render", daemon=True)
            self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.wake_event.set()
        if self.thread is not None:
            self.thread.join(timeout=10)
            self.thread = None

    def _run(self) -> None:
        while not self.stop_event.is_set():
            self.wake_event.clear()  # before looking, so a wake-up during the pass is not lost
            idle = self._step()
            if idle is not None:
                self.wake_event.wait(idle)

    def _step(self) -> float | None:
        """One render pass over the sessions that can take a frame, or how long to sleep if none can. (A function
        of its own so that no session outlives its connection in a local variable while the thread sleeps.)"""
        now = time.perf_counter()
        with self.lock:
            sessions = list(self.sessions)
        ready = [s for s in sessions if s.credits.reserve(now)]
        if not ready:
            return min((w for w in (s.credits.due_in(now) for s in sessions) if w is not None), default=1.0)
        try:
            self.render_pass(ready, now)
        except Exception:  # never let one bad pass kill the stream for everyone
            self.errors += 1
            log.exception("studio render pass failed")
            for s in ready:
                s.credits.frame_taken()
                s.credits.give()
            time.sleep(0.05)
        self.passes += 1
        return None

    def render_pass(self, sessions: list[Session], now: float) -> None:
        fresh, inputs = [], []
        for s in sessions:
            s.apply_pending()
            s.step(now)
            if s.dirty or s.last_frame is None:
                frame_inputs = s.next_latents()
                fresh.append((s, frame_inputs.z.shape[0]))
                inputs.append(frame_inputs)
        t0 = time.perf_counter()
        images = None
        if fresh:
            r = self.renderer
            mean = noise = None
            if any(x.mean is not None for x in inputs):  # a session truncating toward its condition's centre
                mean = torch.cat([r.x4_mean.expand(len(x.z), -1, -1, -1) if x.mean is None else x.mean
                                  for x in inputs])
            if r.noise_size:
                noise = torch.cat([torch.zeros(len(x.z), r.noise_size) if x.noise is None else x.noise
                                   for x in inputs])
            images = r.render(torch.cat([x.z for x in inputs]), torch.cat([x.psi for x in inputs]),
                              torch.cat([x.cond for x in inputs]) if r.cond_size else None, mean, noise)
        render_ms = (time.perf_counter() - t0) * 1e3
        offset = 0
        for s, lanes in fresh:
            frame = images[offset:offset + lanes]
            offset += lanes
            frame = frame[0] if lanes == 1 else tile(frame, s.steering.grid)
            s.last_frame = (frame, encode_jpeg(frame, self.jpeg_quality))
            s.dirty = False
            s.stats.render_ms, s.stats.batch = render_ms, images.shape[0]
        for s in sessions:
            s.seq += 1
            s.stats.frames += 1
            frame, jpeg = s.last_frame
            png = None
            if s.steering.want_png:
                s.steering.want_png = False
                png = encode_png(frame)
            s.sink(s.header("frame"), jpeg, png)
