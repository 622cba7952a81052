"""Every random stream in progan, from a seed: the one place that turns seeds into generators and random bits.

Library code never touches the global RNG. A run's streams (initial weights, a step's latents, the data order, a
metric's patches) come from `generator(seed, *purpose)`: independent, so they never depend on each other's order.
A user-facing seed (the seed of one image in `progan generate --seeds`, the studio's lanes) is used as it is, so
seed 7 is the same image everywhere: `seed_generator(seed)`. Per-position random bits that any split of a stream
(resume, DDP ranks) must agree on come from `counter_bits(seed, positions)`.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def derive_seed(seed: int, *purpose) -> int:
    """A well-mixed 63-bit seed for (seed, purpose...), e.g. derive_seed(7, "swd", "fakes", 2).

    Parts are ints or strings; the result is stable across processes, platforms and Python versions.
    """
    text = "/".join([str(int(seed)), *map(str, purpose)])
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def generator(seed: int, *purpose, device="cpu") -> torch.Generator:
    """A torch.Generator on `device` seeded with derive_seed(seed, *purpose)."""
    return torch.Generator(device=device).manual_seed(derive_seed(seed, *purpose))


def seed_generator(seed: int, device="cpu") -> torch.Generator:
    """A torch.Generator seeded with `seed` itself: for seeds a user names."""
    return torch.Generator(device=device).manual_seed(int(seed))


def unit_hash(seed: int, *purpose) -> float:
    """A number in [0, 1) fixed by (seed, purpose...): stable splits of a dataset by a key."""
    return derive_seed(seed, *purpose) / 2**63


def _splitmix64(x: np.ndarray) -> np.ndarray:
    # Standard SplitMix64 finaliser; uint64 arithmetic wraps by definition in numpy arrays.
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def counter_bits(seed: int, positions: np.ndarray) -> np.ndarray:
    """uint64 random bits for each position (a counter-based stream: each value depends on (seed, position) alone)."""
    with np.errstate(over="ignore"):
        key = _splitmix64(np.array([int(seed) & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
        return _splitmix64(np.asarray(positions, dtype=np.uint64) ^ key)
