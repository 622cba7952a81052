"""One way to turn a run's seed and a purpose into an independent random stream.

Every random draw in progan (initial weights, a step's latents, the data order, a metric's patches) comes from a
torch.Generator seeded by `derive_seed(seed, *purpose)`, so streams never depend on each other's order, and
nothing touches the global RNG.
"""

from __future__ import annotations

import hashlib


def derive_seed(seed: int, *purpose) -> int:
    """A well-mixed 63-bit seed for (seed, purpose...), e.g. derive_seed(7, "swd", "fakes", 2).

    Parts are ints or strings; the result is stable across processes, platforms and Python versions.
    """
    text = "/".join([str(int(seed)), *map(str, purpose)])
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def generator(seed: int, *purpose, device="cpu"):
    """A torch.Generator on `device` seeded with derive_seed(seed, *purpose)."""
    import torch
    return torch.Generator(device=device).manual_seed(derive_seed(seed, *purpose))
