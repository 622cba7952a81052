"""Run under torchrun by tests/test_ddp.py: trains, then every rank writes a digest of its weights."""

import json
import os
import sys

from progan.presets import preset
from progan.train.distributed import shutdown
from progan.train.loop import train
from rehearsal_worker import digest  # one weight digest for both workers (tests/ is the script's folder)

if __name__ == "__main__":
    data, run_dir, out_dir = sys.argv[1:4]
    cfg = preset("tiny", 8)
    cfg.data = data
    state = train(cfg, run_dir, device="cpu", progress=False)
    rank = int(os.environ["RANK"])
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump({name: digest(m) for name, m in state.nets.items()} | {"cur_nimg": state.progress.cur_nimg}, f)
    shutdown()
