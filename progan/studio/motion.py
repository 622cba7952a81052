"""How a stream moves: the endless latent walk, the morphs (a condition row's, and the latents' glide to a new place)
and hits that die away (a pulse on a beat), as pure tensor maths on the CPU.

Latents live in "normalised z" units: the generator pixel-normalises z on input, so only a latent's direction
matters, and we keep walk positions at norm sqrt(latent_size) where each coordinate is about N(0, 1)
(`progan.generate.normalize`). Seeds and slerp are generate.py's, shared with `progan generate`.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from progan.generate import normalize, slerp


class LatentWalk:
    """An endless walk: slerp from keyframe to keyframe, one lane per grid cell, all lanes in step.

    `keyframes(n)` supplies new keyframes [n, L] (so preferences decide where the walk goes next).
    """

    def __init__(self, keyframes: Callable[[int], torch.Tensor], lanes: int = 1):
        self.keyframes = keyframes
        self.start = normalize(keyframes(lanes))
        self.end = normalize(keyframes(lanes))
        self.t = 0.0

    @property
    def lanes(self) -> int:
        return self.start.shape[0]

    def position(self) -> torch.Tensor:
        """Current latents [lanes, L] at norm sqrt(L)."""
        return self.start.clone() if self.t == 0.0 else slerp(self.start, self.end, self.t)

    def advance(self, keyframes: float) -> None:
        """Move on by a number of keyframe intervals (speed x seconds)."""
        self.t += keyframes
        while self.t >= 1.0:
            self.start, self.end = self.end, normalize(self.keyframes(self.lanes))
            self.t -= 1.0

    def retarget(self) -> None:
        """Turn from where we are toward fresh keyframes (after a like or dislike)."""
        self.start, self.end, self.t = self.position(), normalize(self.keyframes(self.lanes)), 0.0

    def jump(self, z: torch.Tensor) -> None:
        """Stand exactly at z [lanes, L] and walk on from there."""
        self.start, self.end, self.t = normalize(z), normalize(self.keyframes(z.shape[0])), 0.0

    def shuffle(self) -> None:
        """Fresh samples in every lane."""
        self.jump(self.keyframes(self.lanes))

    def set_lanes(self, lanes: int) -> None:
        """Change the number of lanes; lane 0 goes on from where it is."""
        if lanes == self.lanes:
            return
        here = self.position()[:1]
        self.start = torch.cat([here, normalize(self.keyframes(lanes - 1))]) if lanes > 1 else here
        self.end = normalize(self.keyframes(lanes))
        self.t = 0.0


def ease_out(u: float) -> float:
    """Turns at once (the first frame after a change already shows it) and settles gently."""
    return 1.0 - (1.0 - u) ** 3


class Morph:
    """The timing of a move that takes `seconds`, eased out: `begin(t0)` starts it at t0 (when it was asked for, so
    the first frame rendered after that is already part of the way), `progress(now)` is how far along it is, and
    `active` stays True until a frame has shown the end exactly."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.t0 = 0.0
        self.active = False

    def begin(self, t0: float) -> None:
        self.t0, self.active = t0, True

    def progress(self, now: float) -> float:
        if not self.active:
            return 1.0
        u = min(max((now - self.t0) / self.seconds, 0.0), 1.0) if self.seconds > 0 else 1.0
        return ease_out(u)


class ConditionMorph(Morph):
    """The condition row a stream shows, and its move to a new one: when a prompt or class changes, the row travels
    from where it is to the new one over `seconds` instead of cutting. Linear in the row: text rows are convex
    mixtures of caption vectors and class rows soft one-hots, so every row on the way is a mixture of the same kind,
    which conditional training covers (GAN-INT, soft labels).

    `to(row, t0)` starts a move at time t0; `at(now)` is the row to show now.
    """

    def __init__(self, row: torch.Tensor, seconds: float = 0.5):
        super().__init__(seconds)
        self.start = self.end = self.shown = row

    def to(self, row: torch.Tensor, t0: float) -> None:
        self.start, self.end = self.shown, row
        self.begin(t0)

    def at(self, now: float) -> tuple[torch.Tensor, float]:
        """(the row to show at `now`, how far along the move it is)."""
        p = self.progress(now)
        self.shown = self.end if p >= 1.0 else torch.lerp(self.start, self.end, p)
        if p >= 1.0:
            self.active = False
        return self.shown, p


class LatentMorph(Morph):
    """The latents' move to a new place (a setlist's seed entry): from the latents shown when it began to wherever
    the motion is now, along great circles, so the stream glides to the new sample while it goes on moving."""

    def __init__(self, seconds: float):
        super().__init__(seconds)
        self.start: torch.Tensor | None = None

    def to(self, z: torch.Tensor, t0: float) -> None:
        self.start = z
        self.begin(t0)

    def at(self, z: torch.Tensor, now: float) -> torch.Tensor:
        """The latents [lanes, L] to show instead of z, the motion's own (z itself once the move is over, or when
        the grid has changed since it began)."""
        p = self.progress(now)
        if p >= 1.0 or self.start.shape != z.shape:
            self.active = False
            return z
        return slerp(self.start, z, p)


class Impulses:
    """Hits that die away (a pulse on a beat): each (time, strength, payload) weighs strength x exp(-age / seconds)
    at a later time, and is forgotten below 1%."""

    def __init__(self, seconds: float, limit: int = 16):
        self.seconds, self.limit = seconds, limit
        self.hits: list[tuple[float, float, object]] = []

    def add(self, t0: float, strength: float, payload=None) -> None:
        if strength > 0:
            self.hits = [*self.hits[-(self.limit - 1):], (t0, strength, payload)]

    def live(self, now: float) -> list[tuple[float, object]]:
        """(weight, payload) of the hits still felt at `now` (a hit timed after `now` is felt in full)."""
        felt = [(s * math.exp(-max(0.0, now - t0) / self.seconds), (t0, s, payload)) for t0, s, payload in self.hits]
        self.hits = [hit for w, hit in felt if w >= 0.01 * hit[1]]
        return [(w, hit[2]) for w, hit in felt if w >= 0.01 * hit[1]]

    def __bool__(self) -> bool:
        return bool(self.hits)
