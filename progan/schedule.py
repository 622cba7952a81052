"""The growth schedule as a pure function of the number of real images shown to D.

There is no counter anywhere else: resume, logging and the optimizer resets all derive from `phase_at(cur_nimg)`.
lod, level and alpha are as progan/lod.py defines them.

The timeline for a final resolution R is: stabilise 4x4, fade in 8x8, stabilise 8x8, ..., fade in R, stabilise R
until the end. With one stabilise and one fade length for every resolution this is exactly the official formula
lod = log2(R) - 2 - phase - max(phase_kimg - stabilize, 0) / fade; per-resolution tables (stabilize_kimg[r] = kimg
spent stabilising r, fade_kimg[r] = kimg spent fading r in) let a run spend its images where it needs them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from progan.config import ScheduleConfig, TrainConfig, lookup, resolutions_up_to
from progan.lod import level_and_alpha, lod_of, resolution_of


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
    t = _nimg(kimg)  # counted in whole images, so phase boundaries fall on exact image counts
    for level, res in enumerate(resolutions_up_to(resolution)):
        lod = lod_of(level, 1.0, resolution)  # once this level has faded in
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
    level, alpha = level_and_alpha(lod, resolution)
    train_res = resolution_of(level)
    return Phase(kimg=kimg, lod=lod, resolution=train_res, alpha=alpha, batch=schedule.batch_at(train_res),
                 lr=schedule.lr_at(train_res))


def kimg_to_reach(target_res: int, schedule: ScheduleConfig) -> float:
    """kimg at which `target_res` is fully faded in (its stabilisation starts); 0 for 4x4."""
    total = 0
    for res in resolutions_up_to(target_res):
        if res > 4:
            total += _nimg(schedule.fade_at(res))
        if res < target_res:
            total += _nimg(schedule.stabilize_at(res))
    return total / 1000


def schedule_warnings(cfg: TrainConfig) -> list[str]:
    """Reasons the run as configured would not finish what it is asked (it may still be meant: a short test)."""
    res = cfg.model.resolution
    reach = kimg_to_reach(res, cfg.schedule)
    if cfg.schedule.total_kimg <= reach:
        return [f"total_kimg {cfg.schedule.total_kimg:g} stops before {res}x{res} is fully faded in "
                f"(at {reach:g} kimg): the run never trains at lod 0; use --kimg above {reach:g}"]
    return []
