"""Configuration as data: dataclasses for the model, the schedule and training, and their JSON round trip.

Everything a run depends on lives in a TrainConfig, which is written to the run folder as config.json. A field made
with `option` carries its help text: `progan train` has a flag for each (cli.py); the few fields without one
(the preset's name, the dataset, what the model is conditioned on) are set there in their own way.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """A configuration value that cannot work; raised before any work starts."""


def option(default: Any = dataclasses.MISSING, help: str = "", *, factory: Any = dataclasses.MISSING,
           **flag: Any) -> Any:
    """A field with its command-line help text; `factory` makes a mutable default, `flag` holds further argparse
    keywords (choices, metavar)."""
    return field(default=default, default_factory=factory, metadata={"help": help, **flag})


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
    resolution: int = option(32, "final resolution, a power of two from 4 to 1024")
    latent_size: int = option(512, "length of the latent vector z")
    fmap_base: int = option(8192, "channel widths: min(fmap_base / 2^(log2(res) - 1), fmap_max) at resolution res")
    fmap_max: int = option(512, "the widest any resolution gets")
    fmap_min: int = option(1, "a floor under the widths of the top resolutions (default 1: none, as the paper's)")
    g_fmap_min: int = option(0, "G's own floor where it differs from D's (default 0: fmap-min for both)")
    num_classes: int = 0          # > 0: class-conditional, the official AC-GAN (one-hot rows into G, D has 1 + C outputs)
    mbstd_group: int = option(4, "minibatch-stddev group size; the effective group is min(this, per-process batch)")
    fused_scale: bool = option(True, "fused up-conv / conv-down (same maths, less work)")
    text_size: int = 0            # > 0: text-conditional on caption embeddings of this size (projection D)
    ca_size: int = 0              # text: conditioning augmentation (StackGAN) to a code of this size; 0: none
    cond_mlp: int = option(0, "text models: hidden layers (256 wide, leaky ReLU) the caption vector passes through "
                           "before G's conditioning augmentation (0: a linear map alone)")
    cond_blocks: bool = option(False, "conditional models: the condition also scales and shifts every resolution "
                               "block's features (FiLM), not only the 4x4 input")
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
        for name in ("g_fmap_min", "num_classes", "text_size", "ca_size", "cond_mlp", "cond_fade_start",
                     "cond_fade_end"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ConfigError(f"model.{name} must be an integer >= 0, got {getattr(self, name)!r}")
        if self.num_classes and self.text_size:
            raise ConfigError(f"model.num_classes ({self.num_classes}) and model.text_size ({self.text_size}) are both "
                              "set: a model is conditioned on classes or on text, not both")
        if self.cond_mlp and not (self.text_size and self.ca_size):
            raise ConfigError(f"model.cond_mlp ({self.cond_mlp}) maps caption vectors into conditioning "
                              "augmentation: it needs model.text_size and model.ca_size")
        if self.ca_size and not self.text_size:
            raise ConfigError(f"model.ca_size ({self.ca_size}) is conditioning augmentation of caption embeddings; "
                              "it needs model.text_size")
        if (self.cond_fade_start or self.cond_fade_end) and not self.cond_size:
            raise ConfigError("model.cond_fade_start / cond_fade_end fade a condition in, but the model is "
                              "unconditional (set num_classes or text_size)")
        if self.cond_blocks and not self.cond_size:
            raise ConfigError("model.cond_blocks conditions G's blocks, but the model is unconditional (set "
                              "num_classes or text_size)")
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
    stabilize_kimg: float | dict[int, float] = option(
        800.0, "kimg spent stabilising each resolution: X, or per resolution 4:400,64:800")
    fade_kimg: float | dict[int, float] = option(
        800.0, "kimg spent fading each resolution in: X, or per resolution 8:400,64:800")
    batch: dict[int, int] = option(factory=lambda: {4: 16}, help="global minibatch: N, or per resolution 4:64,32:32")
    lr: dict[int, float] = option(factory=lambda: {4: 0.001},
                                  help="Adam learning rate: X, or per resolution 4:0.001,1024:0.0015")
    total_kimg: float = option(19000.0, "total length in thousands of real images shown")

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


PRECISIONS = ("auto", "fp32", "bf16")  # progan/train/precision.py resolves auto when a run starts
LOSS_KINDS = ("wgan-gp", "logistic")
AUGMENTATIONS = ("color", "translation", "cutout")  # DiffAugment's transforms, progan/augment.py


def parse_augment(policy: str) -> tuple[str, ...]:
    """'color,translation' -> ('color', 'translation'); '' -> (). Refuses a transform that does not exist."""
    names = tuple(name.strip() for name in policy.split(",") if name.strip())
    unknown = [name for name in names if name not in AUGMENTATIONS]
    if unknown:
        raise ConfigError(f"augment: unknown augmentation {', '.join(map(repr, unknown))}: choose from "
                          f"{', '.join(AUGMENTATIONS)}")
    return names


@dataclass
class LossConfig:
    kind: str = option("wgan-gp", "wgan-gp (the paper's) or logistic: non-saturating logistic with the R1 penalty "
                       "on reals", choices=LOSS_KINDS)
    r1_gamma: float = option(1.0, "logistic: R1 weight, gamma / 2 * |grad D(real)|^2")
    gp_lambda: float = option(10.0, "wgan-gp: weight of the gradient penalty (paper: 10)")
    gp_gamma: float = option(1.0, "wgan-gp: the gradient norm the penalty pulls toward, (|grad| - GAMMA)^2 / GAMMA^2 "
                             "(paper: 1; 750 for its CIFAR-10 run)", metavar="GAMMA")
    drift: float = option(0.001, "wgan-gp: weight of the drift term drift * D(real)^2 (paper: 0.001)")
    cond_weight: float = option(1.0, "classes: weight of the AC-GAN cross-entropy terms in D's and G's loss "
                                "(official: 1)")
    kl_weight: float = option(1.0, "text with conditioning augmentation: weight of its KL term in G's loss")
    mismatch_weight: float = option(1.0, "text: weight of the matching-aware negatives (reals with a wrong caption) "
                                    "in D's loss")
    gan_int: float = option(0.5, "text: share of G's rows conditioned on a mix of two captions (GAN-INT)")
    gp_every: int = option(1, "lazy regularisation: the gradient penalty on every K-th step, weighted K (paper: 1)",
                           metavar="K")

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
    preset: str = "paper"                     # the named preset the run started from (progan/presets.py)
    data: str = ""                            # the prepared dataset folder
    seed: int = option(0, "every random draw of the run is a function of this seed and the images shown")
    mirror: bool = option(False, "random horizontal flips")
    # The short CPU presets take less: a long average lags behind their fast growth.
    ema_beta: float = option(0.999, "G_ema = lerp(G, G_ema, beta) per step (paper: 0.999)")
    ema_kimg: float = option(0.0, "G_ema half-life in kimg instead of a fixed beta (v2: 10; 0: off)")
    adam_betas: tuple[float, float] = option((0.0, 0.99), "Adam's beta1 and beta2 (paper: 0 0.99)",
                                             metavar=("BETA1", "BETA2"))
    adam_eps: float = option(1e-8, "Adam's epsilon")
    minutes: float | None = option(None, "stop (with a checkpoint) after this much wall time (default: the whole "
                                   "schedule)")
    tick_kimg: float = option(1.0, "one line of stats.jsonl every N kimg")
    snapshot_kimg: float = option(50.0, "sample grid every N kimg (and at every phase end)")
    checkpoint_kimg: float = option(100.0, "checkpoint and export the generator every N kimg")
    keep_checkpoints: int = option(3, "how many of the newest checkpoints to keep")
    max_bad_steps: int = option(20, "consecutive non-finite steps before the run stops")
    grid_size: int = option(8, "samples per side of the fixed-latent grid")
    metrics: list[str] = option(factory=list, help="e.g. swd,msssim: appended to metrics.jsonl every --metrics-every "
                                "kimg and at the end")
    metrics_kimg: float = option(0.0, "metrics every N kimg (0: only at the end)", metavar="KIMG")
    metrics_images: int = option(2048, "images per metric evaluation during training")
    caption_variants: bool = option(True, "text: each step draws an image's caption from its dataset's caption "
                                    "variants (other names, keywords, phrasings) where it has them")
    precision: str = option("auto", "auto: bf16 autocast where this machine runs it clearly faster (CUDA GPUs with "
                            "bf16 tensor cores; CPUs whose bf16 convolutions at the run's width are, by a short probe "
                            "at start), else fp32. The run records the resolved choice in config.json and keeps it on "
                            "resume. --bf16 is --precision bf16", choices=PRECISIONS)
    augment: str = option("", "DiffAugment of what D sees: comma-separated from color, translation, cutout ('' or "
                          "none: off, the paper's)", metavar="POLICY")

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
        parse_augment(self.augment)
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
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

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        model = ModelConfig(**d.pop("model"))
        schedule = ScheduleConfig.from_dict(d.pop("schedule"))
        loss = LossConfig(**d.pop("loss"))
        d["adam_betas"] = tuple(d["adam_betas"])
        if "bf16" in d:  # a run from before --precision: bf16 true or false, trained (and resumed) as it says
            bf16 = d.pop("bf16")
            d.setdefault("precision", "bf16" if bf16 else "fp32")
        return cls(model=model, schedule=schedule, loss=loss, **d)
