"""Training speed per resolution: the optimised code against a plain reference of the same networks.

    python -m benchmarks.train_speed                                   # paper preset, 4x4 .. 32x32
    python -m benchmarks.train_speed --preset demo --steps 5 --out /tmp/demo.json
    python -m benchmarks.train_speed --resampling                      # fused vs unfused, layer by layer
    OMP_WAIT_POLICY=PASSIVE python -m benchmarks.train_speed           # OpenMP threads that never spin
    python -m benchmarks.train_speed --device cuda                     # the training table: 4 .. 1024 on a GPU
    python -m benchmarks.train_speed --device cpu --preset tiny --resolution 8 --steps 2  # tiny, CPU

For each resolution, one full training step (D step with gradient penalty, G step, EMA: `train_step` from the loop,
on random reals) in two modes, each in a process of its own, stepped alternately so that both see the same machine:
  reference  the same networks in their textbook form (`reference.to_reference`: unfused up/down sampling, weights scaled on
             every call, torch's leaky ReLU), NCHW, eager, for-loop Adam, and the process as torch leaves it
  optimised  the library as it runs in training, process settings included (`progan.runtime.keep_freed_memory`)
Separate processes because some of what is measured is process-wide: the allocator's settings here, OpenMP's
waiting policy (read once, when torch loads) when a user sets one. Images/s are medians over --steps timed steps
(after two untimed warm-up steps per mode); the speedup is the median of the step-by-step ratios (each pair ran back
to back, so a busy moment on a shared machine hits both).

FLOPs are counted per operation while the warm-up step runs: a dispatch mode adds up torch.utils.flop_counter's
formulas for every convolution, convolution backward and matmul, the penalty's double backward included
(FlopCounterMode itself fails there: its module tracker does not support autograd.grad). Elementwise work is not
counted. As a cross-check the table also gives an analytic count of the reference: forward FLOPs of G and D per
image from the layer shapes, times 4 for G (a no-grad forward for the fakes; forward + backward in its own step)
and 14 for D (forward + backward over reals and fakes: 2 x 3; the penalty's forward, input gradient and double
backward: 6; forward + input gradient in G's step: 2). The machine's fp32 matmul speed (2048^3 sgemm, same
threads) is measured between the steps, so every row says what fraction of the machine it uses, and the speedup
the optimised FLOPs would give if every one of them ran at that rate (the ceiling). One more step per mode runs
under torch.profiler to say where the time goes.

--device cuda (or cpu) prints the training table instead: for each resolution from 4 up, one process trains the
preset's own networks (paper widths by default) at the preset's batch there, stable phase, in each --modes: fp32, bf16
(autocast, as --precision bf16 trains) and compiled (bf16 with G under torch.compile; D stays eager, because
torch.compile cannot differentiate the gradient penalty's double backward). Per row: images/s (median over --steps
timed steps after --warmup untimed ones; every step ends on a host sync, the loop's finite check, and the clock
stops after torch.cuda.synchronize), the peak memory of a step (torch.cuda.max_memory_allocated since the warm-up:
weights, Adam's moments, activations, gradients; on a CPU the live tensor bytes, counted as benchmarks.step_memory
does), and the first step's seconds (cuDNN's and torch.compile's start-up). Below the table: the days the preset's
whole schedule takes at these rates, to set beside the paper's (about 2 weeks for CelebA-HQ 1024 on one V100).
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map
from torch.utils.flop_counter import flop_registry

from benchmarks.reference import to_reference
from progan.config import TrainConfig
from progan.fileio import atomic_write_json
from progan.presets import preset
from progan.runtime import keep_freed_memory
from progan.schedule import Phase
from progan.train.distributed import Ranks
from progan.train.loop import TrainState, build_state, train_step

ROOT = Path(__file__).resolve().parent.parent  # the repository: workers run as `python -m benchmarks.train_speed`
RESULTS = ROOT / "benchmarks" / "results"


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


def forward_flops(cfg: TrainConfig, res: int, fused: bool) -> tuple[float, float, float]:
    """Analytic forward FLOPs per image at resolution `res` (stable phase), from the layer shapes: G, D's body (up to
    minibatch stddev) and D's head (its 4x4 conv and dense layers)."""
    m = cfg.model
    c = m.channels
    c4 = c(4)
    conv = lambda cin, cout, r, k=3: 2 * k * k * cin * cout * r * r  # noqa: E731
    resample = lambda cin, cout, r: (2 * 16 * cin * cout * (r // 2) ** 2) if fused else conv(cin, cout, r)  # noqa: E731
    g = 2 * (m.latent_size + m.num_classes) * c4 * 16 + conv(c4, c4, 4) + conv(c(res), 3, res, k=1)
    d_body = conv(3, c(res), res, k=1)
    d_head = conv(c4 + 1, c4, 4) + 2 * c4 * 16 * c4 + 2 * c4 * (1 + m.num_classes)
    r = 8
    while r <= res:
        g += resample(c(r // 2), c(r), r) + conv(c(r), c(r), r)
        d_body += conv(c(r), c(r), r) + resample(c(r), c(r // 2), r)
        r *= 2
    return g, d_body, d_head


# Forward-equivalents per image in one training step (see the docstring). D's head: in the penalty's double backward
# only torch's leaky ReLU sends (all-zero) gradients back through the head's forward (progan.layers.LeakyReLU).
STEP_MULTIPLIERS = {"G": 4, "D body": 14, "D head": 14, "D head, masked leaky ReLU": 12}


def analytic_step_flops(cfg: TrainConfig, res: int, plain: bool) -> float:
    """The reference's FLOPs per image (`plain`), or the optimised mode's with the fused form everywhere."""
    g, d_body, d_head = forward_flops(cfg, res, fused=not plain)
    head = STEP_MULTIPLIERS["D head" if plain else "D head, masked leaky ReLU"]
    return STEP_MULTIPLIERS["G"] * g + STEP_MULTIPLIERS["D body"] * d_body + head * d_head


# ---------------------------------------------------------------------------------------------------------------
# Where the time goes

CATEGORIES = ("convolution", "matmul", "optimizer", "ema", "other ops", "outside ops")
FLOP_CATEGORY = {"aten.convolution": "convolution", "aten.convolution_backward": "convolution",
                 "aten._convolution": "convolution", "aten.mm": "matmul", "aten.addmm": "matmul",
                 "aten.bmm": "matmul", "aten.baddbmm": "matmul"}


def op_category(event) -> str:
    """The category of a profiler event: that of its outermost optimizer step or EMA if inside one, else its own."""
    parent = event
    while parent is not None:
        if parent.name.startswith("Optimizer.step"):
            return "optimizer"
        if parent.name == "aten::_foreach_lerp_":  # only the EMA of G's weights uses it
            return "ema"
        parent = parent.cpu_parent
    name = event.name
    if "convolution" in name or "conv_transpose" in name or name.startswith("aten::conv"):
        return "convolution"
    if name in ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul"):
        return "matmul"
    return "other ops"


def time_breakdown(state: TrainState, phase: Phase, real: torch.Tensor, cfg: TrainConfig) -> dict[str, float]:
    """Seconds of one profiled step by category: the self time of every aten operation (the optimizers' own in
    "optimizer"), and the rest of the step's wall time, spent outside any operation (Python, the autograd engine's
    bookkeeping, idle threads), as "outside ops". The profiler slows small operations a little."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        train_step(state, phase, real, cfg, Ranks())
        wall = time.perf_counter() - t0
    seconds = dict.fromkeys(CATEGORIES, 0.0)
    for event in prof.events():
        if event.name.startswith("aten::"):
            seconds[op_category(event)] += event.self_cpu_time_total / 1e6
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
            to_reference(net)
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
    per_image = analytic_step_flops(cfg, res, plain=False) / 1e9
    while batch > 1 and batch % 2 == 0 and batch * per_image > max_step_gflop:
        batch //= 2
    return batch


# ---------------------------------------------------------------------------------------------------------------
# One process per mode

class Worker:
    """A mode in a process of its own, answering one JSON line per JSON command line (see `serve`)."""

    def __init__(self, mode: str, args):
        cmd = [sys.executable, "-m", "benchmarks.train_speed", "--worker", mode, "--preset", args.preset,
               "--resolution", str(args.resolution)] + (["--threads", str(args.threads)] if args.threads else [])
        self.mode = mode
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
                                     cwd=ROOT)
        self.info = self._reply()

    def __call__(self, command: str, **kw) -> dict:
        self.proc.stdin.write(json.dumps({"command": command, **kw}) + "\n")
        return self._reply()

    def _reply(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.mode} worker exited (code {self.proc.wait()}); its stderr is above")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


def serve(mode: str, cfg: TrainConfig) -> None:
    """The worker's side: build the state, then run commands from stdin until it closes."""
    kept = keep_freed_memory() if mode == "optimised" else False
    state = make_state(cfg, mode)
    out = sys.stdout
    sys.stdout = sys.stderr  # anything else printed must not break the protocol
    out.write(json.dumps({"machine": machine_info(), "keep_freed_memory": kept}) + "\n")
    out.flush()
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["command"] == "matmul":
            reply = {"gflops": matmul_gflops()}
        else:
            phase = phase_for(cfg, cmd["res"], cmd["batch"], cmd["alpha"])
            real = torch.rand(cmd["batch"], 3, cmd["res"], cmd["res"],
                              generator=torch.Generator().manual_seed(cmd["res"])) * 2 - 1
            reply = COMMANDS[cmd["command"]](state, phase, real, cfg)
        out.write(json.dumps(reply) + "\n")
        out.flush()


def count_flops(state: TrainState, phase: Phase, real: torch.Tensor, cfg: TrainConfig) -> dict:
    with FlopCount() as fc:
        stats = train_step(state, phase, real, cfg, Ranks())
    return {"flops_by_op": dict(fc.by_op), "loss_d": float(stats["loss_d"]), "loss_g": float(stats["loss_g"])}


def timed_step(state: TrainState, phase: Phase, real: torch.Tensor, cfg: TrainConfig) -> dict:
    faults, t0 = minor_faults(), time.perf_counter()
    train_step(state, phase, real, cfg, Ranks())
    return {"seconds": time.perf_counter() - t0, "minor_faults": minor_faults() - faults}


def op_table(state: TrainState, phase: Phase, real: torch.Tensor, cfg: TrainConfig, rows: int = 25) -> dict:
    """torch.profiler's table of one step, by operation and input shape."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        train_step(state, phase, real, cfg, Ranks())
    return {"table": prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total",
                                                                         row_limit=rows)}


COMMANDS = {"flops": count_flops, "step": timed_step, "op_table": op_table,
            "breakdown": lambda *a: {"seconds": time_breakdown(*a)}}


def bench_resolution(cfg: TrainConfig, workers: dict[str, Worker], res: int, batch: int, steps: int,
                     alpha: float) -> dict:
    at = {"res": res, "batch": batch, "alpha": alpha}
    phase = phase_for(cfg, res, batch, alpha)
    row = {"resolution": res, "batch": batch, "alpha": phase.alpha, "lod": phase.lod, "modes": {}}
    for mode, worker in workers.items():  # warm-up step, counting FLOPs
        counted = worker("flops", **at)
        row["modes"][mode] = {"gflop_per_image": sum(counted["flops_by_op"].values()) / batch / 1e9,
                              "gflop_by_op": {k: v / batch / 1e9 for k, v in counted["flops_by_op"].items()},
                              "loss_d": counted["loss_d"], "loss_g": counted["loss_g"],
                              "seconds": [], "minor_faults": []}
    for worker in workers.values():  # a second warm-up: the allocator is still growing its pools after the first
        worker("step", **at)
    matmul = []
    for i in range(steps):
        for mode, worker in list(workers.items())[::1 if i % 2 == 0 else -1]:  # alternate who goes first
            timed = worker("step", **at)
            row["modes"][mode]["seconds"].append(timed["seconds"])
            row["modes"][mode]["minor_faults"].append(timed["minor_faults"])
        matmul.append(workers["reference"]("matmul")["gflops"])
    row["matmul_gflops_samples"] = matmul
    for mode, worker in workers.items():  # one more step each, profiled
        m = row["modes"][mode]
        m["profile_seconds"] = worker("breakdown", **at)["seconds"]
        m["gflops_in"] = {cat: sum(v for op, v in m["gflop_by_op"].items() if FLOP_CATEGORY.get(op) == cat) * batch
                          / max(m["profile_seconds"][cat], 1e-9) for cat in ("convolution", "matmul")}
    for m in row["modes"].values():
        m["images_per_sec"] = batch / statistics.median(m["seconds"])
        m["gflops"] = m["gflop_per_image"] * m["images_per_sec"]
    row["analytic_reference_gflop_per_image"] = analytic_step_flops(cfg, res, plain=True) / 1e9
    # the median of step-by-step ratios: each pair of steps ran back to back, under the same load
    ref, opt = row["modes"]["reference"]["seconds"], row["modes"]["optimised"]["seconds"]
    row["speedup"] = statistics.median(r / o for r, o in zip(ref, opt))
    return row


def against_the_machine(rows: list[dict]) -> None:
    """Every row against the machine's matmul speed: the best sgemm of the whole run (one measurement dips whenever
    a neighbour on a shared host is busy), and the speedup the optimised step would reach if each of its FLOPs ran
    at that speed (the ceiling)."""
    peak = max(g for row in rows for g in row["matmul_gflops_samples"])
    for row in rows:
        row["matmul_gflops"] = peak
        for m in row["modes"].values():
            m["fraction_of_matmul"] = m["gflops"] / peak
        best_seconds = row["modes"]["optimised"]["gflop_per_image"] * row["batch"] / peak
        row["speedup_ceiling"] = statistics.median(row["modes"]["reference"]["seconds"]) / best_seconds


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
    print("\nWhere the time goes (ms of one profiled step; GFLOP/s inside the convolutions and matmuls):")
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


# ---------------------------------------------------------------------------------------------------------------
# The training table (--device): images/s and peak memory per resolution and precision on one device

TABLE_MODES = ("fp32", "bf16", "compiled")


def parse_mode(mode: str) -> tuple[str, bool]:
    """'fp32', 'bf16', 'fp32-compiled', 'bf16-compiled' -> (precision, compiled); 'compiled' is bf16-compiled, the
    precision a GPU with bf16 trains in."""
    if mode == "compiled":
        return "bf16", True
    precision, _, compiled = mode.partition("-")
    if precision not in ("fp32", "bf16") or compiled not in ("", "compiled"):
        raise ValueError(f"unknown mode {mode!r}: fp32, bf16, compiled, fp32-compiled or bf16-compiled")
    return precision, bool(compiled)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def tensor_bytes(state: TrainState, real: torch.Tensor) -> int:
    """Bytes held between steps: weights, buffers, Adam's moments and the reals."""
    from benchmarks.step_memory import storage_bytes
    tensors = [t for net in state.nets.values() for t in (*net.parameters(), *net.buffers())] + [real]
    for opt in state.opts.values():
        tensors += [t for s in opt.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
    return storage_bytes(tensors)


def table_row(cfg: TrainConfig, device: torch.device, res: int, batch: int, mode: str, steps: int,
              warmup: int) -> dict:
    """One resolution in one mode: a fresh state, `warmup` untimed steps, then `steps` timed ones."""
    import copy
    precision, compiled = parse_mode(mode)
    cfg = copy.deepcopy(cfg)
    cfg.precision = precision
    ranks = Ranks(device=device)
    state = build_state(cfg, device)
    if compiled:
        state.G = torch.compile(state.G)  # D stays eager: see the module's docstring
    phase = phase_for(cfg, res, batch, 1.0)
    real = (torch.rand(batch, 3, res, res, generator=torch.Generator().manual_seed(res)) * 2 - 1).to(device)
    row = {"resolution": res, "batch": batch, "mode": mode, "precision": precision, "compiled": compiled}
    try:
        t0 = time.perf_counter()
        train_step(state, phase, real, cfg, ranks)
        synchronize(device)
        row["first_step_seconds"] = time.perf_counter() - t0
        for _ in range(warmup - 1):
            train_step(state, phase, real, cfg, ranks)
        synchronize(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seconds = []
        for _ in range(steps):
            t0 = time.perf_counter()
            train_step(state, phase, real, cfg, ranks)
            synchronize(device)
            seconds.append(time.perf_counter() - t0)
        if device.type == "cuda":
            row["peak_bytes"] = torch.cuda.max_memory_allocated(device)
        elif not compiled:  # a dispatch mode around a compiled graph would measure something else
            from benchmarks.step_memory import LiveTensorBytes
            tracker = LiveTensorBytes()
            with tracker:
                train_step(state, phase, real, cfg, ranks)
            row["peak_bytes"] = tensor_bytes(state, real) + tracker.peak
    except torch.cuda.OutOfMemoryError:
        row["error"] = "out of memory"
        return row
    finally:
        del state
        if device.type == "cuda":
            torch.cuda.empty_cache()
    row["seconds"] = seconds
    row["images_per_sec"] = batch / statistics.median(seconds)
    return row


def schedule_days(cfg: TrainConfig, rows: list[dict], mode: str) -> float | None:
    """Days the preset's whole schedule takes at this mode's measured rate at each resolution (a resolution's fade-in
    counted at its stable rate), or None where a resolution is missing."""
    from progan.schedule import kimg_to_reach
    rate = {r["resolution"]: r.get("images_per_sec") for r in rows if r["mode"] == mode}
    sched, final, seconds = cfg.schedule, cfg.model.resolution, 0.0
    res = 4
    while res <= final:
        if not rate.get(res):
            return None
        start = kimg_to_reach(res, sched) - (sched.fade_at(res) if res > 4 else 0)
        end = sched.total_kimg if res == final else kimg_to_reach(2 * res, sched) - sched.fade_at(2 * res)
        seconds += max(0.0, min(end, sched.total_kimg) - start) * 1000 / rate[res]
        res *= 2
    return seconds / 86400


def print_training_table(rows: list[dict], modes: list[str], cfg: TrainConfig, preset_name: str) -> None:
    head = "| resolution | batch | " + " | ".join(f"{m} img/s | {m} peak MiB" for m in modes) + " |"
    print(head)
    print("| --: | --: | " + " | ".join("--: | --:" for _ in modes) + " |")
    by = {(r["resolution"], r["mode"]): r for r in rows}
    for res in sorted({r["resolution"] for r in rows}):
        cells = []
        for m in modes:
            r = by.get((res, m), {})
            if "error" in r:
                cells += [r["error"], "-"]
                continue
            peak = r.get("peak_bytes")
            cells += [f"{r['images_per_sec']:.1f}" if "images_per_sec" in r else "-",
                      f"{peak / 2**20:.0f}" if peak is not None else "-"]
        batch = next(r["batch"] for r in rows if r["resolution"] == res)
        print(f"| {res}x{res} | {batch} | " + " | ".join(cells) + " |")
    firsts = ", ".join(f"{m} {max(r.get('first_step_seconds', 0) for r in rows if r['mode'] == m):.1f} s"
                       for m in modes)
    print(f"\nslowest first step (cuDNN autotuning, torch.compile) per mode: {firsts}")
    for m in modes:
        days = schedule_days(cfg, rows, m)
        if days is not None:
            print(f"{preset_name} preset's whole schedule ({cfg.schedule.total_kimg:g} kimg to "
                  f"{cfg.model.resolution}x{cfg.model.resolution}) at the {m} rates: {days:.2f} days "
                  f"({days * 24:.1f} hours)")


def training_table(args, cfg: TrainConfig) -> int:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA GPU here")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in modes:
        parse_mode(m)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else machine_info()["cpu"]
    print(f"{args.preset} preset up to {args.resolution}x{args.resolution} on {name}, torch {torch.__version__}; "
          f"modes {', '.join(modes)}; median of {args.steps} steps after {args.warmup} warm-up", flush=True)
    rows = []
    res = 4
    while res <= args.resolution:
        batch = args.batch or cfg.schedule.batch_at(res)
        for mode in modes:
            row = table_row(cfg, device, res, batch, mode, args.steps, args.warmup)
            rows.append(row)
            done = row.get("error") or (f"{row['images_per_sec']:.1f} img/s" + (
                f", peak {row['peak_bytes'] / 2**20:.0f} MiB" if row.get("peak_bytes") is not None else ""))
            print(f"  {res}x{res} batch {batch} {mode}: {done}", flush=True)
        res *= 2
    print()
    print_training_table(rows, modes, cfg, args.preset)
    out = args.out or RESULTS / f"train_table-{args.preset}-{device.type}.json"
    atomic_write_json(out, {"preset": args.preset, "command": command_line(), "device": name,
                            "torch": torch.__version__, "machine": machine_info(), "modes": modes, "rows": rows,
                            "schedule_days": {m: schedule_days(cfg, rows, m) for m in modes}})
    print(f"wrote {out}")
    return 0


def command_line() -> str:
    """How this process was started, as one types it from the repository root: `python -m benchmarks.NAME ARGS`."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    return " ".join(["python", "-m", spec.name if spec else Path(sys.argv[0]).stem, *sys.argv[1:]])


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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="paper")
    p.add_argument("--resolution", type=int, default=None, help="the highest resolution to measure (default 32; "
                   "with --device cuda 1024)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per mode and resolution (default 3; with "
                   "--device 10)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="instead: the training table on this "
                   "device (images/s and peak memory per resolution in each of --modes)")
    p.add_argument("--modes", default=",".join(TABLE_MODES), help="--device: fp32, bf16, compiled (bf16 with G "
                   "compiled), fp32-compiled, bf16-compiled (default fp32,bf16,compiled)")
    p.add_argument("--warmup", type=int, default=3, help="--device: untimed steps per row first (default 3)")
    p.add_argument("--batch", type=int, default=None, help="batch at every resolution (default: the preset's, "
                   "halved while one step would exceed --max-step-gflop)")
    p.add_argument("--max-step-gflop", type=float, default=1400.0)
    p.add_argument("--alpha", type=float, default=1.0, help="fade-in of the newest block (default 1: stable)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--resampling", action="store_true", help="instead: fused against unfused up/down convs, "
                   "layer by layer (the measurements behind FUSED_MIN_POSITIONS_CPU)")
    p.add_argument("--profile", action="store_true", help="also print a profile of one optimised step at the "
                   "highest resolution")
    p.add_argument("--worker", choices=("reference", "optimised"), help=argparse.SUPPRESS)  # see Worker
    p.add_argument("--out", type=Path, default=None, help="JSON results (default benchmarks/results/"
                   "train_speed-PRESET.json)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not 0 < args.alpha <= 1:
        p.error(f"--alpha must be in (0, 1], got {args.alpha}")
    if args.resolution is None:
        args.resolution = 1024 if args.device == "cuda" else 32
    if args.steps is None:
        args.steps = 10 if args.device else 3
    cfg = preset(args.preset, args.resolution)
    if args.device:
        return training_table(args, cfg)
    if args.worker:
        serve(args.worker, cfg)
        return 0
    out = args.out or RESULTS / f"train_speed-{args.preset}.json"
    machine = machine_info()
    print(f"{args.preset} preset up to {args.resolution}x{args.resolution}: {machine['cpu']}, "
          f"{machine['torch_threads']} threads, torch {machine['torch']}, OMP_WAIT_POLICY "
          f"{machine['omp_wait_policy']}, load average {machine['loadavg_at_start'][0]:.2f}", flush=True)

    if args.resampling:
        out = args.out or RESULTS / "resampling_speed.json"
        atomic_write_json(out, {"machine": machine, "rows": bench_resampling(args.steps)})
        print(f"wrote {out}")
        return 0

    workers = {mode: Worker(mode, args) for mode in ("reference", "optimised")}
    try:
        rows = []
        res = 4
        while res <= args.resolution:
            batch = args.batch or default_batch(cfg, res, args.max_step_gflop)
            t0 = time.perf_counter()
            row = bench_resolution(cfg, workers, res, batch, args.steps, args.alpha)
            row["loadavg"] = os.getloadavg()
            rows.append(row)
            print(f"  {res}x{res} batch {batch}: reference {row['modes']['reference']['images_per_sec']:.2f} img/s, "
                  f"optimised {row['modes']['optimised']['images_per_sec']:.2f} img/s ({row['speedup']:.2f}x), "
                  f"{time.perf_counter() - t0:.0f} s, load {row['loadavg'][0]:.2f}", flush=True)
            res *= 2
        against_the_machine(rows)
        print_table(rows)
        print(f"\nreference: unfused, weights scaled every call, torch's leaky ReLU, NCHW, eager, for-loop Adam, "
              f"torch's process defaults; optimised: the library. Medians of {args.steps} steps; FLOPs counted per "
              f"operation; matmul = the run's best 2048^3 fp32 sgemm; ceiling = the speedup if every optimised FLOP "
              f"ran at that rate.")
        print_breakdown(rows)
        if args.profile:
            top = {"res": rows[-1]["resolution"], "batch": rows[-1]["batch"], "alpha": args.alpha}
            print(workers["optimised"]("op_table", **top)["table"])
    finally:
        for worker in workers.values():
            worker.close()
    machine = {**machine, **{f"{mode}_process": w.info for mode, w in workers.items()}}
    atomic_write_json(out, {"preset": args.preset, "command": command_line(),
                            "machine": machine, "loadavg_at_end": os.getloadavg(),
                            "step_multipliers": STEP_MULTIPLIERS, "rows": rows})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
