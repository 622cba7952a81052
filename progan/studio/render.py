"""The studio's render side: per-client sessions and one render thread that batches every client's next frame.

Threading: the event loop (server.py) validates controls and queues them on a Session; the render thread owns all
of a session's walk and steering state (`Steering`), applies queued controls at the start of each pass (so a control
is visible in the very next frame), renders every ready session in one forward pass, encodes JPEGs and hands the
bytes to the session's `sink` (which the server makes thread-safe). Only the flow control (`Credits`) is shared,
under a lock: a session is rendered only while it holds a credit and its previous frame has been taken, so a slow
client gets fresh frames, never a backlog.

Conditional models: every session shows one condition row (a class blend, a prompt's reading, or a caption of the
data until the first prompt), which moves to a new one gradually (steer.ConditionMorph) while the latent walk goes
on; a text session also keeps a small queue of prompts, each played for `prompt_seconds` before the next.
"""

from __future__ import annotations

import collections
import functools
import io
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from PIL import Image

from progan import condition
from progan.data.dataset import to_uint8 as dataset_to_uint8
from progan.generate import latents_from_seeds, mean_embedding, normalize, truncate
from progan.layers import inference_copy
from progan.networks import Generator, count_parameters, level_and_alpha
from progan.studio.protocol import MAX_QUEUE, PROMPT_SECONDS, Conditioning, ControlError, controls
from progan.studio.steer import ConditionMorph, LatentWalk, Preferences, preference_dims, sefa
from progan.text import MAX_PROMPT_CHARS

log = logging.getLogger("progan.studio")


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[B, 3, H, W] floats in about [-1, 1] -> [B, H, W, 3] uint8 (NHWC, as image files want)."""
    return dataset_to_uint8(images).permute(0, 2, 3, 1).contiguous().cpu().numpy()


def encode_jpeg(image: np.ndarray, quality: int = 80) -> bytes:
    """No optimize/progressive (they cost time for a frame seen once). 4:4:4 chroma: the page shows small images
    enlarged pixel for pixel, where 4:2:0 would smear every colour over 2x2 pixels."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


def encode_png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    return buf.getvalue()


MORPH_SECONDS = 0.5      # how long the stream takes to turn to a new prompt or class
PROMPT_SECONDS_DEFAULT = 8.0   # how long a queued prompt (or, before the first prompt, a caption) plays
CONDITION_MEAN_SAMPLES = 256   # latents behind each condition's truncation centre


def conditioning_of(G: Generator) -> Conditioning:
    """What the studio can steer G with: classes (named as in the exported model, else by number), prompts (a
    text model that records its captions, to read prompts against), or nothing."""
    kind = condition.kind(G)
    if G.num_classes:
        named = kind == "class"
        names = G.meta["conditioning"]["label_names"] if named else [str(i) for i in range(G.num_classes)]
        describe = condition.describe_kind(G) if named else f"class-conditional ({G.num_classes} classes)"
        return Conditioning("class", describe, tuple(names))
    if G.text_size:
        if kind == "text":
            return Conditioning("text", condition.describe_kind(G))
        return Conditioning("text", f"text-conditional ({G.text_size}-d caption vectors)",
                            no_prompt="this text-conditional model records no captions to read a prompt against "
                                      "(a model exported by progan train does)")
    return Conditioning()


@dataclass(frozen=True)
class Target:
    """What a stream is asked to show: its condition row [cond_size] and, for the page, what it is and how it was
    read; source "prompt", "class" or "data" (a caption of the training data)."""

    row: torch.Tensor
    text: str
    reading: str
    source: str

    def as_json(self) -> dict:
        return {"text": self.text, "reading": self.reading, "source": self.source}


def tile(images: np.ndarray, n: int) -> np.ndarray:
    """[n*n, H, W, 3] -> one [n*H, n*W, 3] grid, row-major."""
    _, h, w, c = images.shape
    return images.reshape(n, n, h, w, c).transpose(0, 2, 1, 3, 4).reshape(n * h, n * w, c)


class FrameRenderer:
    """The model side: latents plus truncation -> uint8 frames, for any number of viewers at once.

    At start-up it factorises the first layer (SeFa) and averages the first 4x4 activation over many latents;
    both take milliseconds to a second even for the paper's model.
    """

    def __init__(self, G: Generator, sliders: int = 8, mean_samples: int = 2048, max_batch: int = 16,
                 max_pixels: int = 1 << 20):
        self.G = G
        self.net = inference_copy(G)
        self.device = G.dense.weight.device
        self.level, self.alpha = level_and_alpha(G.lod, G.resolution)
        self.size = 4 * 2**self.level
        self.latent_size = G.latent_size
        self.num_classes = G.num_classes
        self.cond_size = G.cond_size
        self.conditioning = conditioning_of(G)
        meta = getattr(G, "meta", {}).get("conditioning", {})
        self.captions = list(meta.get("captions", [])) if self.conditioning.kind == "text" else []
        self.caption_vectors = meta["caption_vectors"].float().cpu() if self.captions else None
        t0 = time.perf_counter()
        self.eigenvalues, self.directions = sefa(G)
        self.sefa_ms = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        # The fallback centre; a conditional session truncates toward its own condition's mean (condition_mean).
        # A text model's under the zero row, which training shows for images without a caption.
        self.x4_mean = mean_embedding(G, mean_samples, cond=torch.zeros(1, G.text_size) if G.text_size else None
                                      ).to(self.device)
        self.mean_ms = (time.perf_counter() - t0) * 1e3
        self.sliders = min(sliders, self.latent_size)
        self.pref_basis = self.directions[:preference_dims(self.eigenvalues)]
        self.controls = controls(self.sliders, self.conditioning)
        # Forward passes run in chunks of at most max_batch rows, each padded to a power of two: on the CPU,
        # oneDNN keeps a primitive (with its buffers) per input shape, so every distinct batch size would cost
        # memory for good (about 6 MB each at 32x32); this way there are at most log2(max_batch) + 1 shapes.
        # max_pixels bounds the activation memory of large models.
        self.max_batch = 1 << max(0, min(max_batch, max_pixels // self.size**2).bit_length() - 1)

    @torch.inference_mode()
    def render(self, z: torch.Tensor, psi: torch.Tensor, cond: torch.Tensor | None = None,
               mean: torch.Tensor | None = None) -> np.ndarray:
        """z [N, L] (any norm), psi [N] truncation, cond [N, cond_size] float rows for a conditional model (one-hot
        or blended classes, prompt readings), mean [N, C, 4, 4] the truncation centre of each row (default x4_mean)
        -> [N, H, W, 3]."""
        out = []
        for i in range(0, z.shape[0], self.max_batch):
            rows = slice(i, i + self.max_batch)
            n = z[rows].shape[0]
            pad = torch.zeros(((1 << (n - 1).bit_length()) - n,), dtype=torch.long)  # row 0 again, up to 2^k rows

            def chunk(t: torch.Tensor) -> torch.Tensor:
                return torch.cat([t[rows], t[rows][pad]]).to(self.device)

            x4 = self.net.embed(chunk(z), None if cond is None else chunk(cond).float())
            p = chunk(psi).to(x4.dtype)
            if bool((p != 1).any()):
                x4 = truncate(x4, self.x4_mean if mean is None else chunk(mean).to(x4.dtype), p)
            out.append(to_uint8(self.net.synthesize(x4, self.level, self.alpha)[:n]))
        return np.concatenate(out)

    def slider_offset(self, values: torch.Tensor) -> torch.Tensor:
        """Slider values [K] -> latent offset [L] along the top K SeFa directions."""
        return values @ self.directions[:self.sliders]

    # -- conditions ---------------------------------------------------------------------------------------------
    def condition_mean(self, row: torch.Tensor) -> torch.Tensor:
        """The truncation centre under one condition row [cond_size] -> [1, C, 4, 4] (truncating toward what was
        asked for, not toward the average of every class or caption)."""
        return mean_embedding(self.G, CONDITION_MEAN_SAMPLES, cond=row.view(1, -1)).to(self.device)

    def class_target(self, weights: dict[int, float]) -> Target:
        """{class index: weight} -> one class or a soft blend (AC-GAN rows are linear before the pixel norm)."""
        row = torch.zeros(self.num_classes)
        for i, w in weights.items():
            row[i] += w
        row /= row.sum()
        names = self.conditioning.class_names
        parts = sorted(((float(w), names[i]) for i, w in enumerate(row.tolist()) if w > 0), reverse=True)
        text = parts[0][1] if len(parts) == 1 else ", ".join(f"{n} {w:.2f}" for w, n in parts)
        return Target(row, text, text, "class")

    def prompt_target(self, text: str, reading) -> Target:
        """A prompt and its progan.text.PromptReading."""
        return Target(reading.condition.float().cpu(), text, reading.describe(), "prompt")

    def caption_target(self, rng: torch.Generator) -> Target:
        """A caption of the training data, drawn with `rng` (what a text stream shows until the first prompt)."""
        i = int(torch.randint(len(self.captions), (1,), generator=rng))
        return Target(self.caption_vectors[i], self.captions[i], "a caption of the training data", "data")

    def first_target(self, rng: torch.Generator) -> Target | None:
        if self.conditioning.kind == "class":
            return self.class_target({0: 1.0})
        if self.conditioning.kind == "text":
            if self.captions:
                return self.caption_target(rng)
            return Target(torch.zeros(self.cond_size), "no caption", "the model's uncaptioned images", "data")
        return None

    def info(self) -> dict:
        G = self.G
        return {
            "resolution": G.resolution, "output_resolution": self.size, "lod": G.lod,
            "kimg": float(getattr(G, "meta", {}).get("kimg", 0.0)), "parameters": count_parameters(G),
            "latent_size": G.latent_size, "num_classes": G.num_classes, "device": str(self.device),
            "conditioning": {
                "kind": self.conditioning.kind, "describe": self.conditioning.describe,
                "classes": list(self.conditioning.class_names),
                "class_unavailable": self.conditioning.class_unavailable,
                "prompt_unavailable": self.conditioning.prompt_unavailable, "max_prompt_chars": MAX_PROMPT_CHARS,
                "max_queue": MAX_QUEUE, "morph_seconds": MORPH_SECONDS, "prompt_seconds": PROMPT_SECONDS_DEFAULT,
                "prompt_seconds_range": list(PROMPT_SECONDS)},
            "source": str(getattr(G, "meta", {}).get("source", "")), "sliders": self.sliders,
            "preference_dims": int(self.pref_basis.shape[0]),
            "sefa_eigenvalues": [round(float(v), 4) for v in self.eigenvalues[:self.sliders]],
            "startup_ms": {"sefa": round(self.sefa_ms, 1), "mean_embedding": round(self.mean_ms, 1)},
        }


class Steering:
    """What one viewer is shown and how it moves on: its walk, sliders, preferences, truncation, grid and, for a
    conditional model, its condition (with its morph and, for prompts, the queue). Owned by the render thread; the
    controls of protocol.controls() act on it through the methods below."""

    HISTORY = 8  # recent frames whose latents a like/dislike may refer to

    def __init__(self, renderer: FrameRenderer, seed: int):
        self.renderer = renderer
        self.rng = torch.Generator().manual_seed(seed)
        self.prefs = Preferences(renderer.pref_basis)
        self.walk = LatentWalk(functools.partial(self.prefs.sample, rng=self.rng))  # no cycle back to self
        self.sliders = torch.zeros(renderer.sliders)
        self.speed, self.psi, self.frozen = 0.25, 1.0, False
        self.grid = 1
        self.seed: int | None = None          # set while the frame is exactly a jumped-to seed
        self.want_png = False                 # the viewer asked for this frame as a PNG too
        self.history: collections.deque = collections.deque(maxlen=self.HISTORY)  # (frame seq, walk latents)
        self.last_time: float | None = None   # the latest frame's time (the render pass's clock)
        # The condition (conditional models only).
        self.target = renderer.first_target(self.rng)
        self.morph = None if self.target is None else ConditionMorph(self.target.row, MORPH_SECONDS)
        self.morph_progress: float | None = None if self.target is None else 1.0
        self.means: dict[str, torch.Tensor | None] = {"start": None, "end": None, "shown": None}
        self.queue: collections.deque[Target] = collections.deque()
        self.prompt_seconds = PROMPT_SECONDS_DEFAULT
        self.started: float | None = None     # when the target began to play (None: at the next frame)
        self.changed = self.target is not None  # the page has not been told what plays now

    # -- the controls -------------------------------------------------------------------------------------------
    def set_speed(self, value: float) -> None:
        self.speed = value

    def set_truncation(self, value: float) -> None:
        self.psi = value

    def set_frozen(self, value: bool) -> None:
        self.frozen = value

    def blend_classes(self, weights: dict[int, float], received: float | None = None) -> None:
        self.play(self.renderer.class_target(weights), received)

    def prompt(self, text: str, reading, queue: bool = False, received: float | None = None) -> None:
        """Morph to a prompt now, or (queue) after what plays now; `reading` is its progan.text.PromptReading."""
        target = self.renderer.prompt_target(text, reading)
        if queue and self.target is not None and self.target.source == "prompt":
            if len(self.queue) >= MAX_QUEUE:
                raise ControlError(f"the queue is full ({MAX_QUEUE} prompts); {text!r} was not queued")
            self.queue.append(target)
            self.changed = True
        else:
            self.play(target, received)

    def clear_queue(self) -> None:
        self.queue.clear()
        self.changed = True

    def set_prompt_seconds(self, value: float) -> None:
        self.prompt_seconds = value
        self.changed = True

    def jump_to_seed(self, seed: int) -> None:
        self.walk.jump(latents_from_seeds([seed + i for i in range(self.walk.lanes)], self.renderer.latent_size))
        self.seed = seed

    def set_slider(self, index: int, value: float) -> None:
        self.sliders[index] = value

    def reset_sliders(self) -> None:
        self.sliders.zero_()

    def like(self, frame: int | None, cell: int) -> None:
        self.prefs.like(self.latent_of(frame, cell))
        self.walk.retarget()
        self.seed = None

    def dislike(self, frame: int | None, cell: int) -> None:
        self.prefs.dislike(self.latent_of(frame, cell))
        self.walk.retarget()
        self.seed = None

    def reset_preferences(self) -> None:
        self.prefs.reset()
        self.walk.retarget()

    def set_grid(self, value: int) -> None:
        self.grid = value
        self.walk.set_lanes(value * value)
        self.seed = None

    def shuffle(self) -> None:
        self.walk.shuffle()
        self.seed = None

    def save_png(self) -> None:
        self.want_png = True

    # -- the condition ------------------------------------------------------------------------------------------
    def play(self, target: Target, at: float | None = None) -> None:
        """Turn toward `target`, the move timed from `at` (when it was asked for; default: the latest frame, so the
        next frame is already part of the way; before any frame: there at once)."""
        if at is None:
            at = self.last_time if self.last_time is not None else -math.inf
        self.target = target
        self.morph.to(target.row, at)
        self.means = {"start": self.means["shown"], "end": None, "shown": None}
        self.started = at if math.isfinite(at) else None
        self.changed = True

    def advance_queue(self, now: float) -> None:
        """After prompt_seconds the next queued prompt plays; before the first prompt, another caption of the data.
        A frozen stream holds what it shows."""
        if self.started is None:
            self.started = now
        if self.frozen or now - self.started < self.prompt_seconds:
            return
        if self.queue:
            self.play(self.queue.popleft(), now)
        elif self.target.source == "data" and self.renderer.captions:
            self.play(self.renderer.caption_target(self.rng), now)

    def condition_state(self) -> dict:
        """The "condition" message: what plays now and what comes next."""
        return {"type": "condition", "now": self.target.as_json(), "next": [t.as_json() for t in self.queue],
                "seconds": self.prompt_seconds}

    def condition_mean(self, progress: float) -> torch.Tensor:
        """The truncation centre along the morph: between the two ends' means (each computed once, when needed)."""
        m = self.means
        if m["end"] is None:
            m["end"] = self.renderer.condition_mean(self.morph.end)
        if progress >= 1.0:
            m["shown"] = m["end"]
        else:
            if m["start"] is None:
                m["start"] = self.renderer.condition_mean(self.morph.start)
            m["shown"] = torch.lerp(m["start"], m["end"], progress)
        return m["shown"]

    # -- the render thread --------------------------------------------------------------------------------------
    def latent_of(self, frame: int | None, cell: int) -> torch.Tensor:
        """The walk latent shown in cell `cell` of frame `frame` (or of the latest frame if it is gone)."""
        for seq, z in reversed(self.history):
            if frame is None or seq == frame:
                return z[min(cell, z.shape[0] - 1)]
        return self.walk.position()[min(cell, self.walk.lanes - 1)]

    def step(self, now: float) -> bool:
        """Advance the walk by the time since the last frame (capped, so a stall does not make it jump), and the
        prompt queue; True if the frame changes (the walk moved, or the condition is on its way)."""
        dt = 0.0 if self.last_time is None else min(now - self.last_time, 0.5)
        self.last_time = now
        if self.target is not None:
            self.advance_queue(now)
        morphing = self.morph is not None and self.morph.active
        if self.frozen or self.speed <= 0 or dt <= 0:
            return morphing
        self.walk.advance(self.speed * dt)
        self.seed = None
        return True

    def latents(self, seq: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(z [lanes, L] with steering applied, psi [lanes], condition rows [lanes, cond_size] or None, truncation
        centres [lanes, C, 4, 4] or None for the renderer's) for frame `seq`, whose walk latents it records for
        likes."""
        z = self.walk.position()
        self.history.append((seq, z))
        steered = normalize(z) + self.renderer.slider_offset(self.sliders)
        lanes = z.shape[0]
        cond = mean = None
        if self.morph is not None:
            row, self.morph_progress = self.morph.at(self.last_time if self.last_time is not None else 0.0)
            cond = row.view(1, -1).expand(lanes, -1)
            if self.psi < 1:
                mean = self.condition_mean(self.morph_progress).expand(lanes, -1, -1, -1)
            else:
                self.means["shown"] = None
        return steered, torch.full((lanes,), self.psi), cond, mean


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
                 notice: Callable[[dict], None] | None = None):
        self.renderer, self.sink, self.notice = renderer, sink, notice
        self.steering = Steering(renderer, seed)
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

    def next_latents(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        return self.steering.latents(self.seq + 1)

    def header(self, kind: str) -> dict:
        st = self.steering
        return {"kind": kind, "seq": self.seq, "ack": self.ack, "t": self.credits.last_client_time(), "seed": st.seed,
                "frozen": st.frozen, "grid": st.grid, "likes": st.prefs.likes, "dislikes": st.prefs.dislikes,
                "render_ms": round(self.stats.render_ms, 2), "batch": self.stats.batch,
                "morph": None if st.morph_progress is None else round(st.morph_progress, 4)}


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
        fresh, zs, psis, conds, means = [], [], [], [], []
        for s in sessions:
            s.apply_pending()
            s.step(now)
            if s.dirty or s.last_frame is None:
                z, psi, cond, mean = s.next_latents()
                fresh.append((s, z.shape[0]))
                zs.append(z), psis.append(psi), conds.append(cond), means.append(mean)
        t0 = time.perf_counter()
        images = None
        if fresh:
            r = self.renderer
            mean = None
            if any(m is not None for m in means):  # a session truncating toward its condition's centre
                mean = torch.cat([r.x4_mean.expand(len(z), -1, -1, -1) if m is None else m for m, z in zip(means, zs)])
            images = r.render(torch.cat(zs), torch.cat(psis), torch.cat(conds) if r.cond_size else None, mean)
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
