"""One training step's time for a preset at its resolutions, at other widths, and across processes.

    python -m benchmarks.step_speed --preset demo                             # 16x16 and 32x32 at the preset's widths
    python -m benchmarks.step_speed --preset demo --fmap-base 512 256 1024    # a table row per width
    OMP_NUM_THREADS=1 torchrun --nproc_per_node 2 -m benchmarks.step_speed --preset demo   # the same split over 2 ranks
    python -m benchmarks.step_speed --run runs/demo-text                      # a run's own config, conditions included

Each row is `train_step` of the loop (D step with the gradient penalty, G step, EMA; gradients averaged over the
ranks under torchrun) on random reals at the stable phase of one resolution and the preset's global batch there,
the median of --steps timed steps after three untimed ones. With --run, the step is that run's (its config.json:
widths, precision, loss, and for a conditional run its dataset's condition rows, drawn as the loop draws them). A
wider or narrower network is the preset's (or the run's) with another fmap_base (channels min(fmap_base / 2^stage,
fmap_max), at least --fmap-min). Under torchrun every rank takes its share of the batch, as in training, and rank 0
prints. This is the measurement behind the demo preset's widths (docs/demo-recipe.md): what a narrower network buys
in images per second where the demo spends its time, and whether two single-thread processes beat one two-thread
process on a 2-core CPU (they do not: docs/speed.md).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from pathlib import Path

import torch

from progan.conditioning.training import dataset_conditions, step_conditions
from progan.config import TrainConfig
from progan.data.dataset import PreparedDataset, rank_batch_indices
from progan.presets import preset
from progan.schedule import kimg_to_reach, phase_at
from progan.seeds import generator
from progan.train.distributed import init_from_env, shutdown
from progan.train.loop import build_state, train_step


def stable_phase(cfg, resolution: int):
    """The schedule's phase in the middle of `resolution`'s stabilisation (or of the final one)."""
    kimg = kimg_to_reach(resolution, cfg.schedule) + 0.5 * cfg.schedule.stabilize_at(resolution)
    phase = phase_at(round(kimg * 1000), cfg.model.resolution, cfg.schedule)
    assert phase.resolution == resolution and phase.alpha == 1.0, phase
    return phase


def step_seconds(cfg, resolution: int, steps: int, ranks, conditioned: bool = False) -> tuple[float, int]:
    """The median step time and the global batch; `conditioned`: the step takes the run's dataset's condition rows
    (drawn outside the timing, as the loop draws them)."""
    state = build_state(cfg, ranks.device)
    phase = stable_phase(cfg, resolution)
    local = phase.batch // ranks.world_size
    real = torch.rand(local, 3, resolution, resolution, generator=torch.Generator().manual_seed(0)) * 2 - 1
    if conditioned:
        dataset = PreparedDataset(cfg.data)
        table, different, variants = dataset_conditions(cfg, dataset, ranks.device)
    times = []
    for step in range(steps + 3):
        conds = None
        if conditioned and table is not None:
            idx = rank_batch_indices(step * phase.batch, local, ranks.rank, dataset.count, cfg.seed)
            gen = generator(cfg.seed, step * phase.batch, "conditions", device=ranks.device)
            conds = step_conditions(table, idx, gen, cfg, ranks.world_size, ranks.rank, different, variants)
        start = time.perf_counter()
        train_step(state, phase, real, cfg, ranks, conds)
        times.append(time.perf_counter() - start)
    return statistics.median(times[3:]), phase.batch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="demo")
    p.add_argument("--run", type=Path, default=None,
                   help="time this run's own step (RUN/config.json, its dataset's conditions) instead of a preset's")
    p.add_argument("--resolution", type=int, default=32, help="the preset's final resolution (default 32)")
    p.add_argument("--at", type=int, nargs="+", default=[16, 32], help="resolutions to time (default 16 32)")
    p.add_argument("--fmap-base", type=int, nargs="+", default=None, help="widths to time (default: the preset's)")
    p.add_argument("--fmap-min", type=int, nargs="+", default=None,
                   help="floors under the widths to time, each with every --fmap-base (default: the preset's)")
    p.add_argument("--steps", type=int, default=15)
    args = p.parse_args(argv)
    ranks = init_from_env("cpu")

    def base_config() -> TrainConfig:
        if args.run is None:
            return preset(args.preset, args.resolution)
        return TrainConfig.from_dict(json.loads((args.run / "config.json").read_text()))  # precision as it resolved

    widths = args.fmap_base or [base_config().model.fmap_base]
    if ranks.is_main:
        what = f"{args.run}'s config ({base_config().precision})" if args.run else f"{args.preset} preset"
        print(f"{what}, {ranks.world_size} process(es) x {torch.get_num_threads()} thread(s), "
              f"torch {torch.__version__}\n")
        print("| fmap_base | fmap_min | channels at these resolutions | resolution | batch | ms / step | images/s |")
        print("| --: | --: | --- | --: | --: | --: | --: |")
    floors = args.fmap_min or [base_config().model.fmap_min]
    for fmap_base, fmap_min in itertools.product(widths, floors):
        cfg = base_config()
        cfg.model.fmap_base, cfg.model.fmap_min = fmap_base, fmap_min
        for res in args.at:
            seconds, batch = step_seconds(cfg, res, args.steps, ranks, conditioned=args.run is not None)
            if ranks.is_main:
                channels = ", ".join(f"{r}: {cfg.model.channels(r)}" for r in (res // 2, res))
                print(f"| {fmap_base} | {fmap_min} | {channels} | {res}x{res} | {batch} | {1000 * seconds:.1f} "
                      f"| {batch / seconds:.0f} |", flush=True)
    shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
