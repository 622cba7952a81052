"""Process-wide settings: glibc keeps the memory a step frees instead of faulting it back in next step."""

import subprocess
import sys
import textwrap

from progan.runtime import keep_freed_memory

# A training step's pattern in miniature: tensors of 256 KB to 16 MB allocated, touched and freed out of order.
STEPS = textwrap.dedent("""
    import random, resource, sys
    import torch
    from progan.runtime import keep_freed_memory
    if sys.argv[1] == "keep":
        assert keep_freed_memory()
    rng = random.Random(0)
    sizes = [rng.choice([2**16, 2**18, 2**20, 2**22]) for _ in range(60)]
    def step():
        live = []
        for i, n in enumerate(sizes):
            live.append(torch.ones(n))
            if i % 3 == 2:
                del live[rng.randrange(len(live))]
    for _ in range(3):  # warm-up: the heap grows to the step's peak
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        step()
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 3)
""")


def faults_per_step(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", STEPS, mode], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip())


def test_kept_memory_is_not_faulted_back_in():
    if not sys.platform.startswith("linux"):  # no glibc: the call reports that it changed nothing
        assert keep_freed_memory() is False
        return
    default, kept = faults_per_step("default"), faults_per_step("keep")
    assert default > 2000, f"glibc's defaults should return freed memory here ({default} faults per step)"
    assert kept < default / 20, (kept, default)
