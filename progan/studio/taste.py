"""A viewer's taste: likes and dislikes as a point in the top SeFa coordinates, which new keyframes of the walk are
drawn around. Pure tensor maths on the CPU, in normalised-z units (see motion.py).
"""

from __future__ import annotations

import json
import math

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
        return self.steer(torch.randn(n, self.basis.shape[1], generator=rng))

    def steer(self, z: torch.Tensor) -> torch.Tensor:
        """N(0, I) latents [n, L] -> the same randomness under this taste: coordinates along the basis scaled by
        spread and moved to point, the rest as they were (no likes: z unchanged). The patterns steer their latents
        with it, so a like reshapes a whole field or loop at once."""
        c = z @ self.basis.T
        return z + (self.point + self.spread * c - c) @ self.basis

    # -- taste profiles: a small JSON file, so a taste survives a restart and can be shared --------------------------
    def profile(self, model: dict) -> dict:
        """The taste as JSON-ready data; `model` (profile_model) says which model's coordinates these are."""
        return {"format": PROFILE_FORMAT, "model": model, "likes": self.likes, "dislikes": self.dislikes,
                "point": [float(v) for v in self.point]}  # exact: a loaded taste steers the same frames

    def load_profile(self, data, model: dict) -> None:
        """Take a taste from profile() data, or TasteError saying why it does not fit (and change nothing)."""
        if not isinstance(data, dict) or data.get("format") != PROFILE_FORMAT:
            raise TasteError(f"not a taste profile (expected a JSON object with \"format\": \"{PROFILE_FORMAT}\")")
        if data.get("model") != model:
            raise TasteError(f"this taste profile is for another model ({short_json(data.get('model'))}); this one "
                             f"is {short_json(model)}")
        point, likes, dislikes = data.get("point"), data.get("likes"), data.get("dislikes")
        k = self.basis.shape[0]
        if not (isinstance(point, list) and len(point) == k and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in point)):
            raise TasteError(f"a taste profile's point must be {k} finite numbers")
        for name, n in (("likes", likes), ("dislikes", dislikes)):
            if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 10**9:
                raise TasteError(f"a taste profile's {name} must be a count, got {short_json(n)}")
        self.point = torch.tensor(point, dtype=torch.float32).clamp(-self.limit, self.limit)
        self.likes, self.dislikes = likes, dislikes


PROFILE_FORMAT = "progan-taste-1"


class TasteError(ValueError):
    """A taste profile that cannot be loaded; the message says why."""


def short_json(v) -> str:
    r = json.dumps(v)
    return r if len(r) <= 60 else r[:57] + "..."


def profile_model(latent_size: int, eigenvalues: torch.Tensor, dims: int) -> dict:
    """What a profile records of its model: its coordinates are along this model's top SeFa directions, so a
    profile fits only a model with the same latent size and spectrum."""
    return {"latent_size": latent_size, "dims": dims, "sefa": [round(float(v), 3) for v in eigenvalues[:4]]}


def read_profile(path) -> dict:
    """A taste profile file -> its data (TasteError for a file that is missing, too large or not JSON)."""
    from pathlib import Path
    path = Path(path)
    try:
        if path.stat().st_size > MAX_PROFILE_BYTES:
            raise TasteError(f"{path}: larger than a taste profile ({MAX_PROFILE_BYTES} bytes at most)")
        return json.loads(path.read_text())
    except OSError as e:
        raise TasteError(f"cannot read the taste profile {path}: {e.strerror or e}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise TasteError(f"{path} is not a taste profile: {e}") from None


MAX_PROFILE_BYTES = 4096
