"""Configuration as data: dataclasses for the model, the schedule and training, named presets, JSON round trip.

Everything a run depends on lives in a TrainConfig, which is written to the run folder as config.json.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from dataclasses import dataclass, field


class ConfigError(ValueError):
    """A configuration value that cannot work; raised before any work starts."""


def is_power_of_two(n: int) -> bool:
    return isinstance(n, int) and n >= 1 and (n & (n - 1)) == 0


def check_resolution(resolution: int, what: str = "resolution") -> int:
    if not is_power_of_two(resolution) or not 4 <= resolution <= 1024:
        raise ConfigError(f"{what} must be a power of two between 4 and 1024, got {resolution!r}")
    return resolution


def resolutions_up_to(resolution: int) -> list[int]:
    """4, 8, ..., resolution."""
    return [2**k for k in range(2, int(math.log2(resolution)) + 1)]


@dataclass
class ModelConfig:
    resolution: int = 32
    latent_size: int = 512
    fmap_base: int = 8192
    fmap_max: int = 512
    fmap_min: int = 1             # a floor under the top resolutions' widths (the paper's nf has none)
    g_fmap_min: int = 0           # G's own floor where it differs from D's (0: fmap_min for both)
    num_classes: int = 0          # > 0: class-conditional, the official AC-GAN (one-hot rows into G, D has 1 + C outputs)
    mbstd_group: int = 4          # effective group is min(mbstd_group, per-rank batch)
    fused_scale: bool = True      # fused up-conv / conv-down: same maths as the unfused form, less work
    text_size: int = 0            # > 0: text-conditional on caption embeddings of this size (projection D)
    ca_size: int = 0              # text: conditioning augmentation (StackGAN) to a code of this size; 0: none
    cond_fade_start: int = 0      # transitional conditioning: the condition starts fading in with this resolution's
    cond_fade_end: int = 0        # fade-in and is fully on once this one has faded in (0: start); 0, 0: always on

    def channels(self, res: int, generator: bool = False) -> int:
        """nf(stage) = min(fmap_base / 2^stage, fmap_max), stage = log2(res) - 1 (the official code's nf(res - 1)),
        and at least fmap_min (G's: g_fmap_min when set)."""
        stage = int(math.log2(res)) - 1
        floor = self.g_fmap_min if generator and self.g_fmap_min else self.fmap_min
        return max(min(self.fmap_base // 2**stage, self.fmap_max), floor)

    def validate(self) -> None:
        check_resolution(self.resolution)
        for name in ("latent_size", "fmap_base", "fmap_max", "fmap_min", "mbstd_group"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be positive, got {getattr(self, name)!r}")
        for name in ("g_fmap_min", "num_classes", "text_size", "ca_size", "cond_fade_start", "cond_fade_end"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ConfigError(f"model.{name} must be an integer >= 0, got {getattr(self, name)!r}")
        if self.num_classes and self.text_size:
            raise ConfigError(f"model.num_classes ({self.num_classes}) and model.text_size ({self.text_size}) are both "
                              "set: a model is conditioned on classes or on text, not both")
        if self.ca_size and not self.text_size:
            raise ConfigError(f"model.ca_size ({self.ca_size}) is conditioning augmentation of caption embeddings; "
                              "it needs model.text_size")
        if (self.cond_fade_start or self.cond_fade_end) and not self.cond_size:
            raise ConfigError("model.cond_fade_start / cond_fade_end fade a condition in, but the model is "
                              "unconditional (set num_classes or text_size)")
        if self.cond_fade_end and not self.cond_fade_start:
            raise ConfigError(f"model.cond_fade_end ({self.cond_fade_end}) needs model.cond_fade_start")
        if self.cond_fade_start:
            end = self.cond_fade_end or self.cond_fade_start
            if not (is_power_of_two(self.cond_fade_start) and 8 <= self.cond_fade_start <= end <= self.resolution
                    and is_power_of_two(end)):
                raise ConfigError(f"model.cond_fade_start ({self.cond_fade_start}) and cond_fade_end "
                                  f"({self.cond_fade_end}) must be resolutions with 8 <= start <= end <= "
                                  f"{self.resolution} (4x4 has no fade-in)")

    @property
    def cond_size(self) -> int:
        """The width of the condition rows the networks take: classes or the caption embedding; 0: none."""
        return self.num_classes or self.text_size


@dataclass
class ScheduleConfig:
    """The growth schedule. Per-resolution tables map a resolution to a value; a missing key falls back to the
    entry of the largest key below it, so {4: 16} means 16 everywhere.

    stabilize_kimg[r]: thousands of real images spent stabilising at r; fade_kimg[r]: spent fading r in. Either
    may be one number for every resolution (the paper's 800 + 800).
    """
    stabilize_kimg: float | dict[int, float] = 800.0
    fade_kimg: float | dict[int, float] = 800.0
    batch: dict[int, int] = field(default_factory=lambda: {4: 16})  # global minibatch per resolution
    lr: dict[int, float] = field(default_factory=lambda: {4: 0.001})
    total_kimg: float = 19000.0

    def batch_at(self, res: int) -> int:
        return lookup(self.batch, res, "batch")

    def lr_at(self, res: int) -> float:
        return lookup(self.lr, res, "lr")

    def stabilize_at(self, res: int) -> float:
        return lookup(self.stabilize_kimg, res, "stabilize_kimg")

    def fade_at(self, res: int) -> float:
        return lookup(self.fade_kimg, res, "fade_kimg")

    def validate(self, resolution: int) -> None:
        if not self.total_kimg > 0:
            raise ConfigError(f"schedule.total_kimg must be > 0, got {self.total_kimg}")
        for res in resolutions_up_to(resolution):
            values = [("batch", self.batch_at(res)), ("lr", self.lr_at(res)),
                      ("stabilize_kimg", self.stabilize_at(res))]
            if res > 4:  # 4x4 is never faded in: a fade table may start at 8
                values.append(("fade_kimg", self.fade_at(res)))
            for name, value in values:
                ok = value >= 1 if name == "batch" else value > 0 if name == "lr" else value >= 0
                if not ok or not math.isfinite(value):
                    raise ConfigError(f"schedule.{name} at {res}x{res} must be "
                                      f"{'>= 1' if name == 'batch' else '> 0' if name == 'lr' else '>= 0'}, "
                                      f"got {value}")

    @classmethod
    def from_dict(cls, d: dict) -> "ScheduleConfig":
        """From JSON, where table keys are strings."""
        d = dict(d)
        for name, cast in (("batch", int), ("lr", float), ("stabilize_kimg", float), ("fade_kimg", float)):
            value = d[name]
            d[name] = {int(k): cast(v) for k, v in value.items()} if isinstance(value, dict) else cast(value)
        return cls(**d)


def lookup(table: float | dict[int, float], res: int, name: str):
    """Value of a per-resolution table at `res`: the entry of the largest key <= res; a plain number is the value
    everywhere."""
    if not isinstance(table, dict):
        return table
    keys = [k for k in table if k <= res]
    if not keys:
        raise ConfigError(f"schedule.{name} has no entry for {res}x{res} or below: {table}")
    return table[max(keys)]


LOSS_KINDS = ("wgan-gp", "logistic")


@dataclass
class LossConfig:
    kind: str = "wgan-gp"         # "wgan-gp" (the paper's) or "logistic": non-saturating logistic + R1 on reals
    r1_gamma: float = 1.0         # logistic: weight of the R1 penalty, gamma / 2 * ||grad D(real)||^2
    gp_lambda: float = 10.0
    gp_gamma: float = 1.0
    drift: float = 0.001
    cond_weight: float = 1.0      # classes: weight of the AC-GAN cross-entropy terms in D's and G's loss (official: 1)
    kl_weight: float = 1.0        # text with ca_size: weight of the conditioning augmentation's KL term in G's loss
    mismatch_weight: float = 1.0  # text: weight of the matching-aware negatives (reals with a wrong caption) in D's
    gan_int: float = 0.5          # text: share of G's rows conditioned on a mix of two captions (GAN-INT)
    gp_every: int = 1             # lazy regularisation: the penalty on every k-th step only, weighted k (paper: 1)

    def validate(self) -> None:
        if self.kind not in LOSS_KINDS:
            raise ConfigError(f"loss.kind must be one of {', '.join(LOSS_KINDS)}, got {self.kind!r}")
        for name in ("r1_gamma", "gp_lambda", "gp_gamma", "drift", "cond_weight", "kl_weight", "mismatch_weight", "gan_int"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"loss.{name} must be a finite number >= 0, got {value!r}")
        if not self.gp_gamma > 0:
            raise ConfigError(f"loss.gp_gamma must be > 0, got {self.gp_gamma!r}")
        if not (isinstance(self.gp_every, int) and self.gp_every >= 1):
            raise ConfigError(f"loss.gp_every must be an integer >= 1, got {self.gp_every!r}")
        if self.gan_int > 1:
            raise ConfigError(f"loss.gan_int is a share of G's rows, in [0, 1], got {self.gan_int!r}")


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    preset: str = "paper"
    data: str = ""
    seed: int = 0
    mirror: bool = False
    ema_beta: float = 0.999                   # per step, the paper's; short CPU presets need less memory
    ema_kimg: float = 0.0                     # > 0: G_ema's half-life in kimg instead (v2: 10), per-step beta from batch
    adam_betas: tuple[float, float] = (0.0, 0.99)
    adam_eps: float = 1e-8
    minutes: float | None = None              # wall-clock bound; None = run the whole schedule
    tick_kimg: float = 1.0                    # one line of stats.jsonl every N kimg
    snapshot_kimg: float = 50.0               # sample grid every N kimg (and at every phase end)
    checkpoint_kimg: float = 100.0
    keep_checkpoints: int = 3
    max_bad_steps: int = 20                   # consecutive non-finite steps before the run stops
    grid_size: int = 8                        # samples per side of the fixed-latent grid
    metrics: list[str] = field(default_factory=list)
    metrics_kimg: float = 0.0                 # 0: only at the end
    metrics_images: int = 2048
    bf16: bool = False                        # bf16 autocast on the run's device (for CUDA)
    augment: str = ""                         # DiffAugment policy for what D sees, e.g. "color,translation,cutout"

    def validate(self) -> None:
        self.model.validate()
        self.schedule.validate(self.model.resolution)
        self.loss.validate()
        if not 0 <= self.ema_beta < 1:
            raise ConfigError(f"ema_beta must be in [0, 1), got {self.ema_beta}")
        if not self.ema_kimg >= 0:
            raise ConfigError(f"ema_kimg must be >= 0, got {self.ema_kimg}")
        if self.minutes is not None and self.minutes <= 0:
            raise ConfigError(f"minutes must be positive, got {self.minutes}")
        for name in ("tick_kimg", "snapshot_kimg", "checkpoint_kimg"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        from progan.augment import parse_policy
        try:
            parse_policy(self.augment)
        except ValueError as e:
            raise ConfigError(f"augment: {e}") from None
        if self.keep_checkpoints < 1:
            raise ConfigError(f"keep_checkpoints must be >= 1, got {self.keep_checkpoints}")

    def ema_beta_at(self, batch: int) -> float:
        """G_ema = lerp(G, G_ema, beta) per step: the fixed ema_beta, or 0.5 ** (batch / half-life in images)."""
        return 0.5 ** (batch / (self.ema_kimg * 1000)) if self.ema_kimg > 0 else self.ema_beta

    def batch_problem(self, world_size: int) -> str:
        """'' when every resolution's global batch splits into `world_size` equal per-process batches, each a whole
        number of minibatch-stddev groups: the batch D sees in each of its calls (reals, fakes, their mix)."""
        for res in resolutions_up_to(self.model.resolution):
            batch = self.schedule.batch_at(res)
            if batch % world_size:
                return f"batch {batch} at {res}x{res} is not divisible by the {world_size} processes"
            local = batch // world_size
            group = min(self.model.mbstd_group, local)
            if local % group:
                return (f"the per-process batch {local} at {res}x{res} is not a whole number of minibatch-stddev "
                        f"groups of {group}")
        return ""

    def check_batches(self, world_size: int) -> None:
        """Refuse, before any work, a batch table that this many processes cannot split; say what would work."""
        problem = self.batch_problem(world_size)
        if not problem:
            return
        works = [n for n in range(1, 65) if not self.batch_problem(n)]
        hints = [f"process counts that work with this table: {', '.join(map(str, works))}"] if works else []
        v2 = f"v2-{world_size}gpu"
        if v2 in PRESETS:
            hints.append(f"--preset {v2} is the official schedule for {world_size} GPUs")
        hints.append("or give --batch (global, per resolution, e.g. 4:64,256:16) and --mbstd-group")
        raise ConfigError(f"{problem}: " + "; ".join(hints))

    def schedule_warnings(self) -> list[str]:
        """Reasons the run as configured would not finish what it is asked (it may still be meant: a short test)."""
        from progan.schedule import kimg_to_reach  # schedule imports config
        res = self.model.resolution
        reach = kimg_to_reach(res, self.schedule)
        if self.schedule.total_kimg <= reach:
            return [f"total_kimg {self.schedule.total_kimg:g} stops before {res}x{res} is fully faded in "
                    f"(at {reach:g} kimg): the run never trains at lod 0; use --kimg above {reach:g}"]
        return []

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        model = ModelConfig(**d.pop("model"))
        schedule = ScheduleConfig.from_dict(d.pop("schedule"))
        loss = LossConfig(**d.pop("loss"))
        d["adam_betas"] = tuple(d["adam_betas"])
        return cls(model=model, schedule=schedule, loss=loss, **d)


# ---------------------------------------------------------------------------------------------------------------
# Presets. Each is a function so that every call returns a fresh, unshared config.

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
    from progan.schedule import kimg_to_reach  # schedule imports config
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
        # fmap_base 256: 64 channels at 4x4 and 8x8, 32 at 16x16, 16 at 32x32. Half session 5's widths from 16x16
        # up, where the time goes: steps 1.7-2.1x faster, 1.4-1.5x the images in 20 minutes. It ties with 512 where
        # a fast CPU gives both ten minutes at 32x32, and wins where the old one reaches 32x32 late (SWD 14.9
        # against 18.2; benchmarks/README.md, session 9): 20 minutes on a CPU are short of updates, not capacity.
        model=ModelConfig(resolution=resolution, latent_size=64, fmap_base=256, fmap_max=64, mbstd_group=4),
        # Batch 16 from 16x16: there a CPU step of 16 costs about what one of 32 does per image, so it doubles the
        # updates for the same time (SWD 20.3 against 26.3 at equal time; benchmarks/README.md, session 5).
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
