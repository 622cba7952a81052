"""Training speed per resolution: the optimised code against a plain reference of the same networks.

    python benchmarks/train_speed.py                                   # paper preset, 4x4 .. 32x32
    python benchmarks/train_speed.py --preset demo --steps 5 --out /tmp/demo.json
    python benchmarks/train_speed.py --resampling                      # fused vs unfused, layer by layer
    OMP_WAIT_POLICY=ACTIVE python benchmarks/train_speed.py            # spin-waiting OpenMP threads

For each resolution, one full training step (D step with gradient penalty, G step, EMA: `train_step` from the loop,
on random reals) in two modes, interleaved step by step so that both see the same machine load:
  reference  every layer in its textbook form (`set_plain`: unfused up/down sampling, weights scaled on every call),
             NCHW, eager, for-loop Adam
  optimised  the library as it runs in training
Images/s are medians over --steps timed steps (after two untimed warm-up steps per mode); the speedup is the median
of the step-by-step ratios (each pair ran back to back, so a busy moment on a shared machine hits both).

FLOPs are counted per operation while the warm-up step runs: a dispatch mode adds up torch.utils.flop_counter's
formulas for every convolution, convolution backward and matmul, the penalty's double backward included
(FlopCounterMode itself fails there: its module tracker does not support autograd.grad). Elementwise work is not
counted. As a cross-check the table also gives an analytic count of the reference: forward FLOPs of G and D per
image from the layer shapes, times 4 for G (a no-grad forward for the fakes; forward + backward in its own step)
and 14 for D (forward + backward over reals and fakes: 2 x 3; the penalty's forward, input gradient and double
backward: 6; forward + input gradient in G's step: 2). The machine's fp32 matmul speed (2048^3 sgemm, same
threads) is measured between the steps, so every row says what fraction of the machine it uses.
"""

from __future__ import annotations

import os

# Before torch loads OpenMP: threads that spin while waiting lose a whole scheduler tick per operation whenever
# another process (another torch job above all) holds a core, which made steps here 2.5-40x slower on a shared
# 2-core machine. Passive waiting keeps the numbers about the code. Set OMP_WAIT_POLICY=ACTIVE to compare.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import collections
import math
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map
from torch.utils.flop_counter import flop_registry

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from progan.config import TrainConfig, preset  # noqa: E402
from progan.fileio import atomic_write_json  # noqa: E402
from progan.layers import set_plain  # noqa: E402
from progan.runtime import keep_freed_memory  # noqa: E402
from progan.schedule import Phase  # noqa: E402
from progan.train.distributed import Dist  # noqa: E402
from progan.train.loop import TrainState, build_state, train_step  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


# ---------------------------------------------------------------------------------------------------------------
# FLOPs

class FlopCount(TorchDispatchMode):
    """FLOPs of every operation torch.utils.flop_counter has a formula for, double backward included."""

    def __init__(self):
        super().__init__()
        self.by_op = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        count = flop_registry.get(func._overloadpacket)
        if count is not None:
            shape = lambda t: t.shape if isinstance(t, torch.Tensor) else t  # noqa: E731
            self.by_op[str(func._overloadpacket)] += count(*tree_map(shape, args), **tree_map(shape, kwargs),
                                                          out_val=tree_map(shape, out))
        return out

    @property
    def total(self) -> int:
        return sum(self.by_op.values())


def forward_flops(cfg: TrainConfig, res: int, fused: bool) -> tuple[float, float]:
    """Analytic forward FLOPs of (G, D) per image at resolution `res` (stable phase), from the layer shapes."""
    m = cfg.model
    c = m.channels
    c4 = c(4)
    conv = lambda cin, cout, r, k=3: 2 * k * k * cin * cout * r * r  # noqa: E731
    resample = lambda cin, cout, r: (2 * 16 * cin * cout * (r // 2) ** 2) if fused else conv(cin, cout, r)  # noqa: E731
    g = 2 * (m.latent_size + m.num_classes) * c4 * 16 + conv(c4, c4, 4) + conv(c(res), 3, res, k=1)
    d = conv(3, c(res), res, k=1) + conv(c4 + 1, c4, 4) + 2 * c4 * 16 * c4 + 2 * c4 * (1 + m.num_classes)
    r = 8
    while r <= res:
        g += resample(c(r // 2), c(r), r) + conv(c(r), c(r), r)
        d += conv(c(r), c(r), r) + resample(c(r), c(r // 2), r)
        r *= 2
    return g, d


STEP_MULTIPLIERS = {"G": 4, "D": 14}  # forward-equivalents per image in one training step (see the docstring)


def analytic_step_flops(cfg: TrainConfig, res: int, fused: bool) -> float:
    g, d = forward_flops(cfg, res, fused)
    return STEP_MULTIPLIERS["G"] * g + STEP_MULTIPLIERS["D"] * d


# ---------------------------------------------------------------------------------------------------------------
# Where the time goes

CATEGORIES = ("convolution", "matmul", "optimizer", "ema", "other ops", "outside ops")
FLOP_CATEGORY = {"aten.convolution": "convolution", "aten.convolution_backward": "convolution",
                 "aten._convolution": "convolution", "aten.mm": "matmul", "aten.addmm": "matmul",
                 "aten.bmm": "matmul", "aten.baddbmm": "matmul"}


def op_category(name: str, in_optimizer: bool) -> str:
    if in_optimizer:
        return "optimizer"
    if "convolution" in name or "conv_transpose" in name or name.startswith("aten::conv"):
        return "convolution"
    if name in ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul"):
        return "matmul"
    if name == "aten::_foreach_lerp_":  # only the EMA of G's weights uses it
        return "ema"
    return "other ops"


def time_breakdown(state: TrainState, phase: Phase, real: torch.Tensor, cfg: TrainConfig) -> dict[str, float]:
    """Seconds of one profiled step by category: the self time of every aten operation (the optimizers' own in
    "optimizer"), and the rest of the step's wall time, spent outside any operation (Python, the autograd engine's
    bookkeeping, idle threads), as "outside ops". The profiler slows small operations a little."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        train_step(state, phase, real, cfg, Dist())
        wall = time.perf_counter() - t0
    seconds = dict.fromkeys(CATEGORIES, 0.0)
    for event in prof.events():
        if not event.name.startswith("aten::"):
            continue
        parent, in_optimizer = event.cpu_parent, False
        while parent is not None and not in_optimizer:
            in_optimizer = parent.name.startswith("Optimizer.step")
            parent = parent.cpu_parent
        seconds[op_category(event.name, in_optimizer)] += event.self_cpu_time_total / 1e6
    seconds["outside ops"] = max(0.0, wall - sum(seconds.values()))
    return seconds


# ---------------------------------------------------------------------------------------------------------------
# Timing

def matmul_gflops(n: int = 2048, repeats: int = 3) -> float:
    """The machine's fp32 matmul speed right now (median of `repeats`), with the current thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


def minor_faults() -> int:
    """Page faults served without I/O so far: memory the kernel hands (back) to the process, zero-filled."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def make_state(cfg: TrainConfig, mode: str) -> TrainState:
    state = build_state(cfg, torch.device("cpu"))
    if mode == "reference":
        for net in state.nets.values():
            set_plain(net)
        lr = cfg.schedule.lr_at(4)
        state.opt_G = torch.optim.Adam(state.G.parameters(), lr, cfg.adam_betas, cfg.adam_eps, foreach=False)
        state.opt_D = torch.optim.Adam(state.D.parameters(), lr, cfg.adam_betas, cfg.adam_eps, foreach=False)
    return state


def phase_for(cfg: TrainConfig, res: int, batch: int, alpha: float) -> Phase:
    """The phase training `res` with the newest block at `alpha` (1: stable)."""
    lod = math.log2(cfg.model.resolution // res) + (1.0 - alpha if res > 4 else 0.0)
    return Phase(kimg=0.0, lod=lod, resolution=res, alpha=1.0 - (lod - math.floor(lod)), batch=batch,
                 lr=cfg.schedule.lr_at(res))


def default_batch(cfg: TrainConfig, res: int, max_step_gflop: float) -> int:
    """The preset's batch at `res`, halved while one optimised step would exceed `max_step_gflop`."""
    batch = cfg.schedule.batch_at(res)
    per_image = analytic_step_flops(cfg, res, fused=cfg.model.fused_scale) / 1e9
    while batch > 1 and batch % 2 == 0 and batch * per_image > max_step_gflop:
        batch //= 2
    return batch


def bench_resolution(cfg: TrainConfig, states: dict, res: int, batch: int, steps: int, alpha: float) -> dict:
    d = Dist()
    phase = phase_for(cfg, res, batch, alpha)
    real = torch.rand(batch, 3, res, res, generator=torch.Generator().manual_seed(res)) * 2 - 1
    row = {"resolution": res, "batch": batch, "alpha": phase.alpha, "lod": phase.lod, "modes": {}}
    for mode, state in states.items():  # warm-up step, counting FLOPs
        with FlopCount() as fc:
            stats = train_step(state, phase, real, cfg, d)
        row["modes"][mode] = {"gflop_per_image": fc.total / batch / 1e9, "seconds": [],
                              "gflop_by_op": {k: v / batch / 1e9 for k, v in fc.by_op.items()},
                              "loss_d": float(stats["loss_d"]), "loss_g": float(stats["loss_g"])}
    for mode, state in states.items():  # a second warm-up (the allocator is still growing after the first), profiled
        seconds = time_breakdown(state, phase, real, cfg)
        flops = row["modes"][mode]["gflop_by_op"]
        row["modes"][mode]["profile_seconds"] = seconds
        row["modes"][mode]["gflops_in"] = {
            cat: batch * sum(v for op, v in flops.items() if FLOP_CATEGORY.get(op) == cat) / max(seconds[cat], 1e-9)
            for cat in ("convolution", "matmul")}
    matmul = []
    for i in range(steps):
        for mode, state in list(states.items())[::1 if i % 2 == 0 else -1]:  # alternate who goes first
            faults, t0 = minor_faults(), time.perf_counter()
            train_step(state, phase, real, cfg, d)
            row["modes"][mode]["seconds"].append(time.perf_counter() - t0)
            row["modes"][mode].setdefault("minor_faults", []).append(minor_faults() - faults)
        matmul.append(matmul_gflops())
    row["matmul_gflops"] = statistics.median(matmul)
    for m in row["modes"].values():
        m["images_per_sec"] = batch / statistics.median(m["seconds"])
        m["gflops"] = m["gflop_per_image"] * m["images_per_sec"]
        m["fraction_of_matmul"] = m["gflops"] / row["matmul_gflops"]
    row["analytic_reference_gflop_per_image"] = analytic_step_flops(cfg, res, fused=False) / 1e9
    # the median of step-by-step ratios: each pair of steps ran back to back, under the same load
    ref, opt = row["modes"]["reference"]["seconds"], row["modes"]["optimised"]["seconds"]
    row["speedup"] = statistics.median(r / o for r, o in zip(ref, opt))
    # The best this step could do on this machine: the optimised FLOPs, every one at the matmul rate.
    best_seconds = row["modes"]["optimised"]["gflop_per_image"] * batch / row["matmul_gflops"]
    row["speedup_ceiling"] = statistics.median(ref) / best_seconds
    return row


def print_table(rows: list[dict]) -> None:
    print(f"\n{'res':>4} {'batch':>5} | {'ref img/s':>9} {'opt img/s':>9} {'speedup':>7} {'ceiling':>7} | "
          f"{'GFLOP/img ref':>13} {'opt':>6} {'analytic':>8} | {'GFLOP/s ref':>11} {'opt':>6} | "
          f"{'matmul':>6} {'ref/matmul':>10} {'opt/matmul':>10}")
    for r in rows:
        ref, opt = r["modes"]["reference"], r["modes"]["optimised"]
        print(f"{r['resolution']:>4} {r['batch']:>5} | {ref['images_per_sec']:>9.2f} {opt['images_per_sec']:>9.2f} "
              f"{r['speedup']:>6.2f}x {r['speedup_ceiling']:>6.2f}x | {ref['gflop_per_image']:>13.2f} "
              f"{opt['gflop_per_image']:>6.2f} {r['analytic_reference_gflop_per_image']:>8.2f} | "
              f"{ref['gflops']:>11.1f} {opt['gflops']:>6.1f} | {r['matmul_gflops']:>6.1f} "
              f"{ref['fraction_of_matmul']:>9.0%} {opt['fraction_of_matmul']:>9.0%}")


def print_breakdown(rows: list[dict]) -> None:
    print(f"\nWhere the time goes (ms of one profiled step; GFLOP/s inside the convolutions and matmuls):")
    print(f"{'res':>4} {'mode':>9} | " + " ".join(f"{c:>11}" for c in CATEGORIES) + f" | {'conv GFLOP/s':>12} "
          f"{'matmul GFLOP/s':>14} | {'page faults/step':>16}")
    for r in rows:
        for mode, m in r["modes"].items():
            print(f"{r['resolution']:>4} {mode:>9} | " + " ".join(f"{m['profile_seconds'][c] * 1e3:>11.1f}"
                                                              for c in CATEGORIES)
                  + f" | {m['gflops_in']['convolution']:>12.1f} {m['gflops_in']['matmul']:>14.1f} | "
                  f"{statistics.median(m['minor_faults']):>16.0f}")


def bench_resampling(repeats: int = 3) -> list[dict]:
    """Fused against unfused up/down convs, layer by layer: the measurements behind FUSED_MIN_POSITIONS_CPU.

    Times a forward, a forward + backward, and the gradient penalty's pattern (input gradient with create_graph,
    then backward through it) for the paper's 512 channels and the CPU presets' 128 and 64, at several batch sizes.
    """
    import copy

    import progan.layers as layers
    from progan.layers import EqualizedConv2d

    def median_time(f):
        f()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            f()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    def patterns(conv, x):
        xg = x.clone().requires_grad_(True)

        def forward():
            with torch.no_grad():
                conv(x)

        def backward():
            conv(xg).sum().backward()

        def penalty():
            (g,) = torch.autograd.grad(conv(xg).square().sum(), xg, create_graph=True)
            g.square().sum().backward()
        return {"forward": forward, "backward": backward, "penalty": penalty}

    rows = []
    saved = layers.FUSED_MIN_POSITIONS_CPU
    try:
        for channels, batch, low_res in [(512, 4, 4), (512, 16, 4), (512, 4, 8), (512, 32, 4), (512, 16, 8),
                                         (512, 4, 16), (128, 16, 4), (128, 64, 4), (64, 64, 4), (64, 64, 8)]:
            for direction in ("up", "down"):
                torch.manual_seed(0)
                fused = EqualizedConv2d(channels, channels, 3, up=direction == "up", down=direction == "down")
                plain = copy.deepcopy(fused)
                plain.fused = False
                x = torch.randn(batch, channels, *(2 * [low_res if direction == "up" else 2 * low_res]))
                layers.FUSED_MIN_POSITIONS_CPU = 0
                row = {"channels": channels, "batch": batch, "direction": direction,
                       "low_res_positions": batch * low_res * low_res}
                for name in ("forward", "backward", "penalty"):
                    t_fused = median_time(patterns(fused, x)[name])
                    t_plain = median_time(patterns(plain, x)[name])
                    row[name] = t_plain / t_fused
                rows.append(row)
                print(f"  {direction:4} {channels:3} ch, batch {batch:2}, {low_res}x{low_res} low side "
                      f"({row['low_res_positions']:4} positions): fused is "
                      + ", ".join(f"{row[n]:.2f}x" for n in ("forward", "backward", "penalty"))
                      + " (forward, forward+backward, penalty)", flush=True)
    finally:
        layers.FUSED_MIN_POSITIONS_CPU = saved
    return rows


def machine_info() -> dict:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "platform": platform.platform(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(default)"),
            "loadavg_at_start": os.getloadavg()}


def profile_step(cfg: TrainConfig, state: TrainState, res: int, batch: int, alpha: float, rows: int = 25) -> str:
    """torch.profiler table of one optimised step: where the time goes."""
    from torch.profiler import ProfilerActivity, profile
    phase = phase_for(cfg, res, batch, alpha)
    real = torch.rand(batch, 3, res, res) * 2 - 1
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        train_step(state, phase, real, cfg, Dist())
    return prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="paper")
    p.add_argument("--resolution", type=int, default=32, help="the highest resolution to measure (default 32)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per mode and resolution (default 3)")
    p.add_argument("--batch", type=int, default=None, help="batch at every resolution (default: the preset's, "
                   "halved while one step would exceed --max-step-gflop)")
    p.add_argument("--max-step-gflop", type=float, default=1400.0)
    p.add_argument("--alpha", type=float, default=1.0, help="fade-in of the newest block (default 1: stable)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--resampling", action="store_true", help="instead: fused against unfused up/down convs, "
                   "layer by layer (the measurements behind FUSED_MIN_POSITIONS_CPU)")
    p.add_argument("--profile", action="store_true", help="also print a profile of one optimised step at the "
                   "highest resolution")
    p.add_argument("--glibc-malloc-defaults", action="store_true", help="leave glibc's allocator as it is (training "
                   "keeps freed memory, progan.runtime.keep_freed_memory; both modes share the process's setting)")
    p.add_argument("--out", type=Path, default=None, help="JSON results (default benchmarks/results/"
                   "train_speed-PRESET.json)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    kept = False if args.glibc_malloc_defaults else keep_freed_memory()
    if not 0 < args.alpha <= 1:
        p.error(f"--alpha must be in (0, 1], got {args.alpha}")
    cfg = preset(args.preset, args.resolution)
    out = args.out or RESULTS / f"train_speed-{args.preset}.json"
    machine = {**machine_info(), "keep_freed_memory": kept}
    print(f"{args.preset} preset up to {args.resolution}x{args.resolution}: {machine['cpu']}, "
          f"{machine['torch_threads']} threads, torch {machine['torch']}, OMP_WAIT_POLICY "
          f"{machine['omp_wait_policy']}, freed memory {'kept' if kept else 'returned (glibc defaults)'}, "
          f"load average {machine['loadavg_at_start'][0]:.2f}", flush=True)

    if args.resampling:
        out = args.out or RESULTS / "resampling_speed.json"
        atomic_write_json(out, {"machine": machine, "rows": bench_resampling(args.steps)})
        print(f"wrote {out}")
        return 0

    states = {"reference": make_state(cfg, "reference"), "optimised": make_state(cfg, "optimised")}
    rows = []
    res = 4
    while res <= args.resolution:
        batch = args.batch or default_batch(cfg, res, args.max_step_gflop)
        t0 = time.perf_counter()
        row = bench_resolution(cfg, states, res, batch, args.steps, args.alpha)
        row["loadavg"] = os.getloadavg()
        rows.append(row)
        print(f"  {res}x{res} batch {batch}: reference {row['modes']['reference']['images_per_sec']:.2f} img/s, "
              f"optimised {row['modes']['optimised']['images_per_sec']:.2f} img/s ({row['speedup']:.2f}x), "
              f"{time.perf_counter() - t0:.0f} s, load {row['loadavg'][0]:.2f}", flush=True)
        res *= 2
    print_table(rows)
    print(f"\nreference: unfused, weights scaled every call, NCHW, eager, for-loop Adam; optimised: the library. "
          f"Medians of {args.steps} steps; FLOPs counted per operation; matmul = 2048^3 fp32 sgemm; ceiling = the "
          f"speedup if every optimised FLOP ran at the matmul rate.")
    print_breakdown(rows)
    if args.profile:
        top = rows[-1]
        print(profile_step(cfg, states["optimised"], top["resolution"], top["batch"], args.alpha))
    atomic_write_json(out, {"preset": args.preset, "command": " ".join(["python", *sys.argv]),
                            "machine": machine, "loadavg_at_end": os.getloadavg(),
                            "step_multipliers": STEP_MULTIPLIERS, "rows": rows})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
