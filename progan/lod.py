"""Level of detail: how far a progressive network has grown, in the one convention every module uses.

For networks whose final resolution is R (a power of two), with blocks for 4, 8, ..., R:
- level is a block's index: level_of(res) = log2(res) - 2, 0 for the 4x4 block; block `level` works at
  resolution_of(level) = 4 * 2^level.
- lod (level of detail) is a float in [0, level_of(R)] counting down as the networks grow: level_of(R) runs the
  4x4 block alone, 0 runs every block. The level running at an lod is level_of(R) - floor(lod); a fractional lod
  is a fade, where that block is fading in over the one below it. The schedule gives the lod of every step
  (schedule.py); the networks take it (networks.py).
- alpha is the fading block's weight against the one below it: 1 - frac(lod); 1 when the lod is whole.

A condition can fade in with the growth too (ModelConfig.cond_fade_start / cond_fade_end): its weight is a function
of the lod alone, so that resume and export need nothing more than the lod.
"""

from __future__ import annotations

import math

from progan.config import ModelConfig


def level_of(resolution: int) -> int:
    """The index of the block working at `resolution`; for the final resolution also the lod of 4x4."""
    return int(math.log2(resolution)) - 2


def resolution_of(level: int) -> int:
    """The resolution block `level` works at."""
    return 4 * 2**level


def level_and_alpha(lod: float, resolution: int) -> tuple[int, float]:
    """lod -> (level of the highest active block, alpha of its fade-in), for networks of final `resolution`."""
    top = level_of(resolution)
    if not 0 <= lod <= top:
        raise ValueError(f"lod must be in [0, {top}] for resolution {resolution}, got {lod}")
    return top - math.floor(lod), 1.0 - (lod - math.floor(lod))


def lod_of(level: int, alpha: float, resolution: int) -> float:
    """The inverse of `level_and_alpha`."""
    return level_of(resolution) - level + (1.0 - alpha)


def resolution_at(lod: float, resolution: int) -> int:
    """The resolution trained or generated at `lod` (during a fade: the one fading in)."""
    return resolution_of(level_of(resolution) - math.floor(lod))


def condition_weight(cfg: ModelConfig, lod: float) -> float:
    """The condition's weight at `lod`: 1 unless transitional conditioning is on (cfg.cond_fade_start), else 0 until
    cond_fade_start's fade-in begins, then rising linearly with the growth to 1 once cond_fade_end (default
    cond_fade_start) has faded in."""
    if not cfg.cond_fade_start:
        return 1.0
    grown = level_of(cfg.resolution) - lod       # level + alpha - 1: continuous through every fade
    start = level_of(cfg.cond_fade_start) - 1    # where that block's fade begins
    end = level_of(cfg.cond_fade_end or cfg.cond_fade_start)
    return min(max((grown - start) / (end - start), 0.0), 1.0)
