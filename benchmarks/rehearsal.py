"""The dress rehearsal at full length: every preset configuration from 4x4 to 1024x1024, timed.

The same machinery and checks as tests/test_rehearsal.py (tests/rehearsal_worker.py), for all of: the paper preset
in one process, v2-1gpu in one, v2-2gpu in two and v2-4gpu in four (torchrun, gloo), each killed with SIGKILL after a
checkpoint and resumed with a smaller batch at the resolutions not reached yet, then generate and eval on the 1024
export; and the paper preset launched on 8 processes, which must be refused naming what would work.

    .venv/bin/python -m benchmarks.rehearsal [--only paper-1process,...] [--spelled-out] [--json out.json]

--no-kill runs each straight through, --same-batch resumes without a batch change, --resolution sets the final
resolution (default 1024), and --spelled-out gives the preset tables as --batch/--lr/--mbstd-group and one phase length for every resolution:
the invocation that code without the v2 presets or per-resolution phase tables accepts, to watch it fail further in.
Prints a markdown table: per configuration, seconds for each part and whether every check passed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from tests.rehearsal_worker import (PAPER, TINY, V2, Plan, at, check, error_line, make_dataset, refusal, rehearse,
                                    table_arg)


def plans(resolution: int, kill: bool, change: bool, spelled_out: bool) -> dict[str, Plan]:
    """Each resumed with half the batch at the top two resolutions (not reached when the kill comes), as a user out
    of GPU memory there would (still a whole number per process); or, without `change`, with the same table."""
    def smaller(spec, processes):
        if not kill:
            return None
        table = {int(k): v for k, v in spec["batch"].items()}
        for res in (resolution // 2, resolution) if change else ():
            table[res] = max(processes, at(spec["batch"], res) // 2 // processes * processes)
        return table
    return {p.name: p for p in [
        Plan("paper-1process", "paper", 1, resolution, PAPER, smaller(PAPER, 1), spelled_out),
        Plan("v2-1gpu-1process", "v2-1gpu", 1, resolution, V2[1], smaller(V2[1], 1), spelled_out),
        Plan("v2-2gpu-2processes", "v2-2gpu", 2, resolution, V2[2], smaller(V2[2], 2), spelled_out),
        Plan("v2-4gpu-4processes", "v2-4gpu", 4, resolution, V2[4], smaller(V2[4], 4), spelled_out),
    ]}


def refusal_on_8_processes(data: str, root: Path, spelled_out: bool) -> dict:
    """`progan train --preset paper` under torchrun with 8 processes: refused before training, naming v2-8gpu."""
    args = ["train", "--data", data, "--run", str(root / "paper-8"), "--resolution", "1024", *TINY, "--quiet",
            "--device", "cpu"]
    args += (["--preset", "paper", "--batch", table_arg(PAPER["batch"]), "--mbstd-group", "16"] if spelled_out
             else ["--preset", "paper"])
    t0 = time.perf_counter()
    code, output, trained = refusal(8, root, args)
    ok = code != 0 and not trained and "v2-8gpu" in output
    return {"name": "paper on 8 processes (refused)", "seconds": {"refusal": time.perf_counter() - t0},
            "ok": ok, "failure": "" if ok else error_line(output)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma list of configurations (default: all)")
    parser.add_argument("--spelled-out", action="store_true")
    parser.add_argument("--resolution", type=int, default=1024, help="final resolution of every configuration")
    parser.add_argument("--no-kill", action="store_true", help="run each configuration straight through")
    parser.add_argument("--same-batch", action="store_true", help="resume with the batch table unchanged")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="rehearsal-"))
    root.mkdir(parents=True, exist_ok=True)
    chosen = plans(args.resolution, not args.no_kill, not args.same_batch, args.spelled_out)
    names = args.only.split(",") if args.only else list(chosen) + ["paper-8processes"]

    t0 = time.perf_counter()
    data = make_dataset(root)
    rows = [{"name": "dataset (16 images at 1024)", "seconds": {"dataset": time.perf_counter() - t0}, "ok": True,
             "failure": ""}]
    for name in names:
        if name == "paper-8processes":
            rows.append(refusal_on_8_processes(data, root, args.spelled_out))
            print(rows[-1], flush=True)
            continue
        plan, t0 = chosen[name], time.perf_counter()
        row = {"name": name, "seconds": {}, "ok": False, "failure": ""}
        try:
            outcome = rehearse(plan, data, root, seconds=row["seconds"])
            check(plan, outcome, root)
            assert plan.resume_batch is None or outcome.lines_dropped > 0, "the kill came at a checkpoint"
            row["ok"] = True
        except AssertionError as e:
            row["failure"] = str(e).splitlines()[0][:400]
        except Exception:  # a crash of the machinery itself: show it whole
            row["failure"] = traceback.format_exc()[-1500:]
        row["seconds"]["total"] = time.perf_counter() - t0
        rows.append(row)
        print(json.dumps(row), flush=True)

    parts = ["dataset", "train (killed)", "resume", "train", "generate", "eval", "refusal", "total"]
    print(f"\n| configuration | {' | '.join(parts)} | checks |")
    print("|---|" + "---:|" * len(parts) + "---|")
    for row in rows:
        cells = [f"{row['seconds'][p]:.1f}" if p in row["seconds"] else "" for p in parts]
        print(f"| {row['name']} | {' | '.join(cells)} | {'pass' if row['ok'] else 'FAIL: ' + row['failure']} |")
    print(f"\n(seconds of wall time; {root}{'' if args.keep else ', removed'})")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
