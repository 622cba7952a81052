"""The show without a browser: a pattern rendered to a video file (`progan generate RUN --pattern NAME --video F`),
with a setlist (`--setlist`) and music (`--audio`, audio.py).

The frames come from a steering.Steering, the studio's own viewer state, stepped on the video's clock (frame k at
k / fps): frame k of a field or loop is the studio's frame at phase k x rate / fps (patterns.py), made by the same
renderer from the same latents (patterns.frame_latents), so a studio showing that seed and those settings shows the
same frames. A setlist plays through the Steering's queue, and the music acts through the controls the page sends
("drive", "hit"), applied at their frames. The layout is then composed at the video's size by patterns.compose, the
geometry the page draws.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image

from progan.fileio import atomic_write_bytes
from progan.studio.frames import tile
from progan.studio.patterns import Anchors, Pattern, compose, frame_latents, source_coords
from progan.studio.protocol import MAX_GRID, MAX_SPEED
from progan.studio.renderer import FrameRenderer
from progan.studio.steering import Steering
from progan.studio.targets import Target
from progan.studio.taste import Preferences

MAX_SIDE = 4096            # pixels on either side of a video
MAX_SECONDS = 3600.0
MAX_FPS = 120
MAX_FRAMES = 216_000       # an hour at 60 frames a second


class ShowError(ValueError):
    """Settings of an offline show that cannot be rendered; the message names the limit."""


@dataclass(frozen=True)
class ShowSettings:
    pattern: Pattern = Pattern()
    seed: int = 0
    seconds: float = 8.0
    fps: int = 30
    size: tuple[int, int] = (512, 512)   # width, height
    grid: int = 1
    speed: float = 0.25                  # keyframes a second (walk and field), as the studio's speed control
    truncation: float = 1.0

    @property
    def frames(self) -> int:
        return max(1, round(self.seconds * self.fps))

    def check(self) -> "ShowSettings":
        w, h = self.size
        if not (1 <= w <= MAX_SIDE and 1 <= h <= MAX_SIDE):
            raise ShowError(f"--size {w}x{h}: each side must be in [1, {MAX_SIDE}] pixels")
        if not (math.isfinite(self.seconds) and 0 < self.seconds <= MAX_SECONDS):
            raise ShowError(f"--seconds {self.seconds:g}: must be in (0, {MAX_SECONDS:g}]")
        if not 1 <= self.fps <= MAX_FPS:
            raise ShowError(f"--fps {self.fps}: must be in [1, {MAX_FPS}]")
        if self.frames > MAX_FRAMES:
            raise ShowError(f"{self.seconds:g} s at {self.fps} frames/s is {self.frames} frames; at most {MAX_FRAMES}")
        if not 1 <= self.grid <= MAX_GRID:
            raise ShowError(f"--cells {self.grid}: must be in [1, {MAX_GRID}]")
        if not (math.isfinite(self.speed) and 0 <= self.speed <= MAX_SPEED):
            raise ShowError(f"--speed {self.speed:g}: must be in [0, {MAX_SPEED:g}]")
        if not (math.isfinite(self.truncation) and 0 <= self.truncation <= 1):
            raise ShowError(f"--truncation {self.truncation:g}: must be in [0, 1]")
        if not 0 <= self.seed < 2**32:
            raise ShowError(f"--seed {self.seed}: must be in [0, 2^32)")
        return self


def parse_size(text: str) -> tuple[int, int]:
    """'1280x720' -> (1280, 720), or ShowError."""
    try:
        w, h = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ShowError(f"--size {text!r}: give WIDTHxHEIGHT, e.g. 1280x720") from None
    return w, h


def show_frame(renderer: FrameRenderer, pattern: Pattern, seed: int, phase: float, grid: int, anchors: Anchors,
               prefs: Preferences, truncation: float = 1.0, cond: torch.Tensor | None = None,
               mean: torch.Tensor | None = None, sliders: torch.Tensor | None = None) -> np.ndarray:
    """The studio's uint8 frame [grid*s, grid*s, 3] of a field or loop at `phase` (cond: one condition row, mean:
    its truncation centre, as a conditional studio stream holds them once its morph has ended)."""
    offset = renderer.slider_offset(torch.zeros(renderer.sliders) if sliders is None else sliders)
    z = frame_latents(pattern, seed, phase, grid, anchors, prefs, offset)
    lanes = z.shape[0]
    images = renderer.render(z, torch.full((lanes,), truncation), None if cond is None else cond.view(1, -1).expand(
        lanes, -1), None if mean is None else mean.expand(lanes, -1, -1, -1))
    return images[0] if lanes == 1 else tile(images, grid)


def show_frames(renderer: FrameRenderer, settings: ShowSettings, prefs: Preferences | None = None,
                target: Target | None = None, setlist: list[Target] | None = None,
                controls: Callable[[int], list[dict]] | None = None) -> Iterator[np.ndarray]:
    """The show's frames [H, W, 3] uint8, laid out at settings.size: a Steering on settings.seed stepped by 1 / fps
    (target: the condition to show, a class blend or a prompt; setlist: setlist.resolve's Targets, played in a loop;
    controls(k): the controls, as the page sends them, to apply before frame k)."""
    s = settings.check()
    steering = Steering(renderer, s.seed, s.pattern, prefs)
    steering.max_step = math.inf  # a video has no stalls to smooth over
    steering.set_grid(s.grid)
    steering.set_speed(s.speed)
    steering.set_truncation(s.truncation)
    if target is not None:
        steering.play(target)
    if setlist:
        steering.load_setlist(setlist)
    coords = source_coords(s.pattern.layout, *s.size)
    for k in range(s.frames):
        now = k / s.fps
        for cmd in controls(k) if controls is not None else ():
            renderer.controls[cmd["type"]].apply(steering, {**cmd, "received": now})
        steering.step(now)
        images = renderer.render(*steering.latents(k))
        frame = images[0] if len(images) == 1 else tile(images, s.grid)
        yield compose(frame, s.pattern.layout, *s.size, coords=coords)


def write_video(frames: Iterator[np.ndarray], path: str | Path, fps: int, size: tuple[int, int],
                audio: str | Path | None = None) -> int:
    """Frames [H, W, 3] uint8 -> an MP4 (H.264 with imageio-ffmpeg, the song muxed in when `audio`) or, without
    imageio-ffmpeg or for a .gif path, an animated GIF (Pillow). Streams: frames are encoded as they come.
    Returns the number of frames written."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".mp4", ".gif"):
        raise ShowError(f"--video {path}: the name must end in .mp4 or .gif")
    if suffix == ".mp4":
        try:
            import imageio_ffmpeg
        except ImportError:
            raise ShowError(f"writing {path} needs `pip install progan[video]` (imageio and imageio-ffmpeg); or ask "
                            f"for a .gif") from None
        w, h = size
        tmp = path.with_name(f".{path.stem}.tmp.mp4")
        # H.264 wants even sides; yuv420p plays everywhere.
        writer = imageio_ffmpeg.write_frames(str(tmp), (w, h), fps=fps, codec="libx264", quality=8,
                                             pix_fmt_out="yuv420p", macro_block_size=2,
                                             audio_path=None if audio is None else str(audio),
                                             output_params=["-shortest"] if audio is not None else None)
        writer.send(None)
        n = 0
        try:
            for frame in frames:
                writer.send(np.ascontiguousarray(frame))
                n += 1
        finally:
            writer.close()
        tmp.replace(path)
        return n
    if audio is not None:
        raise ShowError("a GIF has no sound: ask for an .mp4 to mux the song in")
    pictures = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    pictures[0].save(buf, format="GIF", save_all=True, append_images=pictures[1:], duration=round(1000 / fps),
                     loop=0)
    atomic_write_bytes(path, buf.getvalue())
    return len(pictures)
