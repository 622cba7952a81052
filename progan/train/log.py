"""What a long run tells you: a progress bar, stats.jsonl (one JSON object per tick) and TensorBoard if installed."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from tqdm import tqdm


class RunLog:
    """Rank 0 only. Appends never rewrite earlier lines, so a crash loses at most the current tick."""

    def __init__(self, run_dir: Path, total_kimg: float, start_kimg: float, enabled: bool = True,
                 show_bar: bool = True):
        self.enabled = enabled
        self.stats_path = run_dir / "stats.jsonl"
        self.bar = tqdm(total=round(total_kimg, 3), initial=round(start_kimg, 3), unit="kimg", dynamic_ncols=True,
                        disable=not (enabled and show_bar), file=sys.stderr,
                        bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} kimg [{elapsed}<{remaining}{postfix}]")
        self.tb = _tensorboard_writer(run_dir / "tensorboard") if enabled else None

    def progress(self, kimg: float, phase, images_per_sec: float, loss_d: float, loss_g: float) -> None:
        if not self.enabled:
            return
        self.bar.n = round(min(kimg, self.bar.total), 3)
        self.bar.set_postfix_str(f"{phase.resolution}x{phase.resolution} a={phase.alpha:.2f} "
                                 f"{images_per_sec:.1f} img/s D={loss_d:+.3f} G={loss_g:+.3f}", refresh=True)

    def tick(self, stats: dict) -> None:
        if not self.enabled:
            return
        with open(self.stats_path, "a") as f:
            f.write(json.dumps(stats) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if self.tb is not None:
            for k, v in stats.items():
                if isinstance(v, (int, float)) and k != "kimg":
                    self.tb.add_scalar(k, v, global_step=int(stats["kimg"] * 1000))
            self.tb.flush()

    def message(self, text: str) -> None:
        if self.enabled:
            self.bar.write(text, file=sys.stderr)

    def close(self) -> None:
        if self.enabled:
            self.bar.close()
            if self.tb is not None:
                self.tb.close()


def _tensorboard_writer(path: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(path))
