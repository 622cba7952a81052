"""The growth schedule as a pure function of the number of real images shown to D.

There is no counter anywhere else: resume, logging and the optimizer resets all derive from `phase_at(cur_nimg)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from progan.config import ScheduleConfig


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


def lod_at(kimg: float, resolution: int, stabilize_kimg: float, fade_kimg: float) -> float:
    """lod = log2(R) - 2 - phase - max(phase_kimg - stabilize, 0) / fade, clamped at 0 (the official formula)."""
    max_lod = math.log2(resolution) - 2
    phase_kimg_total = stabilize_kimg + fade_kimg
    if phase_kimg_total <= 0:
        return 0.0
    phase = math.floor(kimg / phase_kimg_total)
    into_phase = kimg - phase * phase_kimg_total
    lod = max_lod - phase
    if fade_kimg > 0:
        lod -= max(into_phase - stabilize_kimg, 0.0) / fade_kimg
    return max(lod, 0.0)


def phase_at(cur_nimg: int, resolution: int, schedule: ScheduleConfig) -> Phase:
    kimg = cur_nimg / 1000.0
    lod = lod_at(kimg, resolution, schedule.stabilize_kimg, schedule.fade_kimg)
    train_res = 2 ** (int(math.log2(resolution)) - math.floor(lod))
    return Phase(kimg=kimg, lod=lod, resolution=train_res, alpha=1.0 - (lod - math.floor(lod)),
                 batch=schedule.batch_at(train_res), lr=schedule.lr_at(train_res))


def kimg_to_reach(resolution: int, target_res: int, schedule: ScheduleConfig) -> float:
    """kimg at which `target_res` is fully faded in (its stabilisation starts); 0 for 4x4."""
    steps = int(math.log2(target_res)) - 2
    return steps * (schedule.stabilize_kimg + schedule.fade_kimg)
