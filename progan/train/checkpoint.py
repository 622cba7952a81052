"""Training checkpoints: safetensors for every tensor, JSON for everything else. No pickle anywhere.

A checkpoint is a folder checkpoints/ckpt-<images shown>/ holding G, D, G_ema and both optimizers' states plus
state.json. It is written under a temporary name and renamed into place, so a folder with the final name is always
complete; the newest `keep` are kept.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from progan.fileio import atomic_save_tensors, atomic_write_json, fsync_dir, read_json, read_tensors
from progan.model_io import check_state_dict

CHECKPOINT_FORMAT = "progan-checkpoint/1"
NETWORKS = ("G", "D", "G_ema")
OPTIMIZERS = ("opt_G", "opt_D")


class CheckpointError(ValueError):
    pass


@dataclass
class RunProgress:
    """How far a run has got: everything of the training state that is not a tensor. The schedule is a function
    of cur_nimg, so this is all a checkpoint needs beside the weights and the optimizer moments."""
    cur_nimg: int = 0                                 # real images shown to D
    lod: float | None = None                          # of the last step trained (None before the first)
    optimizer_key: tuple[int, int] | None = None      # the phase the optimizers' moments belong to
    bad_steps_total: int = 0                          # steps skipped for non-finite losses or gradients
    train_seconds: float = 0.0                        # time spent in training steps

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunProgress":
        key = d["optimizer_key"]
        return cls(cur_nimg=int(d["cur_nimg"]), lod=None if d["lod"] is None else float(d["lod"]),
                   optimizer_key=None if key is None else (int(key[0]), int(key[1])),
                   bad_steps_total=int(d["bad_steps_total"]), train_seconds=float(d["train_seconds"]))


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Adam's state as flat named tensors ('<param index>.<exp_avg|exp_avg_sq|step>') + JSON-able param groups."""
    sd = opt.state_dict()
    tensors = {f"{i}.{k}": torch.as_tensor(v) for i, st in sd["state"].items() for k, v in st.items()}
    return tensors, sd["param_groups"]


# How the optimizer computes, not what: the running process decides these (a run may resume on another device or
# torch), the checkpoint's values would otherwise overwrite them.
IMPLEMENTATION_KEYS = ("foreach", "fused", "capturable")


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]) -> None:
    state: dict[int, dict] = {}
    for name, t in tensors.items():
        i, k = name.split(".", 1)
        state.setdefault(int(i), {})[k] = t
    groups = [{**saved, **{k: now[k] for k in IMPLEMENTATION_KEYS if k in now}}
              for saved, now in zip(groups, opt.param_groups)]
    opt.load_state_dict({"state": state, "param_groups": groups})


def save_checkpoint(run_dir: str | Path, nets: dict[str, torch.nn.Module], opts: dict[str, torch.optim.Optimizer],
                    progress: RunProgress, extra: dict, keep: int) -> Path:
    """`extra`: more JSON for state.json (what produced the checkpoint); the progress is what resume reads."""
    ckpt_root = Path(run_dir) / "checkpoints"
    final = ckpt_root / f"ckpt-{progress.cur_nimg:012d}"
    tmp = ckpt_root / f".tmp-{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in NETWORKS:
        atomic_save_tensors(tmp / f"{name}.safetensors", nets[name].state_dict())
    groups = {}
    for name in OPTIMIZERS:
        tensors, groups[name] = optimizer_tensors(opts[name])
        atomic_save_tensors(tmp / f"{name}.safetensors", tensors)
    atomic_write_json(tmp / "state.json", {"format": CHECKPOINT_FORMAT, **extra, **progress.to_dict(),
                                           "param_groups": groups})
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    fsync_dir(ckpt_root)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    root = Path(run_dir) / "checkpoints"
    return sorted(p for p in root.glob("ckpt-*") if (p / "state.json").is_file()) if root.is_dir() else []


def latest_checkpoint(run_dir: str | Path) -> Path:
    found = list_checkpoints(run_dir)
    if not found:
        raise CheckpointError(f"no checkpoint to resume from in {Path(run_dir) / 'checkpoints'}")
    return found[-1]


def read_state(ckpt: str | Path) -> dict:
    state = read_json(Path(ckpt) / "state.json", "checkpoint state")
    if state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{ckpt}/state.json: format {state.get('format')!r}, expected {CHECKPOINT_FORMAT!r}")
    return state


def load_checkpoint(ckpt: str | Path, nets: dict[str, torch.nn.Module],
                    opts: dict[str, torch.optim.Optimizer]) -> RunProgress:
    """Load weights and optimizer states in place; returns the run's progress."""
    ckpt = Path(ckpt)
    state = read_state(ckpt)
    for name in NETWORKS + OPTIMIZERS:
        path = ckpt / f"{name}.safetensors"
        tensors = read_tensors(path)
        if name in nets:
            check_state_dict(nets[name], tensors, path)
            nets[name].load_state_dict(tensors)
        else:
            load_optimizer(opts[name], tensors, state["param_groups"][name])
    return RunProgress.from_dict(state)
