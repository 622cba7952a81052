import pytest

from progan.config import ScheduleConfig
from progan.presets import paper
from progan.schedule import lod_at, phase_at


def test_lod_at_phase_boundaries_follows_official_formula():
    # 1024: max lod 8. Each phase: 600 stabilise + 600 fade (the TF default).
    assert lod_at(0, 1024, 600, 600) == 8
    assert lod_at(600, 1024, 600, 600) == 8            # end of the first stabilisation
    assert lod_at(900, 1024, 600, 600) == pytest.approx(7.5)   # half way through the 8x8 fade
    assert lod_at(1200, 1024, 600, 600) == 7           # 8x8 fully in
    assert lod_at(1e9, 1024, 600, 600) == 0            # clamps at the final resolution


def test_paper_phase_values():
    s = paper(1024).schedule
    p = phase_at(0, 1024, s)
    assert (p.resolution, p.alpha, p.batch, p.lr, p.lod) == (4, 1.0, 16, 0.001, 8.0)
    p = phase_at(800_000 + 1, 1024, s)   # first image of the 8x8 fade: the new resolution, alpha ~ 0
    assert p.resolution == 8 and p.alpha == pytest.approx(0.0, abs=1e-5)
    p = phase_at(1_200_000, 1024, s)
    assert p.resolution == 8 and p.alpha == pytest.approx(0.5)
    # 256x256 uses batch 14 from the start of its fade
    start_256_fade = 5 * 1_600_000 + 800_000  # phase 5: stabilise 128, then fade in 256
    assert phase_at(start_256_fade, 1024, s).batch == 16
    assert phase_at(start_256_fade + 1000, 1024, s).batch == 14
    assert phase_at(12 * 1600_000, 1024, s).resolution == 1024


def test_optimizer_key_changes_at_start_of_fade_and_of_stabilisation():
    s = ScheduleConfig(stabilize_kimg=1, fade_kimg=1, batch={4: 4}, lr={4: 0.001}, total_kimg=10)
    keys = [phase_at(n, 16, s).optimizer_key for n in range(0, 5000, 100)]
    changes = [i * 100 for i in range(1, len(keys)) if keys[i] != keys[i - 1]]
    assert changes == [1100, 2000, 3100, 4000]


def test_per_resolution_tables_fall_back_to_lower_entry():
    s = ScheduleConfig(batch={4: 64, 32: 16}, lr={4: 0.002, 64: 0.001})
    assert [s.batch_at(r) for r in (4, 16, 32, 128)] == [64, 64, 16, 16]
    assert s.lr_at(32) == 0.002 and s.lr_at(64) == 0.001
