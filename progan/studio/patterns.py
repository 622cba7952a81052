"""Patterns: how a show's cells move together (the motion) and how the page composes them (the layout).

A pattern is a motion and a layout, named on the command line and on the page as "field", "kaleidoscope" or
"loop+mirror" (parse_pattern):

- motions, computed here on the server and by the offline render (`progan generate --pattern`), as pure functions of
  (seed, settings, phase) with no global RNG, so the same seed and phase give the same latents everywhere:
    walk    every cell its own endless walk (motion.LatentWalk; it follows likes as they come, so it is the one
            motion that is not a function of the phase)
    field   the cells sample one smooth latent field over (row, column, time) that drifts across the grid, so a
            cell's neighbours are its near relatives; `coupling` in [0, 0.95] sets how alike they are
    loop    each cell goes round a great circle of the latent sphere once per `period` seconds: a loop with no seam
- layouts, composed from the stream's frames at the screen's resolution (static/studio.js on the page, `compose`
  here for the offline render; both use the geometry of `source_coords`): plain, mirror, kaleidoscope (4-fold),
  kaleidoscope6 (6-fold) and tile (mirrored wallpaper).

Phases: a field's phase counts keyframe intervals (speed x seconds, as the walk's); a loop's counts turns
(seconds / period). The studio advances a session's phase by its clock and puts it in every frame's header; the
offline render steps it by 1/fps; `frame_latents` turns either into the same latents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from progan.seeds import generator

MOTIONS = ("walk", "field", "loop")
LAYOUTS = ("plain", "mirror", "kaleidoscope", "kaleidoscope6", "tile")
COUPLING = (0.0, 0.95)      # 0: neighbours independent at every lattice point; 0.95: 20 cells share one anchor
PERIOD = (1.0, 600.0)       # seconds per turn of the loop
DRIFT = (0.37, 0.23)        # lattice cells per keyframe the field moves down and across (not a multiple of 1,
                            # so cells do not fall back onto the same anchors in step)
TILES = 4                   # copies of the frame across the shorter side of a tiled wall


class PatternError(ValueError):
    """A pattern name or setting that is not acceptable; the message says which are."""


@dataclass(frozen=True)
class Pattern:
    motion: str = "walk"
    layout: str = "plain"
    coupling: float = 0.6
    period: float = 8.0

    @property
    def name(self) -> str:
        return self.motion if self.layout == "plain" else f"{self.motion}+{self.layout}"

    def rate(self, speed: float) -> float:
        """Phase units per second: keyframes for a field, turns for a loop."""
        return 1.0 / self.period if self.motion == "loop" else speed

    def as_json(self) -> dict:
        return {"motion": self.motion, "layout": self.layout, "coupling": self.coupling, "period": self.period,
                "name": self.name}


def parse_pattern(text: str, coupling: float | None = None, period: float | None = None) -> Pattern:
    """"field", "mirror" (the walk, mirrored), "loop+kaleidoscope" -> Pattern, or PatternError naming the choices."""
    motion, layout = "walk", "plain"
    parts = [p.strip() for p in str(text).lower().split("+")]
    if not 1 <= len(parts) <= 2 or not all(parts):
        raise PatternError(f"pattern {text!r}: give a motion, a layout or motion+layout, e.g. field, mirror, "
                           f"loop+kaleidoscope (motions: {', '.join(MOTIONS)}; layouts: {', '.join(LAYOUTS)})")
    for part in parts:
        if part in MOTIONS:
            motion = part
        elif part in LAYOUTS:
            layout = part
        else:
            raise PatternError(f"pattern {text!r}: unknown {part!r}; motions: {', '.join(MOTIONS)}; "
                               f"layouts: {', '.join(LAYOUTS)}")
    p = Pattern(motion, layout)
    return settings(p, coupling=coupling, period=period)


def settings(p: Pattern, coupling: float | None = None, period: float | None = None) -> Pattern:
    """p with a new coupling or period, checked against their ranges."""
    if coupling is not None:
        if not (math.isfinite(coupling) and COUPLING[0] <= coupling <= COUPLING[1]):
            raise PatternError(f"coupling must be in [{COUPLING[0]:g}, {COUPLING[1]:g}], got {coupling:g}")
        p = replace(p, coupling=float(coupling))
    if period is not None:
        if not (math.isfinite(period) and PERIOD[0] <= period <= PERIOD[1]):
            raise PatternError(f"period must be in [{PERIOD[0]:g}, {PERIOD[1]:g}] seconds, got {period:g}")
        p = replace(p, period=float(period))
    return p


# ---------------------------------------------------------------------------------------------------------------
# Motions

class Anchors:
    """Memo of the random latents a pattern is built from, each fixed by (seed, kind, position): they are drawn
    again and again from frame to frame, and a torch.Generator per draw costs more than the arithmetic. Holds at
    most `limit` of them; results never depend on what it holds."""

    def __init__(self, latent_size: int, limit: int = 4096):
        self.latent_size, self.limit = latent_size, limit
        self.memo: dict[tuple, torch.Tensor] = {}

    def get(self, seed: int, *where) -> torch.Tensor:
        key = (seed, *where)
        z = self.memo.get(key)
        if z is None:
            if len(self.memo) >= self.limit:
                self.memo.clear()
            z = self.memo[key] = torch.randn(self.latent_size, generator=generator(seed, *where))
        return z


def smoothstep(u: np.ndarray) -> np.ndarray:
    return u * u * (3.0 - 2.0 * u)


def field_latents(seed: int, phase: float, grid: int, coupling: float, anchors: Anchors) -> torch.Tensor:
    """[grid*grid, L], row-major: the field at each cell's (row, column) and time `phase`.

    The field is independent N(0, I) anchors on an integer lattice over (y, x, t), blended with smoothstep weights
    normalised to unit L2 norm: a weighted sum of independent N(0, I) vectors with squared weights summing to one
    is itself N(0, I), so every cell at every moment is an ordinary latent (no washed-out blends between anchors),
    and it changes smoothly in space and time. Cell (r, c) sits at y = r / spacing + DRIFT[0] * phase,
    x = c / spacing + DRIFT[1] * phase with spacing = 1 / (1 - coupling) cells per lattice step.
    """
    spacing = 1.0 / (1.0 - coupling)
    cells = np.arange(grid, dtype=np.float64)
    y = np.repeat(cells / spacing + DRIFT[0] * phase, grid)
    x = np.tile(cells / spacing + DRIFT[1] * phase, grid)
    t = np.full(grid * grid, float(phase))
    base = [np.floor(a) for a in (y, x, t)]
    frac = [smoothstep(a - b) for a, b in zip((y, x, t), base)]
    keys: dict[tuple[int, int, int], int] = {}
    rows, cols, weights = [], [], []
    for corner in range(8):
        bits = [(corner >> d) & 1 for d in range(3)]
        w = np.ones(grid * grid)
        for d in range(3):
            w = w * (frac[d] if bits[d] else 1.0 - frac[d])
        for cell in range(grid * grid):
            if w[cell] == 0.0:
                continue
            key = tuple(int(base[d][cell]) + bits[d] for d in range(3))
            rows.append(cell)
            cols.append(keys.setdefault(key, len(keys)))
            weights.append(w[cell])
    W = torch.zeros(grid * grid, len(keys), dtype=torch.float64)
    W.index_put_((torch.tensor(rows), torch.tensor(cols)), torch.tensor(weights, dtype=torch.float64),
                  accumulate=True)
    W = W / W.norm(dim=1, keepdim=True)
    A = torch.stack([anchors.get(seed, "field", *key) for key in keys]).double()
    return (W @ A).float()


def loop_latents(seed: int, phase: float, lanes: int, anchors: Anchors) -> torch.Tensor:
    """[lanes, L]: lane i on the great circle through two random orthogonal directions u_i, v_i of its own, at
    angle 2 pi phase, at norm sqrt(L). Whole turns come back exactly to the start: phase and phase + 1 agree to
    rounding, so a recording of one period loops without a seam."""
    L = anchors.latent_size
    out = []
    angle = 2.0 * math.pi * (phase % 1.0)
    for lane in range(lanes):
        u = anchors.get(seed, "loop", lane, "u").double()
        v = anchors.get(seed, "loop", lane, "v").double()
        u = u / u.norm()
        v = v - (v @ u) * u
        v = v / v.norm()
        out.append(math.sqrt(L) * (math.cos(angle) * u + math.sin(angle) * v))
    return torch.stack(out).float()


def pattern_latents(pattern: Pattern, seed: int, phase: float, grid: int, anchors: Anchors) -> torch.Tensor:
    """The field or loop latents [grid*grid, L] of `pattern` at `phase` (the walk is stateful: motion.LatentWalk)."""
    if pattern.motion == "field":
        return field_latents(seed, phase, grid, pattern.coupling, anchors)
    if pattern.motion == "loop":
        return loop_latents(seed, phase, grid * grid, anchors)
    raise PatternError(f"the {pattern.motion} motion is not a function of the phase")


def frame_latents(pattern: Pattern, seed: int, phase: float, grid: int, anchors: Anchors, prefs,
                  slider_offset: torch.Tensor) -> torch.Tensor:
    """What the renderer is given for one frame of a field or loop, in the studio and offline alike: the pattern's
    latents, steered by the viewer's taste (taste.Preferences.steer) and moved along the sliders' directions."""
    from progan.generate import normalize
    z = prefs.steer(pattern_latents(pattern, seed, phase, grid, anchors))
    return normalize(z) + slider_offset


# ---------------------------------------------------------------------------------------------------------------
# Layouts

def source_coords(layout: str, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each pixel centre of a width x height picture: where it samples the square frame, as (u, v) in [0, 1]
    (u across, v down), and whether it shows the frame at all. static/studio.js draws the same geometry.

    The frame's centre sits at the picture's centre, n = (pixel - centre) / scale:
      plain          the whole frame, as large as fits (scale = the shorter side); black around it
      mirror         the left half and its reflection: u = 1/2 - |n_x| (scale = the longer side, so it fills)
      kaleidoscope   the top-left quarter in four reflections: also v = 1/2 - |n_y|
      kaleidoscope6  a 30-degree wedge of the frame, reflected and turned into six-fold symmetry around the centre
                     (scale = the diagonal, so every radius stays inside the frame)
      tile           the frame TILES times across the shorter side, every other copy mirrored, so edges meet
    """
    if layout not in LAYOUTS:
        raise PatternError(f"unknown layout {layout!r}; layouts: {', '.join(LAYOUTS)}")
    px = np.arange(width, dtype=np.float64) + 0.5 - width / 2
    py = np.arange(height, dtype=np.float64) + 0.5 - height / 2
    x, y = np.meshgrid(px, py)
    inside = np.ones(x.shape, dtype=bool)
    if layout == "plain":
        s = min(width, height)
        u, v = x / s + 0.5, y / s + 0.5
        inside = (u >= 0) & (u <= 1) & (v >= 0) & (v <= 1)
    elif layout in ("mirror", "kaleidoscope"):
        s = max(width, height)
        u = 0.5 - np.abs(x / s)
        v = 0.5 - np.abs(y / s) if layout == "kaleidoscope" else 0.5 + y / s
    elif layout == "kaleidoscope6":
        s = math.hypot(width, height)
        r = np.hypot(x, y) / s
        a = np.mod(np.arctan2(y, x), math.pi / 3)
        a = np.minimum(a, math.pi / 3 - a)
        u, v = 0.5 + r * np.cos(a), 0.5 + r * np.sin(a)
    else:  # tile
        s = min(width, height) / TILES
        u, v = triangle(x / s + 0.5), triangle(y / s + 0.5)
    return np.clip(u, 0.0, 1.0), np.clip(v, 0.0, 1.0), inside


def triangle(t: np.ndarray) -> np.ndarray:
    """0 -> 1 -> 0 with period 2: frame coordinates of a mirrored wallpaper."""
    t = np.mod(t, 2.0)
    return np.where(t <= 1.0, t, 2.0 - t)


def compose(frame: np.ndarray, layout: str, width: int, height: int,
            coords: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """A frame [s, s, 3] uint8 laid out on a width x height picture (bilinear sampling: a smooth upscale).
    `coords`: source_coords(layout, width, height), to reuse across the frames of a video."""
    u, v, inside = coords if coords is not None else source_coords(layout, width, height)
    h, w = frame.shape[:2]
    fx = np.clip(u * w - 0.5, 0, w - 1)
    fy = np.clip(v * h - 0.5, 0, h - 1)
    x0, y0 = np.floor(fx).astype(np.int64), np.floor(fy).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    ax, ay = (fx - x0)[..., None], (fy - y0)[..., None]
    f = frame.astype(np.float32)
    top = f[y0, x0] * (1 - ax) + f[y0, x1] * ax
    bottom = f[y1, x0] * (1 - ax) + f[y1, x1] * ax
    out = top * (1 - ay) + bottom * ay
    out[~inside] = 0
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
