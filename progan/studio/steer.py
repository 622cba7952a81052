"""Steering the studio's stream: closed-form directions, latent walks and like/dislike preferences.

Pure tensor maths on the CPU, no server. Latents live in "normalised z" units: the generator pixel-normalises z on
input, so only a latent's direction matters, and we keep walk positions at norm sqrt(latent_size) where each
coordinate is about N(0, 1) (`progan.generate.normalize`). Slider offsets and preference coordinates are in those
units. Truncation, seeds and slerp are generate.py's, shared with `progan generate`.
"""

from __future__ import annotations

from typing import Callable

import torch

from progan.generate import normalize, slerp
from progan.networks import Generator


def sefa(G: Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-form factorisation of the first layer (SeFa, Shen & Zhou, CVPR 2021).

    The unit latent directions n that change the dense layer's output most are the top eigenvectors of W^T W.
    As in the reference code, each output unit's weight vector is normalised first, so a few large units do not
    dominate. Returns (eigenvalues [L], directions [L, L]) strongest first, one direction per row.
    """
    w = (G.dense.weight.detach() * G.dense.scale)[:, :G.latent_size].float().cpu()
    w = w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)
    values, vectors = torch.linalg.eigh((w.T @ w).double())  # float32 product, float64 eigensolver
    order = values.argsort(descending=True)
    return values[order].float(), vectors[:, order].T.contiguous().float()


def preference_dims(eigenvalues: torch.Tensor, energy: float = 0.5, lo: int = 4, hi: int = 32) -> int:
    """How many SeFa directions the preference model uses: enough to hold `energy` of the first layer's response,
    clamped to [lo, hi] (a trained model's spectrum is steep, a random one flat)."""
    share = eigenvalues.clamp_min(0).cumsum(0) / eigenvalues.clamp_min(0).sum().clamp_min(1e-12)
    k = int((share < energy).sum()) + 1
    return max(min(k, hi, len(eigenvalues)), min(lo, len(eigenvalues)))


class Preferences:
    """Likes and dislikes as a point in the top SeFa coordinates, around which new keyframes are drawn.

    like(z) moves the preferred point `rate` of the way toward z's coordinates; dislike(z) moves it the same way
    from them. Every like also narrows the spread of new keyframes there, so a few clicks make the walk personal;
    the remaining coordinates stay random, so it keeps showing new images.
    """

    def __init__(self, basis: torch.Tensor, rate: float = 0.5, limit: float = 2.5, shrink: float = 0.7,
                 min_spread: float = 0.35):
        self.basis = basis  # [K, L] orthonormal rows
        self.rate, self.limit, self.shrink, self.min_spread = rate, limit, shrink, min_spread
        self.reset()

    def reset(self) -> None:
        self.point = torch.zeros(self.basis.shape[0])
        self.likes = 0
        self.dislikes = 0

    @property
    def spread(self) -> float:
        return max(self.min_spread, self.shrink**self.likes)

    def coords(self, z: torch.Tensor) -> torch.Tensor:
        return normalize(z) @ self.basis.T

    def like(self, z: torch.Tensor) -> None:
        self._move(z, +self.rate)
        self.likes += 1

    def dislike(self, z: torch.Tensor) -> None:
        self._move(z, -self.rate)
        self.dislikes += 1

    def _move(self, z: torch.Tensor, rate: float) -> None:
        """Toward (rate > 0) or away from z's coordinates, kept within `limit` so keyframes stay plausible."""
        target = self.coords(z.reshape(1, -1))[0]
        self.point = (self.point + rate * (target - self.point)).clamp(-self.limit, self.limit)

    def sample(self, n: int, rng: torch.Generator) -> torch.Tensor:
        """n keyframes [n, L]: N(0, I) except along the basis, where the coordinates are N(point, spread^2)."""
        z = torch.randn(n, self.basis.shape[1], generator=rng)
        c = z @ self.basis.T
        return z + (self.point + self.spread * c - c) @ self.basis


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


class ConditionMorph:
    """The condition row a stream shows, and its move to a new one: when a prompt or class changes, the row travels
    from where it is to the new one over `seconds` instead of cutting. Linear in the row: text rows are convex
    mixtures of caption vectors and class rows soft one-hots, so every row on the way is a mixture of the same kind,
    which conditional training covers (GAN-INT, soft labels). An ease-out: it turns at once (the first frame after a
    prompt already shows it) and settles gently.

    `to(row, t0)` starts a move at time t0 (when the prompt was sent, so the first frame rendered after it is
    already part of the way); `at(now)` is the row to show now, and `active` stays True until a frame has shown the
    end exactly.
    """

    def __init__(self, row: torch.Tensor, seconds: float = 0.5):
        self.seconds = seconds
        self.start = self.end = self.shown = row
        self.t0 = 0.0
        self.active = False

    def to(self, row: torch.Tensor, t0: float) -> None:
        self.start, self.end, self.t0, self.active = self.shown, row, t0, True

    def progress(self, now: float) -> float:
        if not self.active:
            return 1.0
        u = min(max((now - self.t0) / self.seconds, 0.0), 1.0) if self.seconds > 0 else 1.0
        return 1.0 - (1.0 - u) ** 3

    def at(self, now: float) -> tuple[torch.Tensor, float]:
        """(the row to show at `now`, how far along the move it is)."""
        p = self.progress(now)
        self.shown = self.end if p >= 1.0 else torch.lerp(self.start, self.end, p)
        if p >= 1.0:
            self.active = False
        return self.shown, p
