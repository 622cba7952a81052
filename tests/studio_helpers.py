"""What the studio's tests share: random-weight generators (exported like a trained one) and a click track."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import torch

from progan.config import ModelConfig
from progan.model_io import export_generator
from progan.networks import Generator


def random_generator(resolution: int = 32, latent_size: int = 64, fmap_base: int = 512, fmap_max: int = 64,
                     seed: int = 0, **model) -> Generator:
    """A generator with random weights, the same for the same arguments (eval mode, no gradients)."""
    torch.manual_seed(seed)
    cfg = ModelConfig(resolution=resolution, latent_size=latent_size, fmap_base=fmap_base, fmap_max=fmap_max, **model)
    return Generator(cfg).eval().requires_grad_(False)


def class_generator() -> Generator:
    """A random-weight class-conditional generator (cat, dog, owl) that records its classes as an exported one."""
    G = random_generator(resolution=16, latent_size=32, fmap_base=256, fmap_max=32, num_classes=3)
    G.meta = {"kimg": 1.0, "conditioning": {"kind": "class", "label_names": ["cat", "dog", "owl"]}}
    return G


def export_random_generator(folder: Path, kimg: float = 5.0, **kw) -> Path:
    """random_generator(**kw) exported to folder/model, as `progan train` exports one; its path."""
    path = Path(folder) / "model"
    export_generator(path, random_generator(**kw), lod=0.0, kimg=kimg)
    return path


def write_clicks(path: Path, seconds: float = 3.0, every: float = 0.5, rate: int = 22050) -> Path:
    """A click track: a short 1 kHz ping every `every` seconds (from every / 2) over a quiet noise floor."""
    rng = np.random.default_rng(0)
    y = 0.01 * rng.standard_normal(int(rate * seconds))
    n = int(0.03 * rate)
    ping = 0.8 * np.sin(2 * np.pi * 1000 * np.arange(n) / rate) * np.exp(-np.arange(n) / (0.008 * rate))
    for t in np.arange(every / 2, seconds - 0.05, every):
        i = int(t * rate)
        y[i:i + n] += ping[:len(y) - i]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(y, -1, 1) * 32767).astype("<i2").tobytes())
    return path
