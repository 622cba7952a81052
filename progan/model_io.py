"""The exported generator: `config.json` + `generator.safetensors` (EMA weights). No pickle, no training state.

Everything downstream of training (generate, eval, studio) loads models through `load_generator`, which accepts an
exported model folder, a run folder (its model/ or, failing that, its newest checkpoint) or a checkpoint folder.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from progan.config import ModelConfig
from progan.fileio import atomic_save_tensors, atomic_write_json, read_json
from progan.networks import Generator

MODEL_FORMAT = "progan-generator/1"
WEIGHTS = "generator.safetensors"
CONFIG = "config.json"


class ModelLoadError(ValueError):
    """A path that does not hold a usable progan generator."""


def export_generator(out_dir: str | Path, G_ema: Generator, *, lod: float, kimg: float, extra: dict | None = None):
    """Write the EMA generator and what is needed to rebuild it. Weights first, config last: a folder whose
    config.json exists is complete."""
    out_dir = Path(out_dir)
    atomic_save_tensors(out_dir / WEIGHTS, G_ema.state_dict(), metadata={"format": MODEL_FORMAT})
    meta = {"format": MODEL_FORMAT, "model": dataclasses.asdict(G_ema.cfg), "lod": float(lod), "kimg": float(kimg),
            "output_resolution": 2 ** (int(math.log2(G_ema.resolution)) - math.floor(lod))}
    meta.update(extra or {})
    atomic_write_json(out_dir / CONFIG, meta)


def resolve_model_path(path: str | Path) -> tuple[Path, str]:
    """-> (folder, kind) with kind 'model' (exported) or 'checkpoint'."""
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"model path does not exist: {path}")
    if path.is_file():
        path = path.parent
    if (path / CONFIG).is_file() and (path / WEIGHTS).is_file():
        return path, "model"
    if (path / "state.json").is_file() and (path / "G_ema.safetensors").is_file():
        return path, "checkpoint"
    if (path / "model" / CONFIG).is_file():
        return path / "model", "model"
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
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelLoadError(f"{weights} is not a readable safetensors file: {e}") from None
    check_state_dict(G, state, weights)
    G.load_state_dict(state)
    G.lod = float(lod)
    G.meta = {**meta, "kimg": kimg, "source": str(folder)}
    return G.to(device).eval().requires_grad_(False)


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
