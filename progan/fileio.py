"""Atomic file writes: a crash or kill mid-write never leaves a half-written file under the final name."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename durable (the directory entry itself must reach the disk)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_json(path: str | os.PathLike, obj, indent: int | None = 2) -> None:
    """indent None: one line, for the many small records a benchmark keeps in the repository."""
    separators = (",", ":") if indent is None else None
    atomic_write_bytes(path, (json.dumps(obj, indent=indent, sort_keys=True, separators=separators) + "\n").encode())


def atomic_save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
                        metadata: dict[str, str] | None = None) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write_bytes(path, safetensors_bytes(tensors, metadata=metadata))


def update_hash(h, path: str | os.PathLike, chunk_bytes: int = 1 << 22):
    """Feed a file's bytes into a hashlib object, a chunk at a time (files larger than memory are fine)."""
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            h.update(block)
    return h


def sha256_file(path: str | os.PathLike) -> str:
    return update_hash(hashlib.sha256(), path).hexdigest()


class UnreadableTensors(ValueError):
    """A safetensors file that is missing, truncated or not safetensors at all."""


def read_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors, or UnreadableTensors naming the file and what is wrong (never a pickle)."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise UnreadableTensors(f"{path} is not a readable safetensors file: {e}") from None


def read_json(path: str | os.PathLike, what: str = "file") -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{what} {path} is not valid JSON: {e}") from None


def append_jsonl(path: str | os.PathLike, obj) -> None:
    """Append one JSON line and make it durable: a crash loses at most the line being written."""
    with open(path, "a") as f:
        f.write(json.dumps(obj) + "\n")
        f.flush()
        os.fsync(f.fileno())


def trim_jsonl(path: str | os.PathLike, keep) -> int:
    """Rewrite a JSONL file atomically with only the lines for which keep(record) is true; a torn or unreadable
    line (a kill in the middle of a write) is dropped too. Returns the number of lines dropped."""
    path = Path(path)
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            ok = keep(json.loads(line))
        except (json.JSONDecodeError, TypeError, KeyError):
            ok = False
        if ok:
            kept.append(line + "\n")
        else:
            dropped += 1
    if dropped:
        atomic_write_bytes(path, "".join(kept).encode())
    return dropped
