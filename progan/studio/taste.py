"""A viewer's taste: likes and dislikes as a point in the top SeFa coordinates, which new keyframes of the walk are
drawn around. Pure tensor maths on the CPU, in normalised-z units (see motion.py).
"""

from __future__ import annotations

import torch

from progan.generate import normalize


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
