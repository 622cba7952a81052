"""The dress rehearsal (issue 10): paper-scale schedules end to end, in fast-forward, on the CPU.

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

from progan.config import ConfigError, preset
from progan.schedule import phase_at

from rehearsal_worker import PAPER, V2, Plan, check, make_dataset, rehearse

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


@pytest.mark.parametrize("name", ["paper", "v2-1gpu", "v2-2gpu", "v2-4gpu", "v2-8gpu"])
def test_preset_reaches_and_stabilises_at_its_resolution(name):
    """The preset's own total (no --kimg): its last step is at lod 0 at the requested resolution, after a stabilisation
    there of at least one phase's length."""
    for res in (8, 64, 256, 512, 1024):
        cfg = preset(name, res)
        total = round(cfg.schedule.total_kimg * 1000)
        last = phase_at(total - 1, res, cfg.schedule)
        assert last.lod == 0 and last.resolution == res, f"{name} at {res}: the last step is at {last}"
        stabilize = cfg.schedule.stabilize_at(res) if hasattr(cfg.schedule, "stabilize_at") else \
            cfg.schedule.stabilize_kimg
        assert phase_at(total - round(stabilize * 1000), res, cfg.schedule).resolution == res
    if name == "paper":
        assert preset(name, 1024).schedule.total_kimg == 19000  # RECIPE.md: the paper's one-GPU run


@pytest.mark.parametrize("processes", [2, 4, 8])
def test_paper_preset_on_many_processes_is_refused_naming_what_works(processes):
    """3 at 1024x1024 (and 14 at 256x256) does not split over 2, 4 or 8 processes; the refusal names the v2 preset
    for that count, which does (per-process batches in whole minibatch-stddev groups at every resolution)."""
    with pytest.raises(ConfigError) as refusal:
        preset("paper", 1024).check_batches(processes)
    assert f"v2-{processes}gpu" in str(refusal.value), str(refusal.value)
    preset(f"v2-{processes}gpu", 1024).check_batches(processes)
