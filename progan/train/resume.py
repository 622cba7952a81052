"""The run folder on start and on resume: refuse another run's folder, and decide which configuration changes a
resumed run may take.

A run can be rescued without editing config.json: a user who runs out of memory at 512x512 on day five lowers the
batch there and resumes. What may change on resume:
- the run's bounds and cadence (time limit, total, ticks, snapshots, checkpoints, metrics, the dataset's path):
  they do not change what a step computes;
- the batch, learning rate and minibatch-stddev group of resolutions not trained yet, and of the current one with a
  note in the log; the precision (fp32 or bf16), with a note (from here on);
- nothing that has already shaped the weights (widths, seed, losses, the phase lengths, past resolutions' batches).
Every accepted change is appended to the run's changes.jsonl.
"""

from __future__ import annotations

from pathlib import Path

from progan.config import ConfigError, TrainConfig, resolutions_up_to
from progan.fileio import append_jsonl, atomic_write_json, read_json
from progan.schedule import phase_at
from progan.train import checkpoint as ckpt

FREE_ON_RESUME = ("minutes", "data", "schedule.total_kimg", "tick_kimg", "snapshot_kimg", "checkpoint_kimg",
                  "keep_checkpoints", "metrics", "metrics_kimg", "metrics_images", "grid_size", "max_bad_steps")
NOTED_ON_RESUME = ("precision", "model.mbstd_group")
TABLES_AHEAD_ON_RESUME = ("schedule.batch", "schedule.lr")


def flat_config(cfg: TrainConfig) -> dict:
    """'section.key' -> value, with the per-resolution tables kept whole."""
    flat = {}
    for key, value in cfg.to_dict().items():
        if isinstance(value, dict):
            for sub, v in value.items():
                flat[f"{key}.{sub}"] = v
        else:
            flat[key] = value
    return flat


def resume_changes(saved: TrainConfig, new: TrainConfig, cur_nimg: int) -> tuple[list[str], list[str]]:
    """(accepted changes, notes for changes that act on the resolution in training now); refuses the rest."""
    current = phase_at(cur_nimg, saved.model.resolution, saved.schedule).resolution
    before, after = flat_config(saved), flat_config(new)
    accepted, notes, refused = [], [], []
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key), after.get(key)
        if a == b:
            continue
        change = f"{key}: {a!r} -> {b!r}"
        if key in FREE_ON_RESUME:
            accepted.append(change)
        elif key in NOTED_ON_RESUME:
            accepted.append(change)
            notes.append(f"{change} from {cur_nimg / 1000:g} kimg on, at {current}x{current} too")
        elif key in TABLES_AHEAD_ON_RESUME:
            table = key.split(".")[1]
            value = saved.schedule.batch_at if table == "batch" else saved.schedule.lr_at
            value_now = new.schedule.batch_at if table == "batch" else new.schedule.lr_at
            for res in resolutions_up_to(saved.model.resolution):
                if value(res) == value_now(res):
                    continue
                step = f"{table} at {res}x{res}: {value(res)} -> {value_now(res)}"
                if res < current:
                    refused.append(f"{step} (already trained; in training now: {current}x{current})")
                else:
                    accepted.append(step)
                    if res == current:
                        notes.append(f"{step} from {cur_nimg / 1000:g} kimg on, in the middle of {res}x{res}")
        else:
            refused.append(change)
    if refused:
        may = ", ".join(FREE_ON_RESUME + NOTED_ON_RESUME) + (
            ", and schedule.batch / schedule.lr at resolutions from the current one up")
        raise ConfigError("cannot resume with these changes: " + "; ".join(refused) + f". What may change: {may}")
    return accepted, notes


def prepare_run_dir(run_dir: Path, cfg: TrainConfig, resume: bool) -> tuple[list[str], list[str]]:
    """Refuse a folder holding another run; on resume check the changes (see resume_changes) and return them."""
    config_path = run_dir / "config.json"
    if resume:
        if not config_path.is_file():
            raise ConfigError(f"cannot resume: {run_dir} holds no run (no config.json)")
        saved = TrainConfig.from_dict(read_json(config_path, "run config"))
        progress = ckpt.RunProgress.from_dict(ckpt.read_state(ckpt.latest_checkpoint(run_dir)))
        return resume_changes(saved, cfg, progress.cur_nimg)
    if config_path.exists():
        raise ConfigError(f"{run_dir} already holds a run; resume it with --resume {run_dir} or choose a new folder")
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(f"{run_dir} is not empty and holds no progan run; choose a new folder")
    return [], []


def record_changes(run_dir: Path, cur_nimg: int, changes: list[str]) -> None:
    """Append the accepted changes of one resume to changes.jsonl (rank 0)."""
    if changes:
        append_jsonl(run_dir / "changes.jsonl", {"kimg": cur_nimg / 1000, "changes": changes})


CONDITIONS = "conditions.json"
WHAT_DIFFERS = {"kind": "what the model is conditioned on", "label_names": "the class names",
                "encoder": "the text encoder", "table_sha256": "the per-image labels or caption vectors"}


def check_same_conditions(run_dir: Path, fingerprint: dict, resume: bool) -> None:
    """Refuse to resume on a dataset whose conditions differ from those the run started with (a relabelled or
    re-encoded dataset would silently change what the model learns). Runs older than the record are not checked."""
    path = run_dir / CONDITIONS
    if resume and path.is_file():
        saved = read_json(path, "the run's conditions")
        differ = [f"{WHAT_DIFFERS.get(key, key)}: {saved.get(key)!r} -> {fingerprint.get(key)!r}"
                  for key in sorted(set(saved) | set(fingerprint)) if saved.get(key) != fingerprint.get(key)]
        if differ:
            raise ConfigError(f"cannot resume {run_dir}: its dataset's conditions differ from those the run started "
                              "with: " + "; ".join(differ) + ". Resume with the dataset it started with (--data)")


def record_conditions(run_dir: Path, fingerprint: dict) -> None:
    atomic_write_json(run_dir / CONDITIONS, fingerprint)
