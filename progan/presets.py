"""Named presets: the paper's recipe, the official code's multi-GPU ones, and CPU-sized ones for a laptop and tests.

Each is a function so that every call returns a fresh, unshared config. `check_batches` refuses a batch table that
the processes of a run cannot split, pointing at the preset made for that many.
"""

from __future__ import annotations

import functools

from progan.config import ConfigError, LossConfig, ModelConfig, ScheduleConfig, TrainConfig, check_resolution
from progan.schedule import kimg_to_reach


def paper(resolution: int = 1024) -> TrainConfig:
    """Exactly the paper's single-GPU recipe (RECIPE.md; TF preset-v1-1gpu): 800 + 800 kimg per phase, batch
    16 -> 14 -> 6 -> 3, minibatch-stddev over the whole minibatch, 19,000 kimg in all (1024 is fully faded in at
    12,800). For one process: several processes take the v2 presets."""
    return TrainConfig(
        preset="paper",
        model=ModelConfig(resolution=resolution, latent_size=512, fmap_base=8192, fmap_max=512, mbstd_group=16),
        schedule=ScheduleConfig(stabilize_kimg=800, fade_kimg=800, batch={4: 16, 256: 14, 512: 6, 1024: 3},
                                lr={4: 0.001}, total_kimg=19000),
        snapshot_kimg=100, checkpoint_kimg=200,
    )


# The official TF code's later presets (config.py, "v2"): the global minibatch and learning rate per resolution
# for 1, 2, 4 and 8 GPUs, 600 + 600 kimg per phase, 12,000 kimg in all, G_ema with a 10-kimg half-life.
V2_TABLES = {
    1: ({4: 128, 8: 128, 16: 128, 32: 64, 64: 32, 128: 16, 256: 8, 512: 4, 1024: 4}, {4: 0.001, 1024: 0.0015}),
    2: ({4: 256, 8: 256, 16: 128, 32: 64, 64: 32, 128: 16, 256: 8, 512: 8, 1024: 8},
        {4: 0.001, 512: 0.0015, 1024: 0.002}),
    4: ({4: 512, 8: 256, 16: 128, 32: 64, 64: 32, 128: 16, 256: 16, 512: 16, 1024: 16},
        {4: 0.001, 256: 0.0015, 512: 0.002, 1024: 0.003}),
    8: ({4: 512, 8: 256, 16: 128, 32: 64, 64: 32, 128: 32, 256: 32, 512: 32, 1024: 32},
        {4: 0.001, 128: 0.0015, 256: 0.002, 512: 0.003}),
}


def v2(gpus: int, resolution: int = 1024) -> TrainConfig:
    batch, lr = V2_TABLES[gpus]
    return TrainConfig(
        preset=f"v2-{gpus}gpu",
        model=ModelConfig(resolution=resolution, latent_size=512, fmap_base=8192, fmap_max=512, mbstd_group=4),
        schedule=ScheduleConfig(stabilize_kimg=600, fade_kimg=600, batch=dict(batch), lr=dict(lr), total_kimg=12000),
        ema_kimg=10.0, snapshot_kimg=100, checkpoint_kimg=200,
    )


def cifar(resolution: int = 32) -> TrainConfig:
    """The paper's CIFAR-10 network and run: fmap_base 4096, fmap_max 128, latent 128, 400 + 400 kimg, 20,000 kimg
    in all, gradient-penalty target gamma 750."""
    return TrainConfig(
        preset="cifar",
        model=ModelConfig(resolution=resolution, latent_size=128, fmap_base=4096, fmap_max=128, mbstd_group=4),
        schedule=ScheduleConfig(stabilize_kimg=400, fade_kimg=400, batch={4: 64}, lr={4: 0.001}, total_kimg=20000),
        loss=LossConfig(gp_gamma=750.0),
        snapshot_kimg=50, checkpoint_kimg=100,
    )


def with_final_stabilization(cfg: TrainConfig, kimg: float) -> TrainConfig:
    """Set the total so that the run reaches its resolution, then stabilises there for `kimg`, whatever the
    resolution (for the CPU presets, whose phase lengths are their own)."""
    cfg.schedule.total_kimg = round(kimg_to_reach(cfg.model.resolution, cfg.schedule) + kimg, 6)
    return cfg


def small(resolution: int = 64) -> TrainConfig:
    """A narrow network for a laptop CPU: hours, not weeks."""
    return with_final_stabilization(TrainConfig(
        preset="small",
        model=ModelConfig(resolution=resolution, latent_size=128, fmap_base=1024, fmap_max=128, mbstd_group=4),
        schedule=ScheduleConfig(stabilize_kimg=60, fade_kimg=60, batch={4: 64, 32: 32}, lr={4: 0.002}),
        snapshot_kimg=10, checkpoint_kimg=20, ema_beta=0.995,
    ), 420)


def demo(resolution: int = 32) -> TrainConfig:
    """The README's main job: about 20 minutes on a 2-core CPU, 4x4 -> 32x32 on the built-in emoji."""
    return with_final_stabilization(TrainConfig(
        preset="demo",
        # fmap_base 256: 64 channels at 4x4 and 8x8, 32 at 16x16, 16 at 32x32. Half the widths of fmap_base 512 from
        # 16x16 up, where the time goes: steps 1.7-2.1x faster, 1.4-1.5x the images in 20 minutes. It ties with 512
        # where a fast CPU gives both ten minutes at 32x32, and wins where 512 reaches 32x32 late (SWD 14.9 against
        # 18.2; docs/demo-recipe.md): 20 minutes on a CPU are short of updates, not capacity.
        model=ModelConfig(resolution=resolution, latent_size=64, fmap_base=256, fmap_max=64, mbstd_group=4),
        # Batch 16 from 16x16: there a CPU step of 16 costs about what one of 32 does per image, so it doubles the
        # updates for the same time (SWD 20.3 against 26.3 at equal time; docs/demo-recipe.md).
        schedule=ScheduleConfig(stabilize_kimg=20, fade_kimg=20, batch={4: 64, 16: 16}, lr={4: 0.002}),
        snapshot_kimg=10, checkpoint_kimg=10, minutes=20,
        ema_beta=0.995,  # ~5k steps in all: a 2.2-kimg half-life at batch 16; 0.999 would lag behind the growth
    ), 180)


def tiny(resolution: int = 8) -> TrainConfig:
    """For tests: a few seconds of growth through two resolutions."""
    return with_final_stabilization(TrainConfig(
        preset="tiny",
        model=ModelConfig(resolution=resolution, latent_size=16, fmap_base=64, fmap_max=16, mbstd_group=4),
        schedule=ScheduleConfig(stabilize_kimg=0.064, fade_kimg=0.064, batch={4: 8}, lr={4: 0.002}),
        tick_kimg=0.032, snapshot_kimg=0.128, checkpoint_kimg=0.128, grid_size=4, ema_beta=0.9,
    ), 0.192)


PRESETS = {"paper": paper, **{f"v2-{n}gpu": functools.partial(v2, n) for n in V2_TABLES},
           "cifar": cifar, "small": small, "demo": demo, "tiny": tiny}


def preset(name: str, resolution: int | None = None) -> TrainConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    make = PRESETS[name]
    return make() if resolution is None else make(check_resolution(resolution))


def check_batches(cfg: TrainConfig, world_size: int) -> None:
    """Refuse, before any work, a batch table that this many processes cannot split; say what would work."""
    problem = cfg.batch_problem(world_size)
    if not problem:
        return
    works = [n for n in range(1, 65) if not cfg.batch_problem(n)]
    hints = [f"process counts that work with this table: {', '.join(map(str, works))}"] if works else []
    v2 = f"v2-{world_size}gpu"
    if v2 in PRESETS:
        hints.append(f"--preset {v2} is the official schedule for {world_size} GPUs")
    hints.append("or give --batch (global, per resolution, e.g. 4:64,256:16) and --mbstd-group")
    raise ConfigError(f"{problem}: " + "; ".join(hints))
