"""The dress rehearsal: paper-scale schedules end to end, in fast-forward, on the CPU.

The paper's one-GPU preset and the official v2 multi-GPU presets run at their real batch and learning-rate tables,
minibatch-stddev groups, phase structure and optimizer resets, on networks a few channels wide with every phase cut
to a few steps: from 4x4 to 1024x1024 in one process and in two (torchrun, gloo), to 32x32 in four. The one- and
two-process runs are killed with SIGKILL after a checkpoint and resumed with a smaller batch at resolutions not
reached yet; every run ends with generate on its export, the one-process run with eval on its 1024x1024 generator
too (the same code for every export). tests/rehearsal_worker.py watches every process (what D saw, every Adam step,
the final weights per rank) and holds the checks; benchmarks/rehearsal.py runs every configuration to 1024 and times
it.
"""

from __future__ import annotations

import pytest

from rehearsal_worker import PAPER, TINY, V2, Plan, check, error_line, make_dataset, refusal, rehearse

PLANS = {
    "paper-1process": Plan("paper-1process", "paper", 1, 1024, PAPER,
                           resume_batch={4: 16, 256: 14, 512: 4, 1024: 2}),
    "v2-2gpu-2processes": Plan("v2-2gpu-2processes", "v2-2gpu", 2, 1024, V2[2],
                               resume_batch={**V2[2]["batch"], 1024: 4}, evaluate=False),
    "v2-4gpu-4processes": Plan("v2-4gpu-4processes", "v2-4gpu", 4, 32, V2[4], evaluate=False),
}


@pytest.fixture(scope="module")
def dataset_1024(tmp_path_factory) -> str:
    return make_dataset(tmp_path_factory.mktemp("rehearsal-data"))


@pytest.mark.parametrize("name", list(PLANS))
def test_rehearsal(name, dataset_1024, tmp_path):
    plan = PLANS[name]
    outcome = rehearse(plan, dataset_1024, tmp_path)
    print(name, {part: round(seconds, 1) for part, seconds in outcome.seconds.items()})  # pytest -s shows it
    check(plan, outcome, tmp_path)
    if plan.resume_batch is not None:
        assert outcome.lines_dropped > 0, "the kill came at a checkpoint: nothing for the resume to drop"
        changes = (outcome.run / "changes.jsonl").read_text()
        assert "batch" in changes, f"the batch change on resume is not recorded in the run: {changes!r}"


def test_paper_preset_under_torchrun_is_refused_naming_what_works(dataset_1024, tmp_path):
    """The paper's batch table (3 at 1024x1024) does not split over 2 processes: refused before any step, naming the
    official schedule for that count (benchmarks/rehearsal.py does the same with 8)."""
    args = ["train", "--data", dataset_1024, "--run", str(tmp_path / "paper-2"), "--preset", "paper",
            "--resolution", "1024", *TINY, "--quiet", "--device", "cpu"]
    code, output, trained = refusal(2, tmp_path, args)
    assert code != 0 and not trained, output[-3000:]
    assert "v2-2gpu" in output, f"the refusal does not say what would work: {error_line(output)}"
