"""Reading a prepared dataset and the training data order.

A prepared dataset is a folder with manifest.json and one uint8 array per resolution level
(level_0004.npy ... level_R.npy, each [N, 3, r, r], RGB), memory-mapped so a dataset larger than
RAM costs nothing to open. Besides the images it may carry, per image: a class label (label_names in the
manifest), a caption and the caption's vector from a text encoder (caption_embeddings.npy, float32 [N, D], unit
rows, zero rows for images without a caption; the manifest's text_encoder names the encoder), and any named
columns its builder adds (the built-in emoji's groups, subgroups, descriptions, variant_of): `dataset.column(name)`.
The data order is a pure function of (stream position, seed), which is what makes resume exact and lets DDP ranks
take disjoint shards without talking to each other.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from progan.config import ConfigError, check_resolution, resolutions_up_to
from progan.fileio import sha256_file
from progan.seeds import counter_bits, generator

FORMAT = "progan-dataset/1"
MANIFEST = "manifest.json"
REPORT = "report.json"
CAPTION_EMBEDDINGS = "caption_embeddings.npy"
CAPTION_VARIANTS = "caption_variants.npy"  # the vectors of the "caption_variants" column's texts, image after image
# The manifest's own fields; every other per-image list in it is a named column.
MANIFEST_KEYS = {"format", "resolution", "count", "levels", "sha256", "captions", "labels", "label_names",
                 "text_encoder", "source", "crop", "background", "skipped", "columns"}


class DatasetError(ValueError):
    """A dataset (or its source) is unusable; the message names the file and the problem."""


def level_filename(res: int) -> str:
    return f"level_{res:04d}.npy"


def _captions(manifest: dict, count: int, manifest_path: Path) -> list | None:
    values = manifest.get("captions")
    if values is not None and (
        not isinstance(values, list)
        or len(values) != count
        or any(v is not None and not isinstance(v, str) for v in values)
    ):
        raise DatasetError(f"{manifest_path}: captions must be a list of {count} strings or null")
    return values


def _columns(manifest: dict, count: int, manifest_path: Path) -> dict[str, list]:
    """The named per-image columns: those the manifest lists, or (datasets written before it listed them) every
    per-image list that is not one of its own fields."""
    names = manifest.get("columns")
    if names is None:
        names = [k for k, v in manifest.items() if k not in MANIFEST_KEYS and isinstance(v, list) and len(v) == count]
    columns = {}
    for name in names:
        values = manifest.get(name)
        if not isinstance(values, list) or len(values) != count:
            raise DatasetError(f"{manifest_path}: column {name!r} must be a list of {count} values")
        columns[name] = values
    return columns


class PreparedDataset:
    """A prepared dataset folder. Arrays are opened lazily as read-only memmaps and cached."""

    def __init__(self, path, verify: bool = False):
        self.path = Path(path)
        if not self.path.is_dir():
            raise FileNotFoundError(f"dataset folder {self.path} does not exist (prepare one with `progan dataset`)")
        manifest_path = self.path / MANIFEST
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{manifest_path} not found: {self.path} is not a prepared progan dataset")
        try:
            m = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DatasetError(f"{manifest_path} is not valid JSON ({e}); re-prepare the dataset") from e
        if not isinstance(m, dict) or m.get("format") != FORMAT:
            got = m.get("format") if isinstance(m, dict) else type(m).__name__
            raise DatasetError(f"{manifest_path}: expected format {FORMAT!r}, got {got!r}")
        self.manifest = m
        try:
            self.resolution = check_resolution(m["resolution"])
        except (KeyError, ConfigError) as e:
            raise DatasetError(f"{manifest_path}: bad or missing resolution ({e})") from e
        try:
            self.count = int(m["count"])
            levels = {int(k): str(v) for k, v in m["levels"].items()}
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise DatasetError(f"{manifest_path}: missing or malformed field ({e})") from e
        if self.count <= 0:
            raise DatasetError(f"{manifest_path}: count must be positive, got {self.count}")
        if sorted(levels) != resolutions_up_to(self.resolution):
            raise DatasetError(
                f"{manifest_path}: levels {sorted(levels)} should be {resolutions_up_to(self.resolution)}"
            )
        for name in levels.values():
            if os.path.basename(name) != name:
                raise DatasetError(f"{manifest_path}: level file name {name!r} must be a plain file name")
        self._files = levels

        self.captions = _captions(m, self.count, manifest_path)  # what a person reads and the encoder read
        self.columns = _columns(m, self.count, manifest_path)

        self.label_names = m.get("label_names")
        self.labels = None  # LongTensor [N] of class indices, or None
        labels = m.get("labels")
        if labels is not None:
            if not isinstance(labels, list) or len(labels) != self.count:
                raise DatasetError(f"{manifest_path}: labels must be a list of {self.count} ints or null")
            if not isinstance(self.label_names, list) or not self.label_names:
                raise DatasetError(f"{manifest_path}: labels are present but label_names is missing")
            n = len(self.label_names)
            if any(not isinstance(y, int) or isinstance(y, bool) or not 0 <= y < n for y in labels):
                raise DatasetError(f"{manifest_path}: labels must be ints in [0, {n})")
            self.labels = torch.tensor(labels, dtype=torch.long)
        self.num_classes = len(self.label_names) if self.labels is not None else 0

        self.text_encoder = m.get("text_encoder")  # {"name", "dimension", "sha256", "file", "encoded"} or None
        self.caption_embeddings = None  # float32 [N, D] or None
        # Other ways to say each caption: the "caption_variants" column (a list of texts per image) and their
        # vectors, float32 [M, D], M the total number of texts, image after image; or None.
        self.variant_embeddings = None
        if self.text_encoder is not None:
            self.caption_embeddings = self._load_embeddings(manifest_path)
            self.variant_embeddings = self._load_variants(manifest_path)

        self._arrays: dict[int, np.ndarray] = {}
        for res in resolutions_up_to(self.resolution):
            self.level(res)  # opens and checks every level now, so errors surface at load time
        if verify:
            self.verify()

    def _load_embeddings(self, manifest_path: Path) -> torch.Tensor:
        info = self.text_encoder
        try:
            dim, name = int(info["dimension"]), str(info["file"])
        except (KeyError, TypeError, ValueError) as e:
            raise DatasetError(f"{manifest_path}: malformed text_encoder ({e})") from e
        return self._load_vectors(manifest_path, name, (self.count, dim))

    def _load_vectors(self, manifest_path: Path, name: str, shape: tuple[int, int]) -> torch.Tensor:
        """A float32 array of unit (or zero) rows of this shape, named by the manifest."""
        if os.path.basename(name) != name:
            raise DatasetError(f"{manifest_path}: caption embedding file name {name!r} must be a plain file name")
        file = self.path / name
        if not file.is_file():
            raise FileNotFoundError(f"{file} is missing from dataset {self.path} (the manifest names it)")
        try:
            arr = np.load(file, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise DatasetError(f"{file} is not a readable .npy array ({e})") from e
        if arr.dtype != np.float32 or arr.shape != shape:
            raise DatasetError(f"{file}: expected float32 array of shape {shape}, got {arr.dtype} {arr.shape}")
        norms = np.linalg.norm(arr, axis=1)
        if not np.isfinite(arr).all() or not ((np.abs(norms - 1) < 1e-3) | (norms == 0)).all():
            raise DatasetError(f"{file}: rows must be unit vectors (or zero for images without a caption)")
        return torch.from_numpy(arr)

    def _load_variants(self, manifest_path: Path) -> torch.Tensor | None:
        name, variants = self.text_encoder.get("variants_file"), self.column("caption_variants")
        if name is None:
            return None
        if variants is None or any(not isinstance(v, list) for v in variants):
            raise DatasetError(f"{manifest_path}: {name} needs the caption_variants column, a list of texts per image")
        rows = sum(len(v) for v in variants)
        return self._load_vectors(manifest_path, name, (rows, int(self.text_encoder["dimension"])))

    def __len__(self) -> int:
        return self.count

    def column(self, name: str) -> list | None:
        """A named per-image column (e.g. the built-in emoji's "groups"), or None when the dataset has none."""
        return self.columns.get(name)

    def __repr__(self) -> str:
        return f"PreparedDataset({str(self.path)!r}, resolution={self.resolution}, count={self.count})"

    def verify(self) -> None:
        """Check every level file against the sha256 recorded in the manifest."""
        sums = self.manifest.get("sha256") or {}
        names = [name for _, name in sorted(self._files.items())]
        if self.text_encoder is not None:
            names += [n for n in (self.text_encoder["file"], self.text_encoder.get("variants_file")) if n]
        for name in names:
            want = sums.get(name)
            if want is None:
                raise DatasetError(f"{self.path / MANIFEST}: no sha256 recorded for {name}")
            got = sha256_file(self.path / name)
            if got != want:
                raise DatasetError(f"{self.path / name}: sha256 mismatch (file is corrupt or was modified)")

    def level(self, res: int) -> np.ndarray:
        """The [N, 3, res, res] uint8 memmap of one level."""
        if res in self._arrays:
            return self._arrays[res]
        if res not in self._files:
            raise DatasetError(f"{self.path}: no level {res}; available: {sorted(self._files)}")
        file = self.path / self._files[res]
        if not file.is_file():
            raise FileNotFoundError(f"{file} is missing from dataset {self.path}")
        try:
            arr = np.load(file, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise DatasetError(f"{file} is not a readable .npy array ({e})") from e
        want = (self.count, 3, res, res)
        if arr.dtype != np.uint8 or arr.shape != want:
            raise DatasetError(f"{file}: expected uint8 array of shape {want}, got {arr.dtype} {arr.shape}")
        self._arrays[res] = arr
        return arr

    def images(self, res: int, indices) -> torch.Tensor:
        """uint8 [B, 3, res, res] for the given image indices (any order, repeats allowed)."""
        idx = torch.as_tensor(indices).to("cpu", torch.int64).reshape(-1).numpy()
        if idx.size and (idx.min() < 0 or idx.max() >= self.count):
            raise IndexError(f"image index out of range [0, {self.count}): {idx.min()}..{idx.max()}")
        # Reading sorted unique rows keeps memmap access sequential; `inverse` restores the order.
        uniq, inverse = np.unique(idx, return_inverse=True)
        rows = self.level(res)[uniq]
        return torch.from_numpy(np.ascontiguousarray(rows[inverse]))


# ---------------------------------------------------------------------------------------------
# Data order: an infinite stream of epochs, each a seeded permutation. Position p of the stream is
# image epoch_perm(p // N)[p % N]. Everything below is a pure function of (position, seed).


@functools.lru_cache(maxsize=4)
def _epoch_permutation(num_images: int, seed: int, epoch: int) -> torch.Tensor:
    # Memoised only for speed (a step asks for a few dozen positions of a possibly huge permutation);
    # callers never see this tensor itself, only copies.
    return torch.randperm(num_images, generator=generator(seed, "data-order", epoch))


def stream_indices(cursor: int, count: int, num_images: int, seed: int) -> torch.Tensor:
    """Image indices at stream positions cursor .. cursor+count-1 (may span epochs). LongTensor [count]."""
    if num_images <= 0:
        raise ValueError(f"num_images must be positive, got {num_images}")
    if cursor < 0 or count < 0:
        raise ValueError(f"cursor and count must be >= 0, got cursor={cursor}, count={count}")
    parts = []
    pos, end = int(cursor), int(cursor) + int(count)
    while pos < end:
        epoch, offset = divmod(pos, num_images)
        take = min(end - pos, num_images - offset)
        parts.append(_epoch_permutation(int(num_images), int(seed), epoch)[offset : offset + take].clone())
        pos += take
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.int64)


def rank_batch_indices(cursor: int, local_batch: int, rank: int, num_images: int, seed: int) -> torch.Tensor:
    """This rank's share of the global batch starting at stream position `cursor`.

    Rank r takes positions cursor + r*local_batch ... + local_batch - 1; the caller advances the
    cursor by local_batch * world_size per step, so ranks never overlap and together see exactly
    the single-process order.
    """
    if rank < 0:
        raise ValueError(f"rank must be >= 0, got {rank}")
    return stream_indices(cursor + rank * local_batch, local_batch, num_images, seed)


def mirror_flags(cursor: int, count: int, seed: int) -> torch.Tensor:
    """Horizontal-flip flags for stream positions cursor .. cursor+count-1. BoolTensor [count].

    Each flag depends only on (seed, position), so any split of the stream (resume, DDP ranks)
    gets the same flags.
    """
    if cursor < 0 or count < 0:
        raise ValueError(f"cursor and count must be >= 0, got cursor={cursor}, count={count}")
    bits = counter_bits(seed, np.arange(cursor, cursor + count, dtype=np.uint64)) >> np.uint64(63)
    return torch.from_numpy(bits.astype(np.bool_))


def mirror(images: torch.Tensor, flags: torch.Tensor) -> torch.Tensor:
    """Flip images [B, C, H, W] horizontally where flags [B] is True."""
    flags = flags.to(images.device).view(-1, 1, 1, 1)
    return torch.where(flags, images.flip(-1), images)


# ---------------------------------------------------------------------------------------------
# Pixel conventions shared by training, generation and metrics.


def to_float(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return images.to(dtype) / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255], rounded and clamped (exact inverse of to_float)."""
    return ((images.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


def blend_reals(x: torch.Tensor, alpha) -> torch.Tensor:
    """The paper's fade-in for real images: lerp(nearest_up2x(avgpool2x2(x)), x, alpha).

    During a fade D must not see reals sharper than G can make; alpha=1 returns x itself.
    """
    if not torch.is_tensor(alpha) and float(alpha) >= 1.0:
        return x
    low = F.avg_pool2d(x, 2)
    up = F.interpolate(low, scale_factor=2, mode="nearest")
    return torch.lerp(up, x, torch.as_tensor(alpha, dtype=x.dtype, device=x.device))
