"""The exported generator: `config.json` + `generator.safetensors` (EMA weights). No pickle, no training state.

Everything downstream of training (generate, eval, studio) loads models through `load_generator`, which accepts an
exported model folder, a run folder (its model/ or, failing that, its newest checkpoint) or a checkpoint folder.

A run's model/ is a symbolic link to one complete version folder in .model-versions/ beside it, so that each export
appears whole, in one atomic step (see `export_generator`); copy it with `cp -rL` (or `cp -r run/model/ dest`).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import torch

from progan.config import ModelConfig
from progan.fileio import atomic_save_tensors, atomic_write_json, fsync_dir, read_json, read_tensors
from progan.lod import resolution_at
from progan.networks import Generator

MODEL_FORMAT = "progan-generator/1"
WEIGHTS = "generator.safetensors"
CONFIG = "config.json"
CONDITIONS = "conditions.safetensors"
TMP_PREFIX = ".tmp-"  # a version folder being written


class ModelLoadError(ValueError):
    """A path that does not hold a usable progan generator."""


def export_generator(out_dir: str | Path, G_ema: Generator, *, lod: float, kimg: float,
                     extra: dict | None = None, tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Write the EMA generator and what is needed to rebuild it, as a folder `out_dir` that appears whole.

    Weights and config are two files, and a crash between two in-place writes would pair new weights with the old
    level of detail. So `out_dir` is a symbolic link to a version folder in `.<name>-versions/` beside it: an export
    writes a new version under a temporary name, renames it when complete, and then points the link at it by renaming
    a fresh link over the old one (os.replace: atomic on POSIX). Whenever the writer dies, a reader finds the old
    complete model or the new complete one. The version before the current one is kept for a reader that resolved
    the link just before the swap; older ones and the leftovers of an interrupted export are removed.
    Returns the version folder written.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"cannot export the generator to {out_dir}: it is a file, not a model folder")
    versions = versions_dir(out_dir)
    versions.mkdir(parents=True, exist_ok=True)
    token = os.urandom(4).hex()  # a unique name, not a random stream: no seed involved
    tmp = versions / f"{TMP_PREFIX}{token}"
    tmp.mkdir()  # not mkdtemp: its mode 0700 would hide the model from the other users of a shared machine
    atomic_save_tensors(tmp / WEIGHTS, G_ema.state_dict(), metadata={"format": MODEL_FORMAT})
    if tensors:  # what the model is conditioned on (progan.conditioning.spec), beside the weights
        atomic_save_tensors(tmp / CONDITIONS, tensors)
    meta = {"format": MODEL_FORMAT, "model": dataclasses.asdict(G_ema.cfg), "lod": float(lod), "kimg": float(kimg),
            "output_resolution": resolution_at(lod, G_ema.resolution)}
    meta.update(extra or {})
    atomic_write_json(tmp / CONFIG, meta)
    final = versions / f"{round(kimg * 1000):012d}-{token}"
    os.rename(tmp, final)
    fsync_dir(versions)

    previous = out_dir.resolve() if out_dir.is_symlink() else None
    if out_dir.is_dir() and not out_dir.is_symlink():
        # Exported before versions existed: it becomes a version. Until the link below is in place, readers find
        # the newest complete version (`resolve_model_path`).
        previous = versions / f"{round(exported_kimg(out_dir) * 1000):012d}-old-{token}"
        os.rename(out_dir, previous)
    link = out_dir.parent / f".{out_dir.name}.link-{token}"
    os.symlink(os.path.join(versions.name, final.name), link)
    os.replace(link, out_dir)
    fsync_dir(out_dir.parent)

    for old in versions.iterdir():
        if old != final and old != previous:
            shutil.rmtree(old, ignore_errors=True)
    for stale in out_dir.parent.glob(f".{out_dir.name}.link-*"):
        stale.unlink(missing_ok=True)
    return final



def exported_kimg(folder: Path) -> float:
    try:
        return float(read_json(folder / CONFIG, "model config").get("kimg", 0.0))
    except (OSError, ValueError):
        return 0.0


def versions_dir(model_dir: Path) -> Path:
    return model_dir.parent / f".{model_dir.name}-versions"


def newest_version(model_dir: Path) -> Path | None:
    """The newest complete version behind a model link (versions are named by images shown), or None."""
    versions = versions_dir(model_dir)
    if not versions.is_dir():
        return None
    complete = sorted(v for v in versions.iterdir()
                      if not v.name.startswith(TMP_PREFIX) and (v / CONFIG).is_file() and (v / WEIGHTS).is_file())
    return complete[-1] if complete else None


def resolve_model_path(path: str | Path) -> tuple[Path, str]:
    """-> (folder, kind) with kind 'model' (exported) or 'checkpoint'.

    A model folder is returned with its link resolved, so that its config and weights are read from one version
    even if an export swaps the link in between.
    """
    path = Path(path)
    if not path.exists():
        # A model link is missing only while an export converts an old-style folder (or after a crash in it).
        if (found := newest_version(path)) is not None:
            return found, "model"
        raise ModelLoadError(f"model path does not exist: {path}")
    if path.is_file():
        path = path.parent
    if (path / CONFIG).is_file() and (path / WEIGHTS).is_file():
        return path.resolve(), "model"
    if (path / "state.json").is_file() and (path / "G_ema.safetensors").is_file():
        return path, "checkpoint"
    if (path / "model" / CONFIG).is_file():
        return (path / "model").resolve(), "model"
    if (found := newest_version(path / "model")) is not None:
        return found, "model"
    checkpoints = sorted((path / "checkpoints").glob("ckpt-*/state.json")) if (path / "checkpoints").is_dir() else []
    if checkpoints:
        return checkpoints[-1].parent, "checkpoint"
    raise ModelLoadError(f"{path} is not a progan model: expected an exported model folder ({CONFIG} + {WEIGHTS}), "
                         "a run folder (with model/ or checkpoints/) or a checkpoint folder")


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> Generator:
    """Rebuild the EMA generator from a model, run or checkpoint folder. Sets G.lod to the trained level of detail
    and attaches the JSON metadata as G.meta."""
    folder, kind = resolve_model_path(path)
    if kind == "model":
        meta = read_json(folder / CONFIG, "model config")
        if meta.get("format") != MODEL_FORMAT:
            raise ModelLoadError(f"{folder / CONFIG}: format is {meta.get('format')!r}, expected {MODEL_FORMAT!r}")
        weights = folder / WEIGHTS
        model_cfg, lod, kimg = meta["model"], meta["lod"], meta["kimg"]
    else:
        meta = read_json(folder / "state.json", "checkpoint state")
        weights = folder / "G_ema.safetensors"
        model_cfg, lod, kimg = meta["config"]["model"], meta["lod"], meta["cur_nimg"] / 1000
    try:
        cfg = ModelConfig(**model_cfg)
        cfg.validate()
    except (TypeError, ValueError) as e:
        raise ModelLoadError(f"{folder}: bad model config: {e}") from None
    G = Generator(cfg)
    state = read_tensors(weights)
    check_state_dict(G, state, weights)
    G.load_state_dict(state)
    G.lod = float(lod)
    G.meta = {**meta, "kimg": kimg, "source": str(folder)}
    record = folder if kind == "model" else run_model_of(folder)
    if cfg.cond_size and record is not None:
        if record != folder:
            G.meta.update({k: v for k, v in read_json(record / CONFIG, "model config").items()
                           if k in ("conditioning", "dataset")})
        if (record / CONDITIONS).is_file():
            G.meta["conditioning"] = {**G.meta.get("conditioning", {}), **read_tensors(record / CONDITIONS)}
    return G.to(device).eval().requires_grad_(False)


def run_model_of(checkpoint: Path) -> Path | None:
    """The exported model beside a checkpoint (RUN/checkpoints/ckpt-N -> RUN/model), or None. A checkpoint holds
    weights and training state; what a conditional run is conditioned on (class names, captions and their vectors,
    the encoder) is recorded once, by the model every checkpoint exports."""
    try:
        found, kind = resolve_model_path(checkpoint.parent.parent / "model")
    except ModelLoadError:
        return None
    return found if kind == "model" else None


def state_dict_mismatch(module: torch.nn.Module, state: dict[str, torch.Tensor], ignore_suffix: str = "\0") -> str:
    """'' when `state` fits `module` exactly, else a short account: missing, unexpected and mis-shaped entries."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items() if not k.endswith(ignore_suffix)}
    given = {k: tuple(v.shape) for k, v in state.items() if not k.endswith(ignore_suffix)}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    shapes = sorted(k for k in set(expected) & set(given) if expected[k] != given[k])
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} with wrong shapes (e.g. {k}: {given[k]} instead of {expected[k]})")
    return "; ".join(parts)


def check_state_dict(module: torch.nn.Module, state: dict[str, torch.Tensor], source) -> None:
    """A clear message for weights that do not fit the architecture, instead of load_state_dict's wall of text."""
    problem = state_dict_mismatch(module, state)
    if problem:
        raise ModelLoadError(f"{source} does not match its config: {problem}")
