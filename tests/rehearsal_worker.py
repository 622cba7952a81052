"""The dress rehearsal's machinery, shared by tests/test_rehearsal.py and benchmarks/rehearsal.py.

Run as a script it is the worker: any progan command (alone or under torchrun), watched.

    python tests/rehearsal_worker.py RECORD_PREFIX      (the command line in RECORD_PREFIX.argv.json)

The command line travels in a file because torchrun's own parser would claim abbreviations of its options (--run).

Every rank appends one JSON line per event to RECORD_PREFIX-rank<R>.jsonl, flushed at once so that a run killed with
SIGKILL keeps what it recorded:
  {"d": [n, resolution, lod, group_size]}   every D call: its batch, image size, lod and minibatch-stddev group
  {"adam": [n_params, [steps], lod]}        every optimizer step: Adam's step counts after it, the lod of the step
  {"final": {...}}                          when `train` returns: a digest of each network's weights, cur_nimg
Nothing it installs changes what training computes; it only watches.

Imported, it plans a rehearsal (`Plan`), runs it (`rehearse`: train, kill -9 the whole process tree after a
checkpoint, resume with a batch change at resolutions not reached yet, then generate and eval on the export) and
checks what the run left behind (`check`).
"""

from __future__ import annotations

import collections
import hashlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

# Networks a few channels wide: 4 channels up to 256x256, 2 at 512, 1 at 1024 (tiny channel counts are oneDNN's
# slowest case, so the top resolutions get the fewest).
TINY = ["--fmap-base", "512", "--fmap-max", "4", "--latent-size", "8"]

# The presets as RECIPE.md gives them (the official code's config.py): global batch and learning rate per resolution
# (the entry of the largest key at or below a resolution applies) and the minibatch-stddev group size.
PAPER = {"batch": {4: 16, 256: 14, 512: 6, 1024: 3}, "lr": {4: 0.001}, "group": 16}
V2 = {
    1: {"batch": {4: 128, 32: 64, 64: 32, 128: 16, 256: 8, 512: 4}, "lr": {4: 0.001, 1024: 0.0015}, "group": 4},
    2: {"batch": {4: 256, 16: 128, 32: 64, 64: 32, 128: 16, 256: 8}, "lr": {4: 0.001, 512: 0.0015, 1024: 0.002},
        "group": 4},
    4: {"batch": {4: 512, 8: 256, 16: 128, 32: 64, 64: 32, 128: 16},
        "lr": {4: 0.001, 256: 0.0015, 512: 0.002, 1024: 0.003}, "group": 4},
    8: {"batch": {4: 512, 8: 256, 16: 128, 32: 64, 64: 32}, "lr": {4: 0.001, 128: 0.0015, 256: 0.002, 512: 0.003},
        "group": 4},
}


def at(table: dict, res: int):
    """The entry of the largest key <= res (keys may be strings, as in config.json)."""
    table = {int(k): v for k, v in table.items()}
    return table[max(k for k in table if k <= res)]


def resolutions(final: int) -> list[int]:
    return [2**k for k in range(2, int(math.log2(final)) + 1)]


def table_arg(table: dict) -> str:
    return ",".join(f"{k}:{v}" for k, v in sorted(table.items()))


# ---------------------------------------------------------------------------------------------------------------
# The worker

def digest(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def install_recorder(path: str) -> None:
    """Watch every D call, minibatch-stddev group and Adam step of this process, and the end of `train`."""
    import progan.networks
    import progan.train.loop

    out = open(path, "a")
    seen = {"call": None, "lod": None}  # the D call in progress; the lod of the latest one (the step's)

    def write(record: dict) -> None:
        out.write(json.dumps(record) + "\n")
        out.flush()

    forward, mbstd = progan.networks.Discriminator.forward, progan.networks.minibatch_stddev
    adam_step, train = torch.optim.Adam.step, progan.train.loop.train

    def d_forward(self, img, lod, *args, **kwargs):
        seen["call"], seen["lod"] = [img.shape[0], img.shape[-1], float(lod)], float(lod)
        try:
            return forward(self, img, lod, *args, **kwargs)
        finally:
            seen["call"] = None

    def minibatch_stddev(x, group_size, *args, **kwargs):
        if seen["call"] is not None:
            n, res, lod = seen["call"]
            write({"d": [x.shape[0], res, lod, group_size]})
        return mbstd(x, group_size, *args, **kwargs)

    def step(self, *args, **kwargs):
        result = adam_step(self, *args, **kwargs)
        counts = sorted({int(s["step"]) for s in self.state.values() if "step" in s})
        write({"adam": [len(self.param_groups[0]["params"]), counts, seen["lod"]]})
        return result

    def train_and_record(*args, **kwargs):
        state = train(*args, **kwargs)
        progress = getattr(state, "progress", state)
        write({"final": {**{name: digest(m) for name, m in state.nets.items()}, "cur_nimg": progress.cur_nimg}})
        return state

    progan.networks.Discriminator.forward = d_forward
    progan.networks.minibatch_stddev = minibatch_stddev
    torch.optim.Adam.step = step
    progan.train.loop.train = train_and_record


# ---------------------------------------------------------------------------------------------------------------
# Planning a rehearsal

@dataclass
class Plan:
    name: str
    preset: str
    processes: int
    resolution: int
    spec: dict                  # the preset's tables as RECIPE.md gives them (PAPER or V2[n])
    resume_batch: dict | None = None   # given on resume: changes the batch of resolutions not reached when killed
    spelled_out: bool = False   # give the tables as --batch/--lr/--mbstd-group on top of --preset paper and one
                                # phase length for all resolutions: what code without the v2 presets and per-resolution
                                # phase tables understands (to watch such code fail)
    evaluate: bool = True       # progan eval on the export (generate always runs)
    extra: list[str] = field(default_factory=list)

    def batch(self, res: int) -> int:
        return at(self.spec["batch"], res)

    def steps_per_phase(self, res: int) -> int:
        """Two steps per phase where steps are cheap (so that an optimizer reset on every step would show), one from
        128x128 up."""
        return 2 if res <= 64 else 1

    def phases(self) -> tuple[dict, dict, int]:
        """Per-resolution phase lengths in images, and the total, such that every phase gets exactly
        `steps_per_phase` steps at the batch it runs with (the resume's table where it changes one), and the run
        stops where the preset's own total stops it (`preset_stop`), in fast-forward.

        The official convention: a fade owns (start, end), since at its very start lod is still whole (the step
        there belongs to the stabilisation before); a stabilisation owns [start, end]. Walking the steps, each
        phase ends just after its last step begins."""
        batch = lambda res: at(self.resume_batch or self.spec["batch"], res)  # noqa: E731
        stab, fade, timeline = {}, {}, []   # timeline: (start, length) of stabilise 4, fade 8, stabilise 8, ...
        end = t = 0           # where the phase before ends; where the next step begins
        for res in resolutions(self.resolution):
            k, b = self.steps_per_phase(res), batch(res)
            if res > 4:       # fade (end, end + fade): the k steps from t on
                last = t + (k - 1) * b
                fade[res] = last + 1 - end
                timeline.append((end, fade[res]))
                end, t = last + 1, last + b
            last = t + (k - 1) * b                   # stabilise [end, last]: the k steps from t on
            stab[res] = last - end
            timeline.append((end, stab[res]))
            end, t = last, last + b
        if self.spelled_out:                         # one length for every phase: the longest
            longest = max(list(stab.values()) + list(fade.values()))
            stab, fade = {r: longest for r in stab}, {r: longest for r in fade}
            timeline = [(i * longest, longest) for i in range(len(timeline))]
            end = timeline[-1][0] + longest
        phase, fraction = self.preset_stop()
        if phase == len(timeline) - 1 and fraction > 0:
            total = end + 1                          # the final stabilisation's k-th step is the last
        else:                                        # stops early, as the preset would
            start, length = timeline[phase]
            total = max(1, start + int(fraction * length))
        return stab, fade, total

    def preset_stop(self) -> tuple[int, float]:
        """Where the preset's own total ends its timeline (stabilise 4, fade 8, stabilise 8, ..., fade R, stabilise
        R): (index of the phase, fraction of it), the final stabilisation counting whole once it has begun. Read
        from progan.presets: a preset whose total stops before R is rehearsed stopping there too."""
        from progan.presets import preset
        schedule = preset("paper" if self.spelled_out else self.preset, self.resolution).schedule
        value = lambda v, res: at(v, res) if isinstance(v, dict) else v  # noqa: E731
        lengths = []
        for res in resolutions(self.resolution):
            if res > 4:
                lengths.append(value(schedule.fade_kimg, res))
            lengths.append(value(schedule.stabilize_kimg, res))
        rest = schedule.total_kimg
        for i, length in enumerate(lengths[:-1]):
            if rest < length:
                return i, rest / length
            rest -= length
        return len(lengths) - 1, 1.0 if rest > 0 else 0.0

    def total_images(self) -> int:
        return self.phases()[2]

    def train_args(self, data: str, run: Path) -> list[str]:
        stab, fade, total = self.phases()
        kimg = lambda t: ",".join(f"{r}:{n / 1000:g}" for r, n in t.items())  # noqa: E731
        args = ["train", "--data", data, "--run", str(run), "--resolution", str(self.resolution), *TINY,
                "--kimg", f"{total / 1000:g}",
                "--tick-kimg", "0.001",                                       # a stats line every step
                "--checkpoint-kimg", f"{total // 3 / 1000:g}",  # the first at low resolution: images go there
                "--snapshot-kimg", "1000", "--grid-size", "1", "--quiet", "--device", "cpu"]
        if self.spelled_out:
            args += ["--preset", "paper", "--batch", table_arg(self.spec["batch"]), "--lr", table_arg(self.spec["lr"]),
                     "--mbstd-group", str(self.spec["group"]),
                     "--stabilize-kimg", f"{stab[4] / 1000:g}", "--fade-kimg", f"{stab[4] / 1000:g}"]
        else:
            args += ["--preset", self.preset, "--stabilize-kimg", kimg(stab), "--fade-kimg", kimg(fade)]
        return args + self.extra


# ---------------------------------------------------------------------------------------------------------------
# Running it

def make_dataset(root: Path, count: int = 16) -> str:
    """`count` images at 1024x1024 through `progan dataset --source`: soft blobs of colour over smooth noise."""
    import numpy as np
    from PIL import Image, ImageDraw

    from progan.cli import main
    src = root / "rehearsal-src"
    src.mkdir()
    rng = np.random.default_rng(10)
    for i in range(count):
        img = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).resize((1024, 1024))
        draw = ImageDraw.Draw(img)
        for _ in range(3):
            x, y, r = (int(v) for v in rng.integers(100, 900, 3) // (1, 1, 3))
            draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        img.save(src / f"{i:02d}.bmp")  # PNG would take longer to write than the rest of the set-up
    out = root / "blobs1024"
    assert main(["dataset", "--source", str(src), "--out", str(out), "--resolution", "1024"]) == 0
    return str(out)


def command(processes: int, prefix: Path, argv: list[str]) -> list[str]:
    """The worker running `progan ARGV` in `processes` processes, recording under `prefix`."""
    Path(f"{prefix}.argv.json").write_text(json.dumps(argv))
    worker = [str(HERE / "rehearsal_worker.py"), str(prefix)]
    if processes == 1:
        return [sys.executable, *worker]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes), *worker]


def environment(processes: int) -> dict:
    # One thread per process, as one GPU per process; also because on a shared 2-core machine two OpenMP threads
    # spin-waiting for each other cost 10-25x the CPU time of one at these tiny layer sizes (measured).
    return {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def descendants(pid: int) -> list[int]:
    children = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the launcher's process group and every worker's (torchrun starts each worker in its own session):
    what a machine that loses power does to a run."""
    groups = {proc.pid}
    for pid in descendants(proc.pid):
        try:
            groups.add(os.getpgid(pid))
        except ProcessLookupError:
            pass
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def read_jsonl(path: Path, strict: bool = True) -> list[dict]:
    lines = []
    for i, line in enumerate(path.read_text().splitlines() if path.exists() else []):
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            if strict:
                raise AssertionError(f"{path} line {i + 1} is not JSON: {line[:200]!r}") from None
    return lines


def checkpoint_nimgs(run: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in (run / "checkpoints").glob("ckpt-*")) \
        if (run / "checkpoints").is_dir() else []


def error_line(log_text: str) -> str:
    """The line of a failed run's output that says why (the last one naming an error)."""
    lines = log_text.splitlines()
    ours = [line for line in lines if re.match(r"progan \w+: error: ", line)]
    errors = ours or [line for line in lines if re.search(r"(error|Error|Exception): ", line)]
    return errors[-1].strip() if errors else ""


def run_to_end(cmd: list[str], env: dict, log: Path, timeout: float) -> None:
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_tree(proc)
            raise AssertionError(f"{log.name}: still running after {timeout:.0f} s:\n{log.read_text()[-3000:]}")
        except BaseException:  # interrupted: leave no workers behind (each is in a session of its own)
            kill_tree(proc)
            raise
    text = log.read_text()
    assert rc == 0, f"{log.name}: exited {rc}: {error_line(text)}\n{text[-4000:]}"


def wait_for_a_checkpoint_then_kill(plan: Plan, proc: subprocess.Popen, run: Path, log: Path, timeout: float):
    """SIGKILL the run once a checkpoint exists and two more steps are logged after it."""
    deadline = time.monotonic() + timeout
    while True:
        rc = proc.poll()
        if rc is not None:
            text = log.read_text()
            raise AssertionError(f"{plan.name}: the run ended (exit {rc}) before it could be killed: "
                                 f"{error_line(text)}\n{text[-4000:]}")
        assert time.monotonic() < deadline, f"{plan.name}: no checkpoint within {timeout} s"
        ckpts = checkpoint_nimgs(run)
        if ckpts and sum(r["kimg"] * 1000 > ckpts[-1] for r in read_jsonl(run / "stats.jsonl", False)) >= 2:
            kill_tree(proc)
            return
        time.sleep(0.01)


def refusal(processes: int, root: Path, argv: list[str]) -> tuple[int, str, bool]:
    """`progan ARGV` under torchrun, expected to be refused before training: (exit code, output, whether any step
    or checkpoint was written)."""
    run = Path(argv[argv.index("--run") + 1])
    result = subprocess.run(command(processes, root / f"{run.name}-refused", argv), env=environment(processes),
                            capture_output=True, text=True, timeout=600)
    trained = (run / "stats.jsonl").exists() or (run / "checkpoints").exists()
    return result.returncode, result.stdout + result.stderr, trained


@dataclass
class Outcome:
    run: Path
    records: Path
    resumed_from: int | None = None        # the checkpoint's image count the resume continued from
    lines_dropped: int = 0                 # stats.jsonl lines past that checkpoint when the run was killed
    killed_at_kimg: float | None = None
    seconds: dict = field(default_factory=dict)


def rehearse(plan: Plan, data: str, root: Path, timeout: float = 900, seconds: dict | None = None) -> Outcome:
    """Train the plan from 4x4 to its resolution; with `plan.resume_batch`, SIGKILL the process tree once a checkpoint
    exists and two more steps are logged, then resume with that batch table. Then generate and eval on the export."""
    run, records = root / plan.name, root / f"{plan.name}-records"
    records.mkdir(parents=True)
    out = Outcome(run, records, seconds=seconds if seconds is not None else {})
    env = environment(plan.processes)
    cmd = command(plan.processes, records / "a", plan.train_args(data, run))

    t0 = time.perf_counter()
    if plan.resume_batch is None:
        run_to_end(cmd, env, records / "a.log", timeout)
    else:
        with open(records / "a.log", "w") as f:
            proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                wait_for_a_checkpoint_then_kill(plan, proc, run, records / "a.log", timeout)
            except BaseException:
                kill_tree(proc)
                raise
        stats = read_jsonl(run / "stats.jsonl", strict=False)
        out.resumed_from = checkpoint_nimgs(run)[-1]
        out.lines_dropped = sum(r["kimg"] * 1000 > out.resumed_from for r in stats)
        out.killed_at_kimg = max(r["kimg"] for r in stats)
        reached = max(r["resolution"] for r in stats)
        R = plan.resolution
        changed = [r for r in resolutions(R) if at(plan.resume_batch, r) != plan.batch(r)]
        assert reached < min(changed, default=2 * R), (
            f"{plan.name}: killed at {reached}x{reached}, not below the resolutions whose batch the resume changes")
        out.seconds["train (killed)"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        resume = ["train", "--resume", str(run), "--batch", table_arg(plan.resume_batch), "--quiet", "--device", "cpu"]
        run_to_end(command(plan.processes, records / "b", resume), env, records / "b.log", timeout)
    out.seconds["train" if plan.resume_batch is None else "resume"] = time.perf_counter() - t0

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the training processes (see `environment`)
    try:
        generate_and_eval(plan, run, root, out.seconds)
    finally:
        torch.set_num_threads(threads)
    return out


def generate_and_eval(plan: Plan, run: Path, root: Path, seconds: dict) -> None:
    from progan.cli import main
    t0 = time.perf_counter()
    assert main(["generate", str(run), "--out", str(root / f"{plan.name}-samples"), "--seeds", "0-3",
                 "--device", "cpu"]) == 0, f"{plan.name}: progan generate failed"
    seconds["generate"] = time.perf_counter() - t0
    if not plan.evaluate:
        return
    t0 = time.perf_counter()
    assert main(["eval", str(run), "--metrics", "swd", "--num-images", "8", "--batch", "4", "--device", "cpu",
                 "--json", str(root / f"{plan.name}-metrics.jsonl")]) == 0, f"{plan.name}: progan eval failed"
    seconds["eval"] = time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------------------------
# Checking what it left

def phase_of(line: dict) -> tuple[int, str]:
    return line["resolution"], "stabilize" if float(line["lod"]).is_integer() else "fade"


def check(plan: Plan, out: Outcome, root: Path) -> None:
    """Everything the rehearsal promises, as assertions naming what is wrong."""
    R, world, group = plan.resolution, plan.processes, plan.spec["group"]
    final_batch = plan.resume_batch or plan.spec["batch"]
    expected_batch = lambda res: at(final_batch, res)  # noqa: E731  (the resume changes only resolutions ahead)

    # The run's configuration is the preset's: RECIPE.md's tables and group.
    cfg = json.loads((out.run / "config.json").read_text())
    for res in resolutions(R):
        assert at(cfg["schedule"]["batch"], res) == expected_batch(res), (
            f"{plan.name}: config.json batch at {res}x{res} is {at(cfg['schedule']['batch'], res)}, "
            f"expected {expected_batch(res)}")
        assert at(cfg["schedule"]["lr"], res) == at(plan.spec["lr"], res), (
            f"{plan.name}: config.json lr at {res}x{res} is {at(cfg['schedule']['lr'], res)}, "
            f"expected {at(plan.spec['lr'], res)}")
    assert cfg["model"]["mbstd_group"] == group, f"{plan.name}: mbstd_group {cfg['model']['mbstd_group']} != {group}"

    # stats.jsonl: one line per step; kimg never repeats (lines past the resumed checkpoint dropped); every phase of
    # 4x4 .. R trained at its real batch and learning rate; the last step at lod 0 at R, at the total.
    stats = read_jsonl(out.run / "stats.jsonl")
    kimgs = [line["kimg"] for line in stats]
    assert all(a < b for a, b in zip(kimgs, kimgs[1:])), (
        f"{plan.name}: stats.jsonl kimg not strictly increasing (repeats after the kill?): "
        f"{[k for k, n in zip(kimgs, kimgs[1:]) if n <= k][:5]}")
    last = stats[-1]
    assert last["lod"] == 0 and last["resolution"] == R, (
        f"{plan.name}: the last step is not at lod 0, {R}x{R}: {last} (the preset's total stops in phase "
        f"{plan.preset_stop()} of its timeline)")
    assert round(last["kimg"] * 1000) >= plan.total_images(), f"{plan.name}: stopped at {last['kimg']} kimg"
    steps = collections.Counter(phase_of(line) for line in stats)
    wanted = {(4, "stabilize")} | {(r, kind) for r in resolutions(R)[1:] for kind in ("fade", "stabilize")}
    assert wanted <= set(steps), f"{plan.name}: phases never trained: {sorted(wanted - set(steps))}"
    if not plan.spelled_out:
        planned = {(r, kind): plan.steps_per_phase(r) for r, kind in wanted}
        assert steps == planned, f"{plan.name}: steps per phase {dict(steps)}, planned {planned}"
    for line in stats:
        res = line["resolution"]
        assert line["batch"] == expected_batch(res), f"{plan.name}: batch {line['batch']} at {res}x{res}: {line}"
        assert math.isclose(line["lr"], at(plan.spec["lr"], res)), f"{plan.name}: lr {line['lr']} at {res}: {line}"

    # What D saw, on every rank: only the per-process batch (reals, fakes or their mix, one kind per call, so no
    # minibatch-stddev group mixes reals and fakes), in whole groups; at every resolution.
    segments = sorted(out.records.glob("*-rank*.jsonl"))
    assert len(segments) == world * (1 if plan.resume_batch is None else 2), f"{plan.name}: records {segments}"
    seen_res = set()
    for path in segments:
        batch_table = plan.spec["batch"] if path.name.startswith("a-") else final_batch
        records = read_jsonl(path, strict=False)
        calls = [r["d"] for r in records if "d" in r]
        assert calls, f"{path.name}: no D call recorded"
        for n, res, lod, size in calls:
            local = at(batch_table, res) // world
            assert n == local, (f"{plan.name} {path.name}: D saw {n} images at {res}x{res} (lod {lod}); the "
                                f"per-process batch is {local}" + (": reals and fakes in one call share minibatch-"
                                                                   "stddev groups" if n == 2 * local else ""))
            g = min(size, n)
            assert g == min(group, local) and n % g == 0, f"{path.name}: group {size} over {n} images at {res}"
            assert res == 2 ** (int(math.log2(R)) - math.floor(lod)), f"{path.name}: {res}x{res} at lod {lod}"
            seen_res.add(res)
        check_optimizer_resets(plan, path, records, stats, out)
    assert seen_res == set(resolutions(R)), f"{plan.name}: D never ran at {sorted(set(resolutions(R)) - seen_res)}"

    # Every rank ends with the same weights, at the total.
    finals = [next(r["final"] for r in read_jsonl(p) if "final" in r) for p in segments if p.name.startswith(
        "b-" if plan.resume_batch is not None else "a-")]
    assert len(finals) == world and all(f == finals[0] for f in finals), f"{plan.name}: ranks differ at the end"
    assert finals[0]["cur_nimg"] == round(last["kimg"] * 1000)

    # The export is the final G_ema at R, lod 0; generate and eval ran on it.
    meta = json.loads((out.run / "model" / "config.json").read_text())
    assert meta["output_resolution"] == R and meta["lod"] == 0, f"{plan.name}: exported {meta}"
    from safetensors.torch import load_file
    exported = load_file(str(out.run / "model" / "generator.safetensors"))
    ckpt = load_file(str(out.run / "checkpoints" / f"ckpt-{checkpoint_nimgs(out.run)[-1]:012d}" / "G_ema.safetensors"))
    assert exported.keys() == ckpt.keys() and all(torch.equal(exported[k], ckpt[k]) for k in ckpt)
    from PIL import Image
    with Image.open(root / f"{plan.name}-samples" / "grid.png") as grid:
        assert min(grid.size) >= 2 * R, f"{plan.name}: a 2x2 grid of {R}x{R} samples is {grid.size}"
    if not plan.evaluate:
        return
    metrics = read_jsonl(root / f"{plan.name}-metrics.jsonl")
    assert metrics and all(math.isfinite(m["value"]) for m in metrics), f"{plan.name}: eval gave {metrics}"


def check_optimizer_resets(plan: Plan, path: Path, records: list[dict], stats: list[dict], out: Outcome) -> None:
    """Adam starts afresh at the start of every fade and every stabilisation, and nowhere else: its step count is 1
    on a phase's first step and counts up by one per step. A resumed process continues the checkpoint's moments."""
    R = plan.resolution
    steps = [r["adam"] for r in records if "adam" in r]
    for n_params in {s[0] for s in steps}:
        previous_key, previous = None, None
        for _, counts, lod in (s for s in steps if s[0] == n_params):
            assert len(counts) == 1, f"{path.name}: Adam parameters at different step counts {counts} (lod {lod})"
            key = (math.floor(lod), math.ceil(lod))
            if key != previous_key and previous_key is None and path.name.startswith("b-"):
                # The first step after the resume: the phase's steps before the checkpoint, plus this one.
                res = 2 ** (int(math.log2(R)) - key[0])
                kind = "stabilize" if key[0] == key[1] else "fade"
                before = sum(1 for s in stats if s["kimg"] * 1000 <= out.resumed_from and phase_of(s) == (res, kind))
                assert counts[0] == before + 1, (f"{path.name}: Adam step {counts[0]} on the first step after the "
                                                 f"resume; {before} steps of that phase came before the checkpoint")
            elif key != previous_key:
                assert counts[0] == 1, f"{path.name}: Adam not reset at the phase starting at lod {lod}: {counts}"
            else:
                assert counts[0] == previous + 1, f"{path.name}: Adam step {counts[0]} after {previous} (lod {lod})"
            previous_key, previous = key, counts[0]


if __name__ == "__main__":
    prefix = sys.argv[1]
    argv = json.loads(Path(f"{prefix}.argv.json").read_text())
    install_recorder(f"{prefix}-rank{os.environ.get('RANK', '0')}.jsonl")
    from progan.cli import main
    sys.exit(main(argv))
