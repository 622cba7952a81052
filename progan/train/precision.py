"""The arithmetic a run trains in: fp32, or bf16 autocast; `auto` picks bf16 where the machine is fast at it.

bf16 autocast runs the convolutions and matmuls in bf16. What stays in fp32 under it: the weights, their gradients,
Adam and the G_ema average (autocast never touches parameters), the critic's score and its last dense layer
(networks.Discriminator), the fused kernels and their equalized-LR scale (layers.fused_kernel), the minibatch
stddev statistic (computed in fp32, then appended in the features' dtype), the gradient penalty's interpolated
images and the norm of their gradient, and every loss term.

`auto` resolves once, when a run starts (train.loop.train), and the resolved choice is what config.json records:
a resumed run keeps it unless --precision says otherwise.
- CUDA: bf16 on GPUs with native bf16 (compute capability 8.0 and up: tensor cores for it), fp32 elsewhere.
- CPU: a short timing probe (`cpu_bf16_speedup`): a 3x3 convolution's forward and backward at the run's own width,
  in fp32 and under bf16 autocast. bf16 when it is at least BF16_MIN_SPEEDUP times faster. CPUs without bf16
  instructions run bf16 emulated, 2-30x slower than fp32; CPUs with them (AVX512-BF16, AMX) 1.5-3x faster at the
  widths where the step's time goes into convolutions (64 channels and up), but not at narrow ones, where
  per-operation overhead rules and autocast only adds casts.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from progan.config import ModelConfig

# bf16 must be clearly faster, not only measurably: the choice must come out the same on every start on one machine,
# and bf16 must pay at equal time. On an AVX512-BF16 CPU without AMX the probe gives 1.2-1.25x at the demo's width
# (32 channels), 1.45-1.6x at the text demo's (64; a threshold of 1.5 flipped between starts there) and 1.65-1.8x at
# 128-512: 1.35 sits clear of both ends. At 64 channels bf16 pays: two 20-minute text-model seeds showed 1.22x the
# images and a lower SWD (30.9 and 24.5 against 39.0 and 34.9; docs/speed-precision.md). At 32 channels it would
# not: per-operation overhead rules and autocast only adds casts.
BF16_MIN_SPEEDUP = 1.35
PROBE_ROUNDS = 5
PROBE_FLOPS = 3e8         # forward multiply-adds x 2 of the probe's convolution: a few ms per round on one core


@dataclass(frozen=True)
class Precision:
    name: str                 # "fp32" or "bf16"
    reason: str               # one line for the run's log

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return torch.bfloat16 if self.name == "bf16" else None


def probe_width(model: ModelConfig) -> int:
    """The channels the CPU probe convolves: those of the run's 16x16 level (its final one when lower). From 16x16
    up a step's time goes into convolutions at about these widths; below it, into per-operation overhead."""
    return model.channels(min(16, model.resolution))


def resolve(requested: str, device: torch.device, model: ModelConfig) -> Precision:
    """The precision a run asking for `requested` (auto, fp32 or bf16) trains in on `device`, and why."""
    if requested in ("fp32", "bf16"):
        note = ""
        if requested == "bf16" and device.type == "cpu" and not cpu_has_bf16():
            note = "; torch finds no bf16 instructions on this CPU: bf16 runs emulated, slower than fp32"
        return Precision(requested, f"--precision {requested}{note}")
    if requested != "auto":
        raise ValueError(f"precision must be auto, fp32 or bf16, got {requested!r}")
    if device.type == "cuda":
        return cuda_choice(device)
    if device.type == "cpu":
        return cpu_choice(probe_width(model))
    return Precision("fp32", f"auto: bf16 is chosen only on CUDA GPUs and CPUs; this is {device.type}")


def cuda_choice(device: torch.device) -> Precision:
    name = torch.cuda.get_device_name(device)
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) >= (8, 0):
        return Precision("bf16", f"auto: {name} (compute capability {major}.{minor}) has bf16 tensor cores")
    return Precision("fp32", f"auto: {name} (compute capability {major}.{minor}) has no native bf16 (8.0 and up do)")


def cpu_has_bf16() -> bool:
    """Whether oneDNN has bf16 kernels for this CPU at all (AVX512 or newer); elsewhere bf16 falls back to slow
    reference code. Having them does not make them fast: AVX512 without the BF16 extension converts to fp32."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def cpu_features() -> str:
    """The CPU's bf16-related instruction sets as torch sees them, for the log."""
    found = [name for name, has in (("AVX512-BF16", getattr(torch.cpu, "_is_avx512_bf16_supported", None)),
                                    ("AMX", getattr(torch.cpu, "_is_amx_tile_supported", None)))
             if has is not None and has()]
    return ", ".join(found) if found else "neither AVX512-BF16 nor AMX"


def cpu_choice(channels: int) -> Precision:
    if not cpu_has_bf16():
        return Precision("fp32", "auto: torch has no bf16 kernels for this CPU (it would emulate bf16, slower)")
    speedup = cpu_bf16_speedup(channels)
    verdict = "bf16" if speedup >= BF16_MIN_SPEEDUP else "fp32"
    return Precision(verdict, f"auto: on this CPU ({cpu_features()}) a 3x3 convolution at {channels} channels (the "
                     f"run's width at 16x16) runs {speedup:.2f}x as fast in bf16 as in fp32; bf16 takes "
                     f"{BF16_MIN_SPEEDUP}x or more")


# One probe per width and process: the answer is a property of the machine, and a process that starts several runs
# (tests, benchmarks) should neither pay for it nor choose differently each time.
@functools.lru_cache(maxsize=None)
def cpu_bf16_speedup(channels: int) -> float:
    """fp32 time / bf16-autocast time of a 3x3 convolution's forward and backward (input and weight gradients), at
    `channels` in and out on 8x8 maps, batch up to 16 within PROBE_FLOPS: the fastest of PROBE_ROUNDS interleaved
    rounds each, on one thread (a second thread on a shared machine adds more noise than information). Stops
    early once bf16 is slower than fp32 even at its best: emulated bf16 is very slow. At most about 0.5 s."""
    batch = max(1, min(16, int(PROBE_FLOPS // (2 * 9 * channels * channels * 64))))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels, 8, 8, generator=gen).requires_grad_(True)
    w = torch.randn(channels, channels, 3, 3, generator=gen).requires_grad_(True)

    def step(bf16: bool) -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = F.conv2d(x, w, padding=1)
        y.float().sum().backward()
        return time.perf_counter() - start

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        step(False), step(True)  # the first call of each builds its kernels: not counted
        best = {False: float("inf"), True: float("inf")}
        for _ in range(PROBE_ROUNDS):
            for bf16 in (False, True):
                best[bf16] = min(best[bf16], step(bf16))
            if best[True] > best[False]:
                break
    finally:
        torch.set_num_threads(threads)
    return best[False] / best[True]
