"""The growth schedule as a pure function of the number of real images shown to D.

There is no counter anywhere else: resume, logging and the optimizer resets all derive from `phase_at(cur_nimg)`.

The timeline for a final resolution R is: stabilise 4x4, fade in 8x8, stabilise 8x8, ..., fade in R, stabilise R
until the end. With one stabilise and one fade length for every resolution this is exactly the official formula
lod = log2(R) - 2 - phase - max(phase_kimg - stabilize, 0) / fade; per-resolution tables (stabilize_kimg[r] = kimg
spent stabilising r, fade_kimg[r] = kimg spent fading r in) let a run spend its images where it needs them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from progan.config import ScheduleConfig, lookup, resolutions_up_to


@dataclass(frozen=True)
class Phase:
    kimg: float
    lod: float           # level of detail: 0 = final resolution, log2(R) - 2 = 4x4
    resolution: int      # the resolution being trained (the new one, from the start of its fade)
    alpha: float         # fade-in weight of the newest layers: 1 - frac(lod)
    batch: int           # global minibatch
    lr: float

    @property
    def optimizer_key(self) -> tuple[int, int]:
        """Adam's moments are reset whenever this changes: at the start of each fade and of each stabilisation."""
        return math.floor(self.lod), math.ceil(self.lod)


def _nimg(kimg: float) -> int:
    return round(kimg * 1000)


def lod_at(kimg: float, resolution: int, stabilize_kimg, fade_kimg) -> float:
    """The level of detail after `kimg` thousand images; stabilize_kimg / fade_kimg are numbers or tables."""
    max_lod = math.log2(resolution) - 2
    t = _nimg(kimg)  # counted in whole images, so phase boundaries fall on exact image counts
    for level, res in enumerate(resolutions_up_to(resolution)):
        lod = max_lod - level
        if level > 0:
            fade = _nimg(lookup(fade_kimg, res, "fade_kimg"))
            if t < fade:
                return lod + 1 - t / fade
            t -= fade
        stabilize = _nimg(lookup(stabilize_kimg, res, "stabilize_kimg"))
        if res == resolution or t < stabilize:
            return lod
        t -= stabilize
    return 0.0


def phase_at(cur_nimg: int, resolution: int, schedule: ScheduleConfig) -> Phase:
    kimg = cur_nimg / 1000.0
    lod = lod_at(kimg, resolution, schedule.stabilize_kimg, schedule.fade_kimg)
    train_res = 2 ** (int(math.log2(resolution)) - math.floor(lod))
    return Phase(kimg=kimg, lod=lod, resolution=train_res, alpha=1.0 - (lod - math.floor(lod)),
                 batch=schedule.batch_at(train_res), lr=schedule.lr_at(train_res))


def kimg_to_reach(target_res: int, schedule: ScheduleConfig) -> float:
    """kimg at which `target_res` is fully faded in (its stabilisation starts); 0 for 4x4."""
    total = 0
    for res in resolutions_up_to(target_res):
        if res > 4:
            total += _nimg(schedule.fade_at(res))
        if res < target_res:
            total += _nimg(schedule.stabilize_at(res))
    return total / 1000

