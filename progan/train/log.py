"""What a long run tells you: a progress bar, stats.jsonl (one JSON object per tick) and TensorBoard if installed."""

from __future__ import annotations

import sys
from pathlib import Path

from tqdm import tqdm

from progan.fileio import append_jsonl, trim_jsonl


class RunLog:
    """Rank 0 only. Appends never rewrite earlier lines, so a crash loses at most the current tick.

    On resume the run continues from its last checkpoint, so whatever a killed process logged after that
    checkpoint is dropped first (stats.jsonl, metrics.jsonl, TensorBoard's events): no kimg appears twice.
    """

    def __init__(self, run_dir: Path, total_kimg: float, start_kimg: float, enabled: bool = True,
                 show_bar: bool = True):
        self.enabled = enabled
        self.stats_path = run_dir / "stats.jsonl"
        if enabled:
            forget_after(run_dir, start_kimg)
        self.bar = tqdm(total=round(total_kimg, 3), initial=round(start_kimg, 3), unit="kimg", dynamic_ncols=True,
                        disable=not (enabled and show_bar), file=sys.stderr,
                        bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} kimg [{elapsed}<{remaining}{postfix}]")
        self.tb = _tensorboard_writer(run_dir / "tensorboard", start_kimg) if enabled else None

    def progress(self, kimg: float, phase, images_per_sec: float, loss_d: float, loss_g: float) -> None:
        if not self.enabled:
            return
        self.bar.n = round(min(kimg, self.bar.total), 3)
        self.bar.set_postfix_str(f"{phase.resolution}x{phase.resolution} a={phase.alpha:.2f} "
                                 f"{images_per_sec:.1f} img/s D={loss_d:+.3f} G={loss_g:+.3f}", refresh=True)

    def tick(self, stats: dict) -> None:
        if not self.enabled:
            return
        append_jsonl(self.stats_path, stats)
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


def forget_after(run_dir: Path, kimg: float) -> None:
    """Drop the log lines of images shown after `kimg` (written by a process killed after its last checkpoint)."""
    trim_jsonl(run_dir / "stats.jsonl", lambda r: r["kimg"] <= kimg + 1e-9)
    trim_jsonl(run_dir / "metrics.jsonl", lambda r: r["snapshot_kimg"] <= kimg + 1e-9)


def _tensorboard_writer(path: Path, start_kimg: float):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    # purge_step: TensorBoard hides the events a killed process wrote past the checkpoint we resume from
    return SummaryWriter(str(path), purge_step=round(start_kimg * 1000) + 1 if start_kimg > 0 else None)
