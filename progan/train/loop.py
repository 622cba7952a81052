"""The progressive training loop: one D step, then one G step, on fresh data, following the schedule.

All randomness of a step (which images, mirror flips, latents, penalty mixing) is a pure function of
(seed, images shown), and the schedule is a pure function of images shown, so a checkpoint only needs the
weights, the optimizer moments and the image counter to continue a run bit for bit.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from progan.config import ConfigError, TrainConfig
from progan.data.dataset import (PreparedDataset, blend_reals, mirror, mirror_flags, rank_batch_indices, to_float,
                                  to_uint8)
from progan.fileio import atomic_write_json, read_json
from progan.generate import save_grid
from progan.losses import discriminator_loss, generator_loss
from progan.model_io import export_generator
from progan.networks import Discriminator, Generator
from progan.runtime import keep_freed_memory
from progan.schedule import Phase, phase_at
from progan.train import checkpoint as ckpt
from progan.train.distributed import Dist, any_rank, average_gradients, barrier, broadcast_module, init_from_env
from progan.train.log import RunLog


class TrainingError(RuntimeError):
    """The run cannot go on (for example, losses stay non-finite); the last good checkpoint is intact."""


@dataclass
class TrainState:
    G: Generator
    D: Discriminator
    G_ema: Generator
    opt_G: torch.optim.Adam
    opt_D: torch.optim.Adam
    cur_nimg: int = 0
    lod: float | None = None  # of the last step trained: what samples and exports use
    optimizer_key: tuple[int, int] | None = None
    bad_steps_total: int = 0
    bad_steps_in_a_row: int = 0
    train_seconds: float = 0.0

    @property
    def nets(self) -> dict:
        return {"G": self.G, "D": self.D, "G_ema": self.G_ema}

    @property
    def opts(self) -> dict:
        return {"opt_G": self.opt_G, "opt_D": self.opt_D}


def derive_seed(*parts) -> int:
    """A well-mixed 63-bit seed from any tuple of ints and strings."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


FUSED_ADAM_DEVICES = ("cpu", "cuda")


def make_optimizer(module: torch.nn.Module, lr: float, cfg: TrainConfig) -> torch.optim.Adam:
    """Adam over every weight of `module`. Fused where torch has the kernel: one pass over each tensor instead of a
    dozen, 3-4x faster on a CPU (benchmarks/README.md), the same update within float rounding."""
    device = next(module.parameters()).device
    return torch.optim.Adam(module.parameters(), lr=lr, betas=cfg.adam_betas, eps=cfg.adam_eps,
                            fused=device.type in FUSED_ADAM_DEVICES)


def build_state(cfg: TrainConfig, device: torch.device) -> TrainState:
    """Fresh networks from the run's seed, without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(cfg.seed, "init"))
        G, D = Generator(cfg.model), Discriminator(cfg.model)
    G_ema = copy.deepcopy(G).requires_grad_(False).eval()
    G, D, G_ema = G.to(device), D.to(device), G_ema.to(device)
    lr = cfg.schedule.lr_at(4)
    return TrainState(G, D, G_ema, make_optimizer(G, lr, cfg), make_optimizer(D, lr, cfg))


@torch.no_grad()
def ema_update(G_ema: torch.nn.Module, G: torch.nn.Module, beta: float) -> None:
    """G_ema = lerp(G, G_ema, beta)."""
    ema_params, params = list(G_ema.parameters()), list(G.parameters())
    torch._foreach_lerp_(ema_params, params, 1.0 - beta)


def grads_finite(params: list[torch.nn.Parameter]) -> bool:
    grads = [p.grad for p in params if p.grad is not None]
    return bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all()) if grads else True


def optimizer_step(opt: torch.optim.Optimizer, params: list[torch.nn.Parameter], d: Dist) -> bool:
    """Average gradients over ranks, then step unless any is non-finite (the same verdict on every rank)."""
    average_gradients(params, d)
    if not grads_finite(params):
        opt.zero_grad(set_to_none=True)
        return False
    opt.step()
    return True


def real_batch(dataset: PreparedDataset, phase: Phase, cur_nimg: int, local_batch: int, cfg: TrainConfig,
               d: Dist) -> torch.Tensor:
    """This rank's reals for the step starting at `cur_nimg`, mirrored and faded like G's output."""
    idx = rank_batch_indices(cur_nimg, local_batch, d.rank, dataset.count, cfg.seed)
    x = dataset.images(phase.resolution, idx)
    if cfg.mirror:
        x = mirror(x, mirror_flags(cur_nimg + d.rank * local_batch, local_batch, cfg.seed))
    return blend_reals(to_float(x.to(d.device, non_blocking=True)), phase.alpha)


def train_step(state: TrainState, phase: Phase, real: torch.Tensor, cfg: TrainConfig, d: Dist) -> dict:
    """One D step and one G step. Returns detached scalar tensors (no host sync here beyond the finite check)."""
    G, D = state.G, state.D
    n = real.shape[0]
    # Draw for the global batch and take this rank's slice: N processes see exactly what one process would.
    gen = torch.Generator(device=d.device).manual_seed(derive_seed(cfg.seed, state.cur_nimg, "step"))
    mine = slice(d.rank * n, (d.rank + 1) * n)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if cfg.bf16 and d.device.type == "cuda"
                else nullcontext())

    z = torch.randn(n * d.world_size, G.latent_size, generator=gen, device=d.device)[mine]
    mix = torch.rand(n * d.world_size, 1, 1, 1, generator=gen, device=d.device)[mine]
    with autocast:
        with torch.no_grad():
            fake = G(z, phase.lod)
        loss_d, stats = discriminator_loss(D, real, fake.to(real.dtype), phase.lod, mix, cfg.loss)
    state.opt_D.zero_grad(set_to_none=True)
    loss_d.backward()
    d_ok = optimizer_step(state.opt_D, list(D.parameters()), d)

    z = torch.randn(n * d.world_size, G.latent_size, generator=gen, device=d.device)[mine]
    D.requires_grad_(False)  # G's step needs gradients through D, not for D's weights
    with autocast:
        loss_g = generator_loss(D, G(z, phase.lod), phase.lod)
    state.opt_G.zero_grad(set_to_none=True)
    loss_g.backward()
    D.requires_grad_(True)
    g_ok = optimizer_step(state.opt_G, list(G.parameters()), d)
    if g_ok:
        ema_update(state.G_ema, G, cfg.ema_beta)
    return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(), **stats, "ok": d_ok and g_ok}


def crossed(prev_nimg: int, cur_nimg: int, every_kimg: float) -> bool:
    every = max(1, round(every_kimg * 1000))
    return prev_nimg // every != cur_nimg // every


class StopRequest:
    """Set by SIGINT/SIGTERM; the loop finishes its step, writes a checkpoint and returns."""

    def __init__(self):
        self.signal = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no signal handling, as for any library call
                pass
        return self

    def _handle(self, signum, frame):
        self.signal = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# ---------------------------------------------------------------------------------------------------------------
# Run folder

BOUNDS = ("minutes", "schedule.total_kimg", "snapshot_kimg", "checkpoint_kimg", "keep_checkpoints", "metrics",
          "metrics_kimg", "metrics_images", "data")


def config_differences(saved: dict, new: dict, prefix: str = "") -> list[str]:
    diffs = []
    for key in sorted(set(saved) | set(new)):
        name = f"{prefix}{key}"
        a, b = saved.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict) and name != "schedule.batch" and name != "schedule.lr":
            diffs += config_differences(a, b, f"{name}.")
        elif a != b and name not in BOUNDS:
            diffs.append(f"{name}: {a!r} in the run, {b!r} now")
    return diffs


def prepare_run_dir(run_dir: Path, cfg: TrainConfig, resume: bool) -> None:
    """Refuse a folder holding another run; on resume refuse a config that changes more than the run's bounds."""
    config_path = run_dir / "config.json"
    if resume:
        if not config_path.is_file():
            raise ConfigError(f"cannot resume: {run_dir} holds no run (no config.json)")
        saved = json.loads(json.dumps(read_json(config_path, "run config")))
        new = json.loads(cfg.to_json())
        diffs = config_differences(saved, new)
        if diffs:
            raise ConfigError(f"cannot resume {run_dir} with a different configuration: " + "; ".join(diffs))
        ckpt.latest_checkpoint(run_dir)
    elif config_path.exists():
        raise ConfigError(f"{run_dir} already holds a run; resume it with --resume {run_dir} or choose a new folder")
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(f"{run_dir} is not empty and holds no progan run; choose a new folder")


# ---------------------------------------------------------------------------------------------------------------

def train(cfg: TrainConfig, run_dir: str | Path, resume: bool = False, device: str | None = None,
          progress: bool = True) -> TrainState:
    """Train (or continue) the run in `run_dir` until the schedule's total, the time limit or a signal."""
    run_dir = Path(run_dir)
    cfg.validate()
    keep_freed_memory()
    d = init_from_env(device)
    cfg.check_batches(d.world_size)
    dataset = PreparedDataset(cfg.data)
    if dataset.resolution < cfg.model.resolution:
        raise ConfigError(f"dataset {cfg.data} is {dataset.resolution}x{dataset.resolution}, smaller than the "
                          f"training resolution {cfg.model.resolution}; prepare it at a higher resolution")
    if d.is_main:
        prepare_run_dir(run_dir, cfg, resume)
        atomic_write_json(run_dir / "config.json", cfg.to_dict())
    barrier(d)

    state = build_state(cfg, d.device)
    if resume:
        saved = ckpt.load_checkpoint(ckpt.latest_checkpoint(run_dir), state.nets, state.opts)
        state.cur_nimg = saved["cur_nimg"]
        state.lod = saved["lod"] if saved["cur_nimg"] else None
        state.G_ema.lod = trained_lod(state, cfg)
        state.optimizer_key = tuple(saved["optimizer_key"]) if saved["optimizer_key"] else None
        state.bad_steps_total = saved["bad_steps_total"]
        state.train_seconds = saved["train_seconds"]
    for module in state.nets.values():
        broadcast_module(module, d)

    total_nimg = round(cfg.schedule.total_kimg * 1000)
    log = RunLog(run_dir, cfg.schedule.total_kimg, state.cur_nimg / 1000, enabled=d.is_main, show_bar=progress)
    grid_z = torch.randn(cfg.grid_size**2, cfg.model.latent_size,
                         generator=torch.Generator().manual_seed(derive_seed(cfg.seed, "grid")))
    if d.is_main and not resume:
        save_reals_grid(run_dir, dataset, cfg)
    deadline = time.monotonic() + cfg.minutes * 60 if cfg.minutes else None
    tick = Tick(state.cur_nimg)
    with StopRequest() as stop:
        while True:
            stop_now = stop.signal is not None or (deadline is not None and time.monotonic() > deadline)
            if any_rank(stop_now, d) or state.cur_nimg >= total_nimg:
                break
            phase = phase_at(state.cur_nimg, cfg.model.resolution, cfg.schedule)
            if phase.optimizer_key != state.optimizer_key:
                if state.lod is not None and d.is_main:  # the end of a phase: a grid of what it reached
                    save_sample_grid(run_dir, state, grid_z, cfg)
                state.opt_G, state.opt_D = make_optimizer(state.G, phase.lr, cfg), make_optimizer(state.D, phase.lr, cfg)
                state.optimizer_key = phase.optimizer_key
            for opt in (state.opt_G, state.opt_D):
                for group in opt.param_groups:
                    group["lr"] = phase.lr

            step_start = time.perf_counter()
            local_batch = phase.batch // d.world_size
            stats = train_step(state, phase, real_batch(dataset, phase, state.cur_nimg, local_batch, cfg, d), cfg, d)
            prev_nimg, state.cur_nimg = state.cur_nimg, state.cur_nimg + phase.batch
            state.lod = state.G_ema.lod = phase.lod
            state.train_seconds += time.perf_counter() - step_start
            check_finite(state, stats["ok"], cfg)
            tick.add(stats)

            if crossed(prev_nimg, state.cur_nimg, cfg.tick_kimg) or state.cur_nimg >= total_nimg:
                record = tick.close(state, phase)
                log.tick(record)
                log.progress(state.cur_nimg / 1000, phase, record["images_per_sec"], record["loss_d"], record["loss_g"])
            if d.is_main and crossed(prev_nimg, state.cur_nimg, cfg.snapshot_kimg):
                save_sample_grid(run_dir, state, grid_z, cfg)
            if crossed(prev_nimg, state.cur_nimg, cfg.checkpoint_kimg):
                save_everything(run_dir, state, cfg, d)
            if cfg.metrics and cfg.metrics_kimg > 0 and crossed(prev_nimg, state.cur_nimg, cfg.metrics_kimg):
                run_metrics(run_dir, state, dataset, cfg, d, log)

    save_everything(run_dir, state, cfg, d)
    if cfg.metrics:
        run_metrics(run_dir, state, dataset, cfg, d, log)
    if d.is_main:
        save_sample_grid(run_dir, state, grid_z, cfg, name="final.png")
        if stop.signal is not None:
            log.message(f"stopped by signal {stop.signal} at {state.cur_nimg / 1000:.1f} kimg; "
                        f"checkpoint written; continue with --resume {run_dir}")
    log.close()
    return state


def check_finite(state: TrainState, ok: bool, cfg: TrainConfig) -> None:
    if ok:
        state.bad_steps_in_a_row = 0
        return
    state.bad_steps_total += 1
    state.bad_steps_in_a_row += 1
    if state.bad_steps_in_a_row >= cfg.max_bad_steps:
        raise TrainingError(f"{state.bad_steps_in_a_row} steps in a row had non-finite losses or gradients at "
                            f"{state.cur_nimg / 1000:.1f} kimg; stopping. The last good checkpoint is intact; "
                            "try a lower learning rate (--lr) and --resume")


class Tick:
    """Averages over the steps since the last stats line."""

    def __init__(self, cur_nimg: int):
        self.start_nimg, self.start_time, self.sums, self.steps = cur_nimg, time.perf_counter(), {}, 0

    def add(self, stats: dict) -> None:
        for k, v in stats.items():
            if k != "ok":
                self.sums[k] = self.sums.get(k, 0.0) + v.float()
        self.steps += 1

    def close(self, state: TrainState, phase: Phase) -> dict:
        elapsed = time.perf_counter() - self.start_time
        images = state.cur_nimg - self.start_nimg
        record = {"kimg": state.cur_nimg / 1000, "resolution": phase.resolution, "lod": phase.lod,
                  "alpha": phase.alpha, "batch": phase.batch, "lr": phase.lr,
                  **{k: float(v) / max(self.steps, 1) for k, v in self.sums.items()},
                  "images_per_sec": images / elapsed if elapsed > 0 else 0.0,
                  "sec_per_kimg": elapsed / images * 1000 if images else 0.0,
                  "train_seconds": state.train_seconds, "bad_steps": state.bad_steps_total}
        self.__init__(state.cur_nimg)
        return record


def save_everything(run_dir: Path, state: TrainState, cfg: TrainConfig, d: Dist) -> None:
    """Checkpoint + exported generator, rank 0 only; every rank waits so that none runs ahead of a failed write."""
    if d.is_main:
        lod = trained_lod(state, cfg)
        ckpt.save_checkpoint(run_dir, state.nets, state.opts, {
            "cur_nimg": state.cur_nimg, "lod": lod, "optimizer_key": state.optimizer_key,
            "bad_steps_total": state.bad_steps_total, "train_seconds": state.train_seconds,
            "world_size": d.world_size, "config": cfg.to_dict(), "torch_version": torch.__version__,
            "rng": "every random draw is a pure function of (seed, cur_nimg): nothing else to restore",
        }, keep=cfg.keep_checkpoints)
        export_generator(run_dir / "model", state.G_ema, lod=lod, kimg=state.cur_nimg / 1000,
                         extra={"dataset": cfg.data, "run": str(run_dir)})
    barrier(d)


def trained_lod(state: TrainState, cfg: TrainConfig) -> float:
    """The lod of the last step trained (before any step: the schedule's starting lod)."""
    return state.lod if state.lod is not None else phase_at(state.cur_nimg, cfg.model.resolution, cfg.schedule).lod


@torch.no_grad()
def save_sample_grid(run_dir: Path, state: TrainState, grid_z: torch.Tensor, cfg: TrainConfig,
                     name: str | None = None) -> None:
    """The fixed latents through G_ema at the level of detail just trained."""
    device = next(state.G_ema.parameters()).device
    images = torch.cat([to_uint8(state.G_ema(z.to(device))).cpu() for z in grid_z.split(64)])
    res = images.shape[-1]
    name = name or f"fakes-{state.cur_nimg:010d}-{res}x{res}.png"
    save_grid(images, run_dir / "samples" / name, nrow=cfg.grid_size, min_cell=64)


def run_metrics(run_dir: Path, state: TrainState, dataset: PreparedDataset, cfg: TrainConfig, d: Dist,
                log: RunLog) -> None:
    """Append G_ema's metrics to metrics.jsonl (rank 0). Their randomness is their own generator's: training
    draws nothing from it, so a run with metrics trains exactly like one without."""
    if d.is_main:
        from progan.metrics import append_results, evaluate
        from progan.metrics.registry import MIN_RESOLUTION
        res = state.G_ema.output_resolution
        names = [m for m in cfg.metrics if res >= MIN_RESOLUTION.get(m, 1)]
        if names:
            results = evaluate(state.G_ema, dataset, names, cfg.metrics_images, seed=derive_seed(cfg.seed, "metrics"),
                               device=d.device, snapshot_kimg=state.cur_nimg / 1000, cache_dir=run_dir / "cache")
            append_results(run_dir / "metrics.jsonl", results)
            log.message(f"{state.cur_nimg / 1000:.1f} kimg: " + ", ".join(
                f"{r['metric']} {r['value']:.4g}" for r in results))
    barrier(d)


def save_reals_grid(run_dir: Path, dataset: PreparedDataset, cfg: TrainConfig) -> None:
    n = min(cfg.grid_size**2, dataset.count)
    images = dataset.images(cfg.model.resolution, torch.arange(n))
    save_grid(images, run_dir / "samples" / "reals.png", nrow=cfg.grid_size, min_cell=64)
