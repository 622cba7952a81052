"""Two CPU processes under torchrun with the gloo backend: what multi-GPU NCCL runs do, minus the GPUs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from progan.presets import preset
from progan.train.loop import train

HERE = Path(__file__).parent


def test_two_process_gloo_run_keeps_ranks_identical_and_matches_one_process(tiny_dataset, tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(HERE / "ddp_worker.py"), tiny_dataset, str(tmp_path / "run2"), str(tmp_path)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1], "ranks ended with different weights"
    assert ranks[0]["cur_nimg"] == 320

    # Only rank 0 wrote, and the result equals one process on the same global batch, up to float rounding
    # (each rank averages over its half of the batch; the gradients are then averaged across ranks).
    cfg = preset("tiny", 8)
    cfg.data = tiny_dataset
    single = train(cfg, tmp_path / "run1", device="cpu", progress=False)
    two = load_file(str(sorted((tmp_path / "run2" / "checkpoints").glob("ckpt-*"))[-1] / "G_ema.safetensors"))
    for k, v in single.G_ema.state_dict().items():
        torch.testing.assert_close(two[k], v, rtol=1e-3, atol=1e-4)


def test_readme_torchrun_command_reaches_progan_intact():
    """torchrun's parser allows abbreviations, so without the `--` it would claim progan's --run as its --run-path."""
    import re
    import shlex

    from torch.distributed.run import get_args_parser

    from progan.cli import build_parser

    readme = (HERE.parent / "README.md").read_text()
    line = re.search(r"^(torchrun .+)$", readme, re.M).group(1)  # the line of the README's command block
    launch = get_args_parser().parse_args(shlex.split(line)[1:])
    assert launch.module and launch.training_script == "progan.cli"
    args = build_parser().parse_args(launch.training_script_args)
    assert (args.command, str(args.run), args.preset) == ("train", "runs/photos", "v2-8gpu")
