"""Memory of one training step per resolution at the paper's widths, fp32 and bf16, per image: which batch fits a card.

    python -m benchmarks.step_memory                        # 4..256, fp32 and bf16: about 45 minutes on 2 busy cores
    python -m benchmarks.step_memory --max-resolution 32    # a few minutes

Each measurement is one process that builds the paper's networks for 1024x1024 (`progan.presets.paper()`: fmap_base
8192, fmap_max 512, latent 512, mbstd group 16) and runs one `train_step` from the loop (D step with the gradient
penalty, G step, EMA; the first step after an optimizer reset, so Adam's moments are made in it) at one resolution,
fading in (alpha 0.5: the new block and the old to_rgb/from_rgb both run, the most a resolution needs), at batch 2 and
at batch 4 (not 1: a minibatch-stddev group of one runs other operations).

What is measured: the tensor storage alive after every operation of the step, by a dispatch mode that counts each
storage an operation creates from its creation until its last reference goes (a weakref finalizer), plus what existed
before the step (weights, G_ema, the reals). That is the quantity CUDA's caching allocator has to hold
(`torch.cuda.max_memory_allocated`), exact and free of the noise of a process's RSS, which also holds Python, torch's
libraries, allocator slack and oneDNN's scratch buffers. Batches 2 and 4 run the same operations in the same order,
so operation i holds a_i + N s_i bytes at batch N, and the step's peak at batch N is the largest of these lines: its
steepest slope is the "per image" column, that line's intercept the "fixed" one (weights, gradients, Adam's moments,
batch-free temporaries), and the card columns are the largest N whose peak fits. The process's peak RSS (ru_maxrss)
is recorded beside it as a cross-check ("RSS per image": the difference between the two batches, halved).

The up/down convolutions are fused everywhere, as on a GPU (on a CPU the layers pick by batch x positions).

bf16: `train_step` autocasts on the run's device when `cfg.precision` is bf16, so on the CPU the same regions run
under CPU autocast that run under CUDA autocast on a GPU, on the same network code; a step that made no bf16 tensor fails. CPU and CUDA autocast cast the same kinds of operations (convolutions and matmuls to bf16) but their op lists
differ in details, and on a GPU cuDNN adds workspaces and the CUDA context takes ~0.5-1 GB: the card columns keep a
margin for that (CARD_CONTEXT, CARD_MARGIN).

Above --max-resolution the table is extrapolated and says so: from 64x64 up the paper halves the channels at each
doubling while the area grows 4x, so each new level adds twice the per-image memory of the level before. The
"increment ratio" column checks that rule on the measured rows.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
import weakref
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from progan.fileio import atomic_write_json
from progan.presets import paper
from progan.runtime import keep_freed_memory
from progan.schedule import Phase
from progan.train.distributed import init_from_env

GiB, MiB = 2**30, 2**20
CARDS_GB = (16, 24, 40, 80)
# Of a card's memory, what a step may use: minus 1 GiB for the CUDA context and cuDNN workspaces, then 90% of the
# rest for the caching allocator's fragmentation.
CARD_CONTEXT, CARD_MARGIN = 1 * GiB, 0.9
BATCHES = (2, 4)  # not 1: a minibatch-stddev group of one takes other operations


class LiveTensorBytes(TorchDispatchMode):
    """Peak bytes of the tensor storages created under this mode that are alive at once."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self.counted: dict[int, int] = {}  # storage address -> bytes counted (0: it existed before the mode)
        self.dtypes: set[torch.dtype] = set()
        self.timeline: list[int] = []  # live bytes after each operation

    def _track(self, t: torch.Tensor, created: bool) -> None:
        st = t.untyped_storage()
        key = st.data_ptr()
        if st.nbytes() == 0 or key in self.counted:
            return
        nbytes = st.nbytes() if created else 0
        self.counted[key] = nbytes
        self.live += nbytes
        self.peak = max(self.peak, self.live)
        weakref.finalize(st, self._free, key)

    def _free(self, key: int) -> None:
        self.live -= self.counted.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        for t in tree_leaves((args, kwargs)):
            if isinstance(t, torch.Tensor):
                self._track(t, created=False)  # no-op for storages already seen
        out = func(*args, **kwargs)
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.dtypes.add(t.dtype)
                self._track(t, created=True)
        self.timeline.append(self.live)
        return out


def storage_bytes(tensors) -> int:
    seen = {}
    for t in tensors:
        st = t.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
    return sum(seen.values())


def measure(res: int, precision: str, batch: int) -> dict:
    """One process's measurement (see the module docstring)."""
    import progan.layers
    from progan.train import loop
    keep_freed_memory()  # as training does: the RSS cross-check then sees the heap at its peak
    # The fused up/down convolutions everywhere, as on a GPU (on a CPU they depend on batch x positions), so that
    # both batches run the same operations and the GPU's layers are the ones measured.
    progan.layers.FUSED_MIN_POSITIONS_CPU = 0
    cfg = paper(1024)
    cfg.precision = precision  # the loop autocasts on the run's device: here the CPU's bf16 autocast
    state = loop.build_state(cfg, torch.device("cpu"))
    lod = math.log2(1024 // res) + (0.5 if res > 4 else 0.0)
    phase = Phase(kimg=0.0, lod=lod, resolution=res, alpha=1.0 - (lod - math.floor(lod)), batch=batch,
                  lr=cfg.schedule.lr_at(res))
    one_process = init_from_env("cpu")  # rank 0 of 1 (run_one clears torchrun's variables)
    real = torch.rand(batch, 3, res, res, generator=torch.Generator().manual_seed(res)) * 2 - 1
    # Before the step: weights, G_ema, the reals. Adam's moments and the gradients are made by the step (the first
    # after each optimizer reset) and counted by the tracker.
    state_bytes = storage_bytes([t for net in state.nets.values() for t in (*net.parameters(), *net.buffers())]
                                + [real])
    tracker = LiveTensorBytes()
    t0 = time.perf_counter()
    with tracker:
        loop.train_step(state, phase, real, cfg, one_process)
    seconds = time.perf_counter() - t0
    if cfg.precision == "bf16" and torch.bfloat16 not in tracker.dtypes:
        raise SystemExit("no bf16 tensor in the step: --bf16 no longer autocasts on the CPU (see train_step)")
    return {"resolution": res, "precision": precision, "batch": batch, "state_bytes": state_bytes,
            "peak_bytes": state_bytes + tracker.peak, "timeline": tracker.timeline,
            "rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "seconds": seconds,
            "params_G": sum(p.numel() for p in state.G.parameters()),
            "params_D": sum(p.numel() for p in state.D.parameters())}


def run_one(res: int, precision: str, batch: int, threads: int | None) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.step_memory", "--one", str(res), precision, str(batch)]
    if threads:
        cmd += ["--threads", str(threads)]
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env,
                         cwd=Path(__file__).resolve().parent.parent)  # the repository root, where benchmarks/ is
    return json.loads(out.stdout.strip().splitlines()[-1])


def lines(lo: dict, hi: dict) -> list[tuple[float, float]]:
    """Live bytes after each operation of the step as a line in the batch N: (bytes at N = 0, bytes per image).

    The two batches run the same operations in the same order, so operation i holds a_i + N s_i bytes; the step's
    peak at batch N is the largest of these lines.
    """
    if len(lo["timeline"]) != len(hi["timeline"]):
        raise SystemExit(f"{lo['resolution']}x{lo['resolution']} {lo['precision']}: batch {lo['batch']} and "
                         f"{hi['batch']} ran different operations ({len(lo['timeline'])} vs {len(hi['timeline'])})")
    db = hi["batch"] - lo["batch"]
    out = []
    for a, b in zip(lo["timeline"], hi["timeline"]):
        slope = (b - a) / db
        out.append((lo["state_bytes"] + a - lo["batch"] * slope, slope))
    return out


def peak_at(envelope: list[tuple[float, float]], n: int) -> float:
    return max(a + n * s for a, s in envelope)


def batch_fitting(card_gb: int, envelope: list[tuple[float, float]]) -> int:
    usable = (card_gb * GiB - CARD_CONTEXT) * CARD_MARGIN
    if peak_at(envelope, 1) > usable:
        return 0
    lo, hi = 1, 2
    while peak_at(envelope, hi) <= usable:
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # peak_at is convex and increasing in n: bisect
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if peak_at(envelope, mid) <= usable else (lo, mid)
    return lo


def summarise(envelope: list[tuple[float, float]]) -> tuple[float, float, float]:
    """-> (bytes per image at the step's peak, the batch-independent bytes of that peak, the peak with no image:
    optimizer steps and EMA, which need weights, gradients and moments but no activations)."""
    per_image = max(s for _, s in envelope)
    fixed = max(a for a, s in envelope if s >= 0.99 * per_image)
    return per_image, fixed, max(a for a, _ in envelope)


def table_rows(measured: list[dict], target: int = 1024) -> list[dict]:
    """Per (resolution, precision): per-image and fixed bytes, measured or extrapolated, and the batch per card."""
    rows = []
    for precision in [p for p in ("fp32", "bf16") if any(m["precision"] == p for m in measured)]:
        by = {(m["resolution"], m["batch"]): m for m in measured if m["precision"] == precision}
        envelopes = {res: lines(by[res, BATCHES[0]], by[res, BATCHES[1]]) for res, b in by
                     if b == BATCHES[0] and (res, BATCHES[1]) in by}
        per, fixed, floor, rss = {}, {}, {}, {}
        for res, env in envelopes.items():
            per[res], fixed[res], floor[res] = summarise(env)
            rss[res] = (by[res, BATCHES[1]]["rss_bytes"] - by[res, BATCHES[0]]["rss_bytes"]) / (BATCHES[1] - BATCHES[0])
        top = res = max(envelopes)
        while top >= 128 and res < target:  # each new level adds twice the increment of the level before (module docstring)
            prev, res = res, res * 2
            per[res] = per[prev] + 2 * (per[prev] - per[prev // 2])
            fixed[res], floor[res] = fixed[prev], floor[prev]
            envelopes[res] = [(fixed[res], per[res]), (floor[res], 0.0)]
        for r in sorted(per):
            inc = per[r] - per.get(r // 2, 0.0)
            ratio = inc / (per[r // 2] - per[r // 4]) if r // 4 in per and per[r // 2] != per[r // 4] else None
            rows.append({"resolution": r, "precision": precision, "measured": r <= top, "per_image_bytes": per[r],
                         "fixed_bytes": fixed[r], "no_image_peak_bytes": floor[r], "rss_per_image_bytes": rss.get(r),
                         "increment_ratio": ratio,
                         **{f"batch_{gb}gb": batch_fitting(gb, envelopes[r]) for gb in CARDS_GB}})
    return rows


def print_table(rows: list[dict]) -> None:
    print("| resolution | precision | per image | fixed | " + " | ".join(f"{gb} GB" for gb in CARDS_GB)
          + " | RSS per image | increment ratio |")
    print("| --- | --- | ---: | ---: | " + " | ".join("---:" for _ in CARDS_GB) + " | ---: | ---: |")
    for r in rows:
        mark = "" if r["measured"] else " (extrapolated)"
        rss = f"{r['rss_per_image_bytes'] / MiB:,.0f} MB" if r["rss_per_image_bytes"] is not None else "-"
        ratio = f"{r['increment_ratio']:.2f}" if r["increment_ratio"] is not None and r["measured"] else "-"
        print(f"| {r['resolution']}x{r['resolution']}{mark} | {r['precision']} | {r['per_image_bytes'] / MiB:,.1f} MB"
              f" | {r['fixed_bytes'] / GiB:.2f} GB | "
              + " | ".join(str(r[f"batch_{gb}gb"]) for gb in CARDS_GB) + f" | {rss} | {ratio} |")


def report(measured: list[dict], out: Path, threads: int | None) -> None:
    rows = table_rows(measured)
    m0 = measured[0]
    print(f"paper widths, networks for 1024x1024: G {m0['params_G'] / 1e6:.1f} M, D {m0['params_D'] / 1e6:.1f} M "
          f"parameters; fading in (alpha 0.5); batch per card: the largest whose step peak is within "
          f"(card - {CARD_CONTEXT / GiB:.0f} GB) x {CARD_MARGIN}")
    print_table(rows)
    atomic_write_json(out, {"benchmark": "step_memory", "torch": torch.__version__,
                            "machine": platform.processor() or platform.machine(), "threads": threads,
                            "batches": BATCHES, "rows": rows,
                            "measured": [{k: v for k, v in m.items() if k != "timeline"} for m in measured]})
    print(f"-> {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-resolution", type=int, default=256, help="measure 4..this; extrapolate to 1024")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per measurement")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "step_memory.json")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/progan-step-memory.jsonl"),
                        help="each measurement is appended here and not repeated by a later run (delete to re-measure)")
    parser.add_argument("--one", nargs=3, metavar=("RES", "PRECISION", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.one:
        res, precision, batch = int(args.one[0]), args.one[1], int(args.one[2])
        print(json.dumps(measure(res, precision, batch)))
        return
    cached = {}
    if args.cache.is_file():
        for line in args.cache.read_text().splitlines():
            m = json.loads(line)
            cached[m["resolution"], m["precision"], m["batch"], m.get("threads")] = m
    measured = []
    resolutions = [2**k for k in range(2, int(math.log2(args.max_resolution)) + 1)]
    for res in resolutions:  # both precisions at each resolution before the next: a cut-short run still compares
        for precision in args.precisions.split(","):
            for batch in BATCHES:
                m = cached.get((res, precision, batch, args.threads))
                if m is None:
                    m = {**run_one(res, precision, batch, args.threads), "threads": args.threads}
                    with args.cache.open("a") as f:
                        f.write(json.dumps(m) + "\n")
                print(f"# {res}x{res} {precision} batch {batch}: peak {m['peak_bytes'] / MiB:,.0f} MB, "
                      f"RSS {m['rss_bytes'] / MiB:,.0f} MB, {m['seconds']:.1f} s", file=sys.stderr, flush=True)
                measured.append(m)
    report(measured, args.out, args.threads)


if __name__ == "__main__":
    main()
