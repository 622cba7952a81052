"""The progressive training loop: one D step, then one G step, on fresh data, following the schedule.

All randomness of a step (which images, mirror flips, latents, penalty mixing) is a pure function of
(seed, images shown), and the schedule is a pure function of images shown, so a checkpoint only needs the
weights, the optimizer moments and the image counter to continue a run bit for bit.
"""

from __future__ import annotations

import copy
import dataclasses
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

from progan.augment import Draws, augment
from progan.conditioning.spec import export_conditioning
from progan.config import ConfigError, TrainConfig, parse_augment
from progan.data.dataset import (PreparedDataset, blend_reals, mirror, mirror_flags, rank_batch_indices, to_float,
                                  to_uint8)
from progan.fileio import atomic_write_json, read_json
from progan.generate import save_grid
from progan.losses import discriminator_loss, generator_loss
from progan.model_io import export_generator
from progan.networks import Discriminator, Generator
from progan.runtime import keep_freed_memory
from progan.presets import check_batches
from progan.schedule import Phase, phase_at, schedule_warnings
from progan.seeds import derive_seed, generator
from progan.train import checkpoint as ckpt
from progan.train.checkpoint import RunProgress
from progan.conditioning.training import StepConditions, conditions_fingerprint, dataset_conditions, step_conditions
from progan.train.distributed import (Ranks, all_gather_cat, any_rank, average_gradients, barrier, broadcast_module,
                                      init_from_env, mean_over_ranks, wait_for_metrics)
from progan.train.log import RunLog
from progan.train.precision import Precision, resolve
from progan.train.resume import check_same_conditions, prepare_run_dir, record_changes, record_conditions


class TrainingError(RuntimeError):
    """The run cannot go on (for example, losses stay non-finite); the last good checkpoint is intact."""


@dataclass
class TrainState:
    G: Generator
    D: Discriminator
    G_ema: Generator
    opt_G: torch.optim.Adam
    opt_D: torch.optim.Adam
    progress: RunProgress = field(default_factory=RunProgress)
    bad_steps_in_a_row: int = 0

    @property
    def nets(self) -> dict:
        return {"G": self.G, "D": self.D, "G_ema": self.G_ema}

    @property
    def opts(self) -> dict:
        return {"opt_G": self.opt_G, "opt_D": self.opt_D}


FUSED_ADAM_DEVICES = ("cpu", "cuda")


def make_optimizer(module: torch.nn.Module, lr: float, cfg: TrainConfig) -> torch.optim.Adam:
    """Adam over every weight of `module`. Fused where torch has the kernel: one pass over each tensor instead of a
    dozen, 3-4x faster on a CPU (docs/speed.md), the same update within float rounding."""
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


def optimizer_step(opt: torch.optim.Optimizer, params: list[torch.nn.Parameter], ranks: Ranks) -> bool:
    """Average gradients over ranks, then step unless any is non-finite (the same verdict on every rank)."""
    average_gradients(params, ranks)
    if not grads_finite(params):
        opt.zero_grad(set_to_none=True)
        return False
    opt.step()
    return True


def real_batch(dataset: PreparedDataset, phase: Phase, cur_nimg: int, local_batch: int, cfg: TrainConfig,
               ranks: Ranks) -> torch.Tensor:
    """This rank's reals for the step starting at `cur_nimg`, mirrored and faded like G's output."""
    idx = rank_batch_indices(cur_nimg, local_batch, ranks.rank, dataset.count, cfg.seed)
    x = dataset.images(phase.resolution, idx)
    if cfg.mirror:
        x = mirror(x, mirror_flags(cur_nimg + ranks.rank * local_batch, local_batch, cfg.seed))
    return blend_reals(to_float(x.to(ranks.device, non_blocking=True)), phase.alpha)


def penalty_scale(cur_nimg: int, batch: int, cfg: TrainConfig) -> int:
    """The gradient penalty's weight for the step starting at `cur_nimg`: gp_every on every gp_every-th step of the
    phase's batch, else 0 (not computed). A function of images shown, as the rest of the step; 1 every step for
    the paper's gp_every = 1."""
    k = cfg.loss.gp_every
    return k if (cur_nimg // batch) % k == 0 else 0


def train_step(state: TrainState, phase: Phase, real: torch.Tensor, cfg: TrainConfig, ranks: Ranks,
               conds: StepConditions | None = None) -> dict:
    """One D step and one G step. Returns detached scalar tensors (no host sync here beyond the finite check).

    A conditional model takes the step's condition rows `conds` (progan.conditioning.training): D's fakes are generated from
    the reals' rows, G's step from rows drawn from the dataset."""
    G, D = state.G, state.D
    n = real.shape[0]
    # Draw for the global batch and take this rank's slice: N processes see exactly what one process would.
    gen = generator(cfg.seed, state.progress.cur_nimg, "step", device=ranks.device)
    mine = slice(ranks.rank * n, (ranks.rank + 1) * n)
    # bf16: autocast on the run's device (what stays fp32: progan/train/precision.py). train() resolves "auto"
    # before the first step; called on its own with "auto", a step runs in fp32.
    autocast = torch.autocast(ranks.device.type, dtype=torch.bfloat16) if cfg.precision == "bf16" else nullcontext()

    z = torch.randn(n * ranks.world_size, G.latent_size, generator=gen, device=ranks.device)[mine]
    mix = torch.rand(n * ranks.world_size, 1, 1, 1, generator=gen, device=ranks.device)[mine]
    # An unconditional step calls the losses exactly as before (no condition arguments at all).
    d_conds = {} if conds is None else {"cond": conds.real, "wrong_cond": conds.wrong, "wrong_mask": conds.wrong_mask}
    # --augment: D sees reals and fakes through the same random transforms, in both steps (progan/augment.py)
    policy, draw = parse_augment(cfg.augment), Draws(gen, n * ranks.world_size, mine, ranks.device)
    with autocast:
        with torch.no_grad():
            fake = G(z, phase.lod) if conds is None else G(z, phase.lod, conds.real, conds.noise_d)
        loss_d, stats = discriminator_loss(D, augment(real, policy, draw), augment(fake.to(real.dtype), policy, draw),
                                           phase.lod, mix, cfg.loss, **d_conds,
                                           penalty_scale=penalty_scale(state.progress.cur_nimg, phase.batch, cfg))
    state.opt_D.zero_grad(set_to_none=True)
    loss_d.backward()
    d_ok = optimizer_step(state.opt_D, list(D.parameters()), ranks)

    z = torch.randn(n * ranks.world_size, G.latent_size, generator=gen, device=ranks.device)[mine]
    D.requires_grad_(False)  # G's step needs gradients through D, not for D's weights
    with autocast:
        if conds is None:
            loss_g = generator_loss(D, augment(G(z, phase.lod), policy, draw), phase.lod)
        else:
            ca = G.condition_code(conds.fake, conds.noise_g)[1:] if cfg.model.ca_size else None
            fake = augment(G(z, phase.lod, conds.fake, conds.noise_g), policy, draw)
            loss_g = generator_loss(D, fake, phase.lod, cfg.loss, conds.fake, ca)
    state.opt_G.zero_grad(set_to_none=True)
    loss_g.backward()
    D.requires_grad_(True)
    g_ok = optimizer_step(state.opt_G, list(G.parameters()), ranks)
    if g_ok:
        ema_update(state.G_ema, G, cfg.ema_beta_at(phase.batch))
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

def train(cfg: TrainConfig, run_dir: str | Path, resume: bool = False, device: str | None = None,
          progress: bool = True) -> TrainState:
    """Train (or continue) the run in `run_dir` until the schedule's total, the time limit or a signal."""
    run_dir = Path(run_dir)
    cfg.validate()
    keep_freed_memory()
    ranks = init_from_env(device)
    check_batches(cfg, ranks.world_size)
    dataset = PreparedDataset(cfg.data)
    if dataset.resolution < cfg.model.resolution:
        raise ConfigError(f"dataset {cfg.data} is {dataset.resolution}x{dataset.resolution}, smaller than the "
                          f"training resolution {cfg.model.resolution}; prepare it at a higher resolution")
    table, different, variants = dataset_conditions(cfg, dataset, ranks.device)  # refuses a dataset that does not fit
    precision = choose_precision(cfg, ranks, run_dir, resume)
    cfg = dataclasses.replace(cfg, precision=precision.name)  # config.json records the resolved choice
    changes, notes = prepare_run_dir(run_dir, cfg, resume)  # every rank checks: every rank refuses alike
    conditions = conditions_fingerprint(cfg.model, dataset, table, variants)
    check_same_conditions(run_dir, conditions, resume)
    barrier(ranks)

    state = build_state(cfg, ranks.device)
    if resume:
        state.progress = ckpt.load_checkpoint(ckpt.latest_checkpoint(run_dir), state.nets, state.opts)
        state.G_ema.lod = trained_lod(state, cfg)
    for module in state.nets.values():
        broadcast_module(module, ranks)

    total_nimg = round(cfg.schedule.total_kimg * 1000)
    log = RunLog(run_dir, cfg.schedule.total_kimg, state.progress.cur_nimg / 1000, enabled=ranks.is_main,
                 show_bar=progress)
    if ranks.is_main:
        atomic_write_json(run_dir / "config.json", cfg.to_dict())
        record_changes(run_dir, state.progress.cur_nimg, changes)
        record_conditions(run_dir, conditions)
        log.message(f"precision: {precision.name} ({precision.reason})")
        for line in schedule_warnings(cfg) + [f"resumed with {note}" for note in notes]:
            log.message(f"note: {line}")
        if not resume:
            save_reals_grid(run_dir, dataset, cfg)
    grid_z = torch.randn(cfg.grid_size**2, cfg.model.latent_size,
                         generator=generator(cfg.seed, "grid"))
    # A conditional grid's cell i asks for the condition of reals.png's cell i
    grid_cond = None if table is None else table[grid_indices(len(table), cfg.grid_size**2)].cpu()
    export = Export(run_dir, cfg, *export_conditioning(dataset, cfg.model, with_variants=variants is not None))
    deadline = time.monotonic() + cfg.minutes * 60 if cfg.minutes else None
    run = state.progress
    tick = Tick(run.cur_nimg)
    with StopRequest() as stop:
        while True:
            stop_now = stop.signal is not None or (deadline is not None and time.monotonic() > deadline)
            if any_rank(stop_now, ranks) or run.cur_nimg >= total_nimg:
                break
            phase = phase_at(run.cur_nimg, cfg.model.resolution, cfg.schedule)
            if phase.optimizer_key != run.optimizer_key:
                if run.lod is not None and ranks.is_main:  # the end of a phase: a grid of what it reached
                    save_sample_grid(run_dir, state, grid_z, grid_cond, cfg)
                state.opt_G, state.opt_D = make_optimizer(state.G, phase.lr, cfg), make_optimizer(state.D, phase.lr, cfg)
                run.optimizer_key = phase.optimizer_key
            for opt in (state.opt_G, state.opt_D):
                for group in opt.param_groups:
                    group["lr"] = phase.lr

            step_start = time.perf_counter()
            local_batch = phase.batch // ranks.world_size
            reals = real_batch(dataset, phase, run.cur_nimg, local_batch, cfg, ranks)
            conds = None
            if table is not None:  # the reals' images again (a pure function), and the conditions' own stream
                idx = rank_batch_indices(run.cur_nimg, local_batch, ranks.rank, dataset.count, cfg.seed)
                gen = generator(cfg.seed, run.cur_nimg, "conditions", device=ranks.device)
                conds = step_conditions(table, idx, gen, cfg, ranks.world_size, ranks.rank, different, variants)
            stats = train_step(state, phase, reals, cfg, ranks, conds)
            prev_nimg, run.cur_nimg = run.cur_nimg, run.cur_nimg + phase.batch
            run.lod = state.G_ema.lod = phase.lod
            run.train_seconds += time.perf_counter() - step_start
            check_finite(state, stats["ok"], cfg)
            tick.add(stats)

            if crossed(prev_nimg, run.cur_nimg, cfg.tick_kimg) or run.cur_nimg >= total_nimg:
                record = tick.close(state, phase, ranks)
                log.tick(record)
                log.progress(run.cur_nimg / 1000, phase, record["images_per_sec"], record["loss_d"], record["loss_g"])
            if ranks.is_main and crossed(prev_nimg, run.cur_nimg, cfg.snapshot_kimg):
                save_sample_grid(run_dir, state, grid_z, grid_cond, cfg)
            if crossed(prev_nimg, run.cur_nimg, cfg.checkpoint_kimg):
                save_everything(export, state, ranks)
            if cfg.metrics and cfg.metrics_kimg > 0 and crossed(prev_nimg, run.cur_nimg, cfg.metrics_kimg):
                run_metrics(run_dir, state, dataset, table, cfg, ranks, log)

    save_everything(export, state, ranks)
    if cfg.metrics:
        run_metrics(run_dir, state, dataset, table, cfg, ranks, log)
    if ranks.is_main:
        save_sample_grid(run_dir, state, grid_z, grid_cond, cfg, name="final.png")
        if stop.signal is not None:
            log.message(f"stopped by signal {stop.signal} at {run.cur_nimg / 1000:.1f} kimg; "
                        f"checkpoint written; continue with --resume {run_dir}")
    log.close()
    return state


def choose_precision(cfg: TrainConfig, ranks: Ranks, run_dir: Path, resume: bool) -> Precision:
    """The precision the run trains in (auto resolved: progan/train/precision.py), the same on every rank. A resumed
    run's config holds the choice it recorded, kept unless --precision asked for another."""
    choice = resolve(cfg.precision, ranks.device, cfg.model)
    if cfg.precision == "auto":
        # each rank probes its own device; a single fp32 verdict makes it fp32 for all (every rank calls any_rank)
        if any_rank(choice.name == "fp32", ranks) and choice.name == "bf16":
            choice = Precision("fp32", "auto: another process found bf16 not clearly faster on its device")
    config_path = run_dir / "config.json"
    if resume and config_path.is_file():
        recorded = TrainConfig.from_dict(read_json(config_path, "run config")).precision
        if recorded == cfg.precision != "auto":
            note = choice.reason.partition("; ")[2]  # what resolve says about an explicit choice, if anything
            choice = Precision(choice.name, "the run's own, from its config.json (--precision auto|fp32|bf16 "
                               "changes it from here on)" + (f"; {note}" if note else ""))
        elif recorded != cfg.precision:
            how = "the run's own" if choice.name == recorded else f"changed from the run's {recorded}"
            choice = Precision(choice.name, f"{how}; {choice.reason}")
    return choice


def check_finite(state: TrainState, ok: bool, cfg: TrainConfig) -> None:
    if ok:
        state.bad_steps_in_a_row = 0
        return
    state.progress.bad_steps_total += 1
    state.bad_steps_in_a_row += 1
    if state.bad_steps_in_a_row >= cfg.max_bad_steps:
        raise TrainingError(f"{state.bad_steps_in_a_row} steps in a row had non-finite losses or gradients at "
                            f"{state.progress.cur_nimg / 1000:.1f} kimg; stopping. The last good checkpoint is "
                            "intact; try a lower learning rate (--lr) and --resume")


class Tick:
    """Averages over the steps since the last stats line, and over the ranks."""

    def __init__(self, cur_nimg: int):
        self.start_nimg, self.start_time, self.sums, self.counts = cur_nimg, time.perf_counter(), {}, {}

    def add(self, stats: dict) -> None:
        # Per key: a lazily computed term (the penalty with gp_every > 1) is the mean over the steps that have it.
        for k, v in stats.items():
            if k != "ok":
                self.sums[k] = self.sums.get(k, 0.0) + v.float()
                self.counts[k] = self.counts.get(k, 0) + 1

    def close(self, state: TrainState, phase: Phase, ranks: Ranks) -> dict:
        """Every rank calls this at the same step (ticks are a function of images shown)."""
        elapsed = time.perf_counter() - self.start_time
        run = state.progress
        images = run.cur_nimg - self.start_nimg
        names = sorted(self.sums)
        means = mean_over_ranks(torch.stack([self.sums[k] / self.counts[k] for k in names]), ranks) \
            if names else torch.zeros(0)
        record = {"kimg": run.cur_nimg / 1000, "resolution": phase.resolution, "lod": phase.lod,
                  "alpha": phase.alpha, "batch": phase.batch, "lr": phase.lr,
                  **{k: float(v) for k, v in zip(names, means.tolist())},
                  "images_per_sec": images / elapsed if elapsed > 0 else 0.0,
                  "sec_per_kimg": elapsed / images * 1000 if images else 0.0,
                  "train_seconds": run.train_seconds, "bad_steps": run.bad_steps_total}
        self.__init__(run.cur_nimg)
        return record


@dataclass
class Export:
    """Where and what save_everything writes: the run folder, its config, and what the model is conditioned on."""
    run_dir: Path
    cfg: TrainConfig
    conditioning: dict
    condition_tensors: dict


def save_everything(export: Export, state: TrainState, ranks: Ranks) -> None:
    """Checkpoint + exported generator, rank 0 only; every rank waits so that none runs ahead of a failed write."""
    if ranks.is_main:
        cfg = export.cfg
        lod = trained_lod(state, cfg)
        progress = dataclasses.replace(state.progress, lod=lod)
        ckpt.save_checkpoint(export.run_dir, state.nets, state.opts, progress, {
            "world_size": ranks.world_size, "config": cfg.to_dict(), "torch_version": torch.__version__,
            "rng": "every random draw is a pure function of (seed, cur_nimg): nothing else to restore",
        }, keep=cfg.keep_checkpoints)
        export_generator(export.run_dir / "model", state.G_ema, lod=lod, kimg=state.progress.cur_nimg / 1000,
                         extra={"dataset": cfg.data, "run": str(export.run_dir), "conditioning": export.conditioning},
                         tensors=export.condition_tensors)
    barrier(ranks)


def trained_lod(state: TrainState, cfg: TrainConfig) -> float:
    """The lod of the last step trained (before any step: the schedule's starting lod)."""
    run = state.progress
    return run.lod if run.lod is not None else phase_at(run.cur_nimg, cfg.model.resolution, cfg.schedule).lod


@torch.no_grad()
def save_sample_grid(run_dir: Path, state: TrainState, grid_z: torch.Tensor, grid_cond: torch.Tensor | None,
                     cfg: TrainConfig, name: str | None = None) -> None:
    """The fixed latents (and conditions) through G_ema at the level of detail just trained."""
    device = next(state.G_ema.parameters()).device
    conds = [None] * len(grid_z.split(64)) if grid_cond is None else grid_cond.split(64)
    images = torch.cat([to_uint8(state.G_ema(z.to(device), cond=None if c is None else c.to(device))).cpu()
                        for z, c in zip(grid_z.split(64), conds)])
    res = images.shape[-1]
    name = name or f"fakes-{state.progress.cur_nimg:010d}-{res}x{res}.png"
    save_grid(images, run_dir / "samples" / name, nrow=cfg.grid_size, min_cell=64)


METRICS_BATCH = 64


def run_metrics(run_dir: Path, state: TrainState, dataset: PreparedDataset, table: torch.Tensor | None,
                cfg: TrainConfig, ranks: Ranks, log: RunLog) -> None:
    """Append G_ema's metrics to metrics.jsonl. Their randomness is their own generator's: training draws nothing
    from it, so a run with metrics trains exactly like one without. Every rank renders its share of the images
    (the same images one process would); rank 0 computes the metrics while the others wait on a group with a long
    timeout. A failing metric is logged, never fatal."""
    from progan.metrics import append_results, evaluate, generate_fakes, metrics_available_at, shard_range
    kimg = state.progress.cur_nimg / 1000
    names = metrics_available_at(cfg.metrics, state.G_ema.output_resolution)
    if not names:
        return
    seed = derive_seed(cfg.seed, "metrics")
    start, stop = shard_range(cfg.metrics_images, ranks.rank, ranks.world_size, METRICS_BATCH)
    conditions = None if table is None else table.cpu()
    shard = generate_fakes(state.G_ema, cfg.metrics_images, seed, METRICS_BATCH, ranks.device, start, stop,
                           conditions=conditions)
    fakes = all_gather_cat(shard.to(ranks.device), ranks).cpu()
    if ranks.is_main:
        try:
            results = evaluate(state.G_ema, dataset, names, cfg.metrics_images, seed=seed, batch_size=METRICS_BATCH,
                               device=ranks.device, snapshot_kimg=kimg, cache_dir=run_dir / "cache", fakes=fakes,
                               conditions=conditions)
            append_results(run_dir / "metrics.jsonl", results)
            log.message(f"{kimg:.1f} kimg: " + ", ".join(f"{r['metric']} {r['value']:.4g}" for r in results))
        except Exception as e:  # noqa: BLE001 - a metric must never end a days-long run
            log.message(f"{kimg:.1f} kimg: metrics {', '.join(names)} failed and were skipped: "
                        f"{type(e).__name__}: {e}")
    wait_for_metrics(ranks)


def grid_indices(count: int, cells: int) -> torch.Tensor:
    """The dataset images behind the grids' cells: spread evenly over the dataset, so that a dataset stored in some
    order (the emoji by code point: keycaps and symbols first) shows its whole mix; cycled when it is smaller."""
    if count >= cells:
        return torch.linspace(0, count - 1, cells).round().long()
    return torch.arange(cells) % count


def save_reals_grid(run_dir: Path, dataset: PreparedDataset, cfg: TrainConfig) -> None:
    images = dataset.images(cfg.model.resolution, grid_indices(dataset.count, cfg.grid_size**2))
    save_grid(images, run_dir / "samples" / "reals.png", nrow=cfg.grid_size, min_cell=64)
