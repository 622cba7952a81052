"""Folder or zip of images -> prepared dataset (see dataset.py for the format).

Bad files never stop a conversion: each is skipped with a reason and listed in report.json.
Arrays are written in chunks straight into .npy memmaps, so datasets larger than RAM work, and
everything is written into a temp folder beside the target that is renamed into place at the end.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import sys
import threading
import warnings
import zipfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from progan.config import check_resolution, resolutions_up_to
from progan.data.dataset import (
    CAPTION_EMBEDDINGS,
    CAPTION_VARIANTS,
    FORMAT,
    MANIFEST,
    MANIFEST_KEYS,
    REPORT,
    DatasetError,
    level_filename,
)
from progan.fileio import sha256_file
from progan.data.images import (
    CROPS,
    DEFAULT_MAX_PIXELS,
    UnusableImage,
    load_square,
    pixel_limit,
)

# The manifest's own fields; DatasetWriter.finish(columns=...) may add others but not replace these.
CHUNK_BYTES = 64 << 20  # images buffered per write; bounds memory at any resolution
MAX_ZIP_MEMBER_BYTES = 1 << 30  # zip members are read into memory; refuse absurd ones


def downsample_box(x: np.ndarray) -> np.ndarray:
    """uint8 [..., h, w] -> uint8 [..., h/2, w/2]: 2x2 box average, rounded half up."""
    x = x.astype(np.uint16)
    s = x[..., 0::2, 0::2] + x[..., 0::2, 1::2] + x[..., 1::2, 0::2] + x[..., 1::2, 1::2]
    return ((s + 2) // 4).astype(np.uint8)


def check_background(background) -> tuple[int, int, int]:
    try:
        rgb = tuple(int(c) for c in background)
    except (TypeError, ValueError):
        rgb = ()
    if len(rgb) != 3 or any(not 0 <= c <= 255 for c in rgb):
        raise DatasetError(f"background must be three ints in [0, 255], got {background!r}")
    return rgb


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def _check_target(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() or out_dir.is_symlink():
        if not out_dir.is_dir():
            raise DatasetError(f"output {out_dir} exists and is not a folder")
        if any(out_dir.iterdir()) and not overwrite:
            raise DatasetError(f"output folder {out_dir} is not empty; pass overwrite=True to replace it")


def _make_temp_dir(target: Path, tag: str) -> Path:
    # Not tempfile.mkdtemp: its 0700 mode would stick to the finished dataset folder.
    while True:
        path = target.with_name(f".{target.name}.{tag}-{secrets.token_hex(4)}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def _shrink_npy(path: Path, count: int, in_place: bool = True) -> None:
    """Cut a C-ordered .npy array down to its first `count` rows (axis 0)."""
    arr = np.load(path, mmap_mode="r")
    shape, dtype, offset = (count,) + arr.shape[1:], arr.dtype, arr.offset
    del arr
    header = io.BytesIO()
    d = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(header, d)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    if in_place and len(header.getvalue()) == offset:
        # numpy pads headers so the first dimension can grow or shrink without moving the data.
        with open(path, "r+b") as f:
            f.write(header.getvalue())
            f.truncate(offset + nbytes)
        return
    src = np.load(path, mmap_mode="r")
    tmp = path.with_name(path.name + ".shrink")
    dst = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
    step = max(1, CHUNK_BYTES // max(1, nbytes // max(1, count)))
    for i in range(0, count, step):
        j = min(i + step, count)
        dst[i:j] = src[i:j]
    dst.flush()
    del src, dst
    os.replace(tmp, path)


class DatasetWriter:
    """Streams RGB images into a new prepared dataset; used by prepare_dataset and the emoji builder.

        with DatasetWriter(out_dir, 64, capacity=len(files)) as w:
            w.add(hwc_uint8, caption="...")   # or w.skip(name, reason)
            manifest = w.finish(source="...")

    Leaving the block without finish() (or with an exception) removes the temp folder.
    """

    def __init__(self, out_dir, resolution: int, capacity: int, *, overwrite: bool = False):
        self.resolution = check_resolution(resolution)
        self.out_dir = Path(out_dir)
        self.overwrite = overwrite
        if capacity <= 0:
            raise DatasetError(f"capacity must be positive, got {capacity}")
        self.capacity = int(capacity)
        _check_target(self.out_dir, overwrite)
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = _make_temp_dir(self.out_dir, "tmp")
        self.count = 0
        self.captions: list[str | None] = []
        self.labels: list[int | None] = []
        self.skipped: list[dict] = []
        self.arrays = {
            r: np.lib.format.open_memmap(
                self.tmp / level_filename(r), mode="w+", dtype=np.uint8, shape=(self.capacity, 3, r, r)
            )
            for r in resolutions_up_to(self.resolution)
        }
        chunk = max(1, min(self.capacity, CHUNK_BYTES // (3 * self.resolution**2)))
        self.buffer = np.empty((chunk, 3, self.resolution, self.resolution), np.uint8)
        self.buffered = 0
        self.done = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if not self.done:
            self.abort()
        return False

    def abort(self) -> None:
        self.arrays = {}
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.done = True

    @property
    def written(self) -> int:
        return self.count + self.buffered

    def add(self, image, caption: str | None = None, label: int | None = None) -> None:
        """Add one RGB image: uint8 [R, R, 3] array (or anything np.asarray turns into one)."""
        arr = np.asarray(image, dtype=np.uint8)
        want = (self.resolution, self.resolution, 3)
        if arr.shape != want:
            raise ValueError(f"image must have shape {want}, got {arr.shape}")
        if self.written >= self.capacity:
            raise ValueError(f"dataset writer is full ({self.capacity} images)")
        self.buffer[self.buffered] = arr.transpose(2, 0, 1)
        self.buffered += 1
        self.captions.append(caption)
        self.labels.append(label)
        if self.buffered == len(self.buffer):
            self._flush()

    def skip(self, name: str, reason: str) -> None:
        self.skipped.append({"file": name, "reason": reason})

    def _flush(self) -> None:
        if not self.buffered:
            return
        x, lo, hi = self.buffer[: self.buffered], self.count, self.count + self.buffered
        for r in sorted(self.arrays, reverse=True):
            if r < self.resolution:
                x = downsample_box(x)
            self.arrays[r][lo:hi] = x
        self.count, self.buffered = hi, 0

    def finish(
        self,
        *,
        source: str,
        crop: str = "center",
        background=(255, 255, 255),
        label_names: list[str] | None = None,
        columns: dict[str, list] | None = None,
        text_encoder=None,
        encode: str = "captions",
        extra_report: dict | None = None,
    ) -> dict:
        """Write manifest + report (+ caption embeddings), move the dataset into place, return the manifest.

        columns: more per-image fields for the manifest, each a list with one entry per image added
        (the emoji builder's descriptions, groups, subgroups). text_encoder: None (default) never encodes;
        "auto" (what prepare_dataset and the emoji builder default to) encodes the captions when the default
        encoder is installed, and otherwise warns and notes why not in the report; a name, model folder or
        progan.conditioning.encoder.TextEncoder must load. encode: "captions" or
        the name of a column holding the text to encode instead (images without a caption get a zero vector).
        """
        self._flush()
        if self.count == 0:
            reasons = Counter(s["reason"].split(":")[0] for s in self.skipped)
            summary = ", ".join(f"{n} {r}" for r, n in reasons.most_common(5)) or "no candidate files"
            self.abort()
            raise DatasetError(f"no usable images in {source}: all {len(self.skipped)} files were skipped ({summary})")
        columns = dict(columns or {})
        for key, values in columns.items():
            if key in MANIFEST_KEYS or len(values) != self.count:
                raise ValueError(f"column {key!r} must be a new field with one value per image ({self.count})")
        levels, sums = {}, {}
        for arr in self.arrays.values():
            arr.flush()
        self.arrays = {}  # drop the memmaps before resizing their files
        for r in resolutions_up_to(self.resolution):
            name = level_filename(r)
            path = self.tmp / name
            if self.count < self.capacity:
                _shrink_npy(path, self.count)
            _fsync_path(path)
            levels[str(r)] = name
            sums[name] = sha256_file(path)

        has_captions = any(c for c in self.captions)
        captions = [c or "" for c in self.captions] if has_captions else None
        encoder_info, embedding_note = None, "no captions"
        if has_captions:
            encoder_info, embedding_note = self._embed(captions, columns, text_encoder, encode)
            if encoder_info is not None:
                for name in (CAPTION_EMBEDDINGS, encoder_info.get("variants_file")):
                    if name:
                        sums[name] = sha256_file(self.tmp / name)
        labels = None
        if label_names is not None:
            labels = [int(y) for y in self.labels]
            counts = Counter(labels)
            extra_report = {**(extra_report or {}), "label_counts": {n: counts[i] for i, n in enumerate(label_names)}}
        manifest = {
            "format": FORMAT,
            "resolution": self.resolution,
            "count": self.count,
            "levels": levels,
            "sha256": sums,
            "captions": captions,
            "labels": labels,
            "label_names": list(label_names) if label_names is not None else None,
            "text_encoder": encoder_info,
            **columns,
            "columns": sorted(columns),
            "source": str(source),
            "crop": crop,
            "background": list(background),
            "skipped": len(self.skipped),
        }
        report = {
            "source": str(source),
            "written": self.count,
            "skipped_count": len(self.skipped),
            "skipped_by_reason": dict(Counter(s["reason"].split(":")[0] for s in self.skipped).most_common()),
            "caption_embeddings": embedding_note,
            **(extra_report or {}),
            "skipped": self.skipped,
        }
        _write_json(self.tmp / REPORT, report)
        _write_json(self.tmp / MANIFEST, manifest)
        _fsync_path(self.tmp)
        self._move_into_place()
        self.done = True
        return manifest

    def _embed(self, captions, columns, text_encoder, encode) -> tuple[dict | None, str]:
        """Write caption_embeddings.npy (float32 [N, D], unit rows) into the temp folder; (encoder info, note)."""
        from progan.conditioning.encoder import resolve_text_encoder

        if encode != "captions" and encode not in columns:
            raise ValueError(f"encode must be 'captions' or a column name, got {encode!r}")
        encoder, note = resolve_text_encoder(text_encoder)
        if encoder is None:
            if text_encoder == "auto":
                warnings.warn(f"dataset without caption embeddings: {note}", stacklevel=3)
            return None, note
        texts = captions if encode == "captions" else [t or "" for t in columns[encode]]
        has = [bool(c) for c in captions]
        vectors = np.zeros((self.count, encoder.dimension), np.float32)
        todo = [i for i in range(self.count) if has[i]]
        vectors[todo] = encoder.encode([texts[i] for i in todo]).numpy()
        _save_npy(self.tmp / CAPTION_EMBEDDINGS, vectors)
        info = {**encoder.info(), "file": CAPTION_EMBEDDINGS, "encoded": encode}
        if "caption_variants" in columns:
            _save_npy(self.tmp / CAPTION_VARIANTS, encode_variants(encoder, columns["caption_variants"]))
            info["variants_file"] = CAPTION_VARIANTS
        return info, f"{note} ({encode})"

    def _move_into_place(self) -> None:
        target = self.out_dir
        _check_target(target, self.overwrite)  # again: something may have appeared meanwhile
        old = None
        if target.is_dir():
            if any(target.iterdir()):
                old = _make_temp_dir(target, "old")
                os.replace(target, old / "data")
            else:
                target.rmdir()
        os.replace(self.tmp, target)
        _fsync_path(target.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def encode_variants(encoder, variants: list[list[str]]) -> np.ndarray:
    """float32 [M, D]: the vectors of every image's caption variants, image after image (each distinct text encoded
    once: many images share a keyword or a group name)."""
    for i, texts in enumerate(variants):
        if not isinstance(texts, list) or not all(isinstance(t, str) and t for t in texts):
            raise ValueError(f"caption_variants of image {i} must be a list of non-empty strings, got {texts!r}")
    distinct = sorted({t for texts in variants for t in texts})
    vectors = encoder.encode(distinct).numpy() if distinct else np.zeros((0, encoder.dimension), np.float32)
    row = {t: i for i, t in enumerate(distinct)}
    flat = [row[t] for texts in variants for t in texts]
    return np.ascontiguousarray(vectors[flat], dtype=np.float32).reshape(len(flat), encoder.dimension)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


class _CopiedVectors:
    """Stands in for a sentence-transformers model in DatasetWriter.finish: answers its requests from the source
    dataset instead of encoding again (the rows stay bit for bit the same, and no encoder needs to be installed).
    The writer asks for the captions of the subset's captioned images, in order (given their very rows), and for
    the distinct caption variants (each text has one vector in a dataset)."""

    def __init__(self, caption_texts: list[str], caption_vectors: np.ndarray, variants: dict[str, np.ndarray]):
        self.caption_texts, self.caption_vectors, self.variants = caption_texts, caption_vectors, variants

    def encode(self, texts, **_):
        texts = list(texts)
        if texts == self.caption_texts:
            return torch.from_numpy(self.caption_vectors)
        missing = [t for t in texts if t not in self.variants]
        if missing:
            raise RuntimeError(f"write_subset: the writer asked for texts the source has no vector of: {missing[:3]}")
        return torch.from_numpy(np.stack([self.variants[t] for t in texts]))


def write_subset(dataset, indices, out_dir, *, overwrite: bool = False) -> dict:
    """A new prepared dataset of `dataset`'s images `indices`, in that order: images, captions, labels, the named
    columns and the caption vectors (copied row for row, under the same encoder record). Returns its manifest.

    A held-out split: train on write_subset(ds, kept, "data/x-train") and the held-out images are not in it.
    """
    from progan.conditioning.encoder import TextEncoder

    idx = [int(i) for i in np.asarray(indices, dtype=np.int64).reshape(-1)]
    if not idx:
        raise DatasetError("a subset needs at least one image")
    if min(idx) < 0 or max(idx) >= dataset.count:
        raise DatasetError(f"subset indices must be in [0, {dataset.count}), got {min(idx)}..{max(idx)}")
    m, res = dataset.manifest, dataset.resolution
    captions = dataset.captions
    labels = dataset.labels.tolist() if dataset.labels is not None else None
    encoder = None
    if dataset.text_encoder is not None:
        info = dataset.text_encoder
        encoded = info.get("encoded", "captions")
        # The writer encodes the images with a caption, from the captions or from the column the source encoded.
        with_caption = [i for i in idx if captions[i]]
        texts = captions if encoded == "captions" else [t or "" for t in dataset.column(encoded)]
        vectors = dataset.caption_embeddings.numpy()[with_caption]
        variants = {}
        if dataset.variant_embeddings is not None:
            flat = [t for texts_of_one in dataset.column("caption_variants") for t in texts_of_one]
            for text, row in zip(flat, dataset.variant_embeddings.numpy()):
                variants.setdefault(text, row)
        model = _CopiedVectors([texts[i] for i in with_caption], vectors, variants)
        encoder = TextEncoder(name=info["name"], folder=str(info.get("folder", "")), dimension=int(info["dimension"]),
                              sha256=info["sha256"], model=model)
    step = max(1, CHUNK_BYTES // (3 * res * res))
    with DatasetWriter(out_dir, res, len(idx), overwrite=overwrite) as writer:
        for start in range(0, len(idx), step):
            part = idx[start : start + step]
            for i, image in zip(part, dataset.images(res, part).permute(0, 2, 3, 1).numpy()):
                writer.add(image, caption=captions[i] if captions is not None else None,
                           label=labels[i] if labels is not None else None)
        return writer.finish(
            source=f"{len(idx)} of the {dataset.count} images of {dataset.path} ({m.get('source', '')})",
            crop=m.get("crop", "center"),
            background=m.get("background", (255, 255, 255)),
            label_names=dataset.label_names if labels is not None else None,
            columns={name: [values[i] for i in idx] for name, values in dataset.columns.items()},
            text_encoder=encoder,
            encode=dataset.text_encoder.get("encoded", "captions") if encoder is not None else "captions",
        )


# ---------------------------------------------------------------------------------------------
# Sources: a folder (recursive) or a zip file, as a sorted list of entries.


@dataclass
class _Entry:
    name: str  # path relative to the source, POSIX separators: what the report shows
    open: Callable[[], object]  # -> path or binary file object for Pillow
    caption: Callable[[], str | None]  # the sidecar .txt, read only when the image is kept
    label: int | None = None  # class index (labels_from_folders), set by _label_entries


def _folder_entries(root: Path) -> list[_Entry]:
    rels, unlistable = [], []
    # followlinks=False: symlinked folders can loop. Folders we cannot list become report entries.
    for dirpath, _, filenames in os.walk(root, onerror=unlistable.append):
        for fn in filenames:
            rels.append(PurePosixPath(Path(dirpath, fn).relative_to(root).as_posix()))
    entries = _entries(
        rels,
        opener=lambda rel: (lambda: str(root / rel)),
        reader=lambda rel: (lambda: (root / rel).read_bytes()),
    )
    for err in unlistable:
        name = Path(err.filename).relative_to(root).as_posix() + "/" if err.filename else str(root)

        def fail(err=err):
            raise UnusableImage(f"cannot list folder: {err.strerror or err}")

        entries.append(_Entry(name, fail, lambda: None))
    return entries


def _entries(rels, opener, reader) -> list[_Entry]:
    """Sorted entries; `x.txt` beside an image `x.*` is that image's caption, not an entry."""
    rels = sorted(rels, key=str)
    is_txt = {rel: rel.suffix.lower() == ".txt" for rel in rels}
    image_stems = {rel.with_suffix("") for rel in rels if not is_txt[rel]}
    sidecars = {rel.with_suffix(""): rel for rel in rels if is_txt[rel] and rel.with_suffix("") in image_stems}
    out = []
    for rel in rels:
        if is_txt[rel]:
            if rel.with_suffix("") in image_stems:
                continue  # read together with its image
            caption = lambda: None  # noqa: E731
        elif rel.with_suffix("") in sidecars:
            side = sidecars[rel.with_suffix("")]
            caption = lambda side=side: _read_caption(reader(side))  # noqa: E731
        else:
            caption = lambda: None  # noqa: E731
        out.append(_Entry(str(rel), opener(rel), caption))
    return out


def _read_caption(read: Callable[[], bytes]) -> str | None:
    try:
        return read().decode("utf-8", errors="replace").strip()
    except (OSError, UnusableImage):
        return None


class _ZipSource:
    def __init__(self, path: Path):
        try:
            self.zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as e:
            raise DatasetError(f"{path} is not a readable zip file ({e})") from e
        self.lock = threading.Lock()  # one ZipFile shared by decoding threads
        self.infos = {i.filename: i for i in self.zf.infolist() if not i.is_dir()}
        names = [PurePosixPath(n) for n in self.infos]
        # Zips often wrap everything in one top folder; class folders are the level below it.
        tops = {n.parts[0] for n in names if len(n.parts) > 1}
        self.strip = len(tops) == 1 and all(len(n.parts) > 1 for n in names) and len(names) > 0
        self.rel_to_name = {
            (PurePosixPath(*n.parts[1:]) if self.strip else n): str(n) for n in names
        }

    def read(self, rel: PurePosixPath) -> bytes:
        info = self.infos[self.rel_to_name[rel]]
        if info.flag_bits & 0x1:
            raise UnusableImage("encrypted zip member")
        if info.file_size > MAX_ZIP_MEMBER_BYTES:
            raise UnusableImage(f"zip member too large ({info.file_size} bytes)")
        try:
            with self.lock:
                return self.zf.read(info)
        except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError, EOFError) as e:
            raise UnusableImage(f"cannot read zip member: {type(e).__name__}: {e}") from e

    def entries(self) -> list[_Entry]:
        return _entries(
            list(self.rel_to_name),
            opener=lambda rel: (lambda: io.BytesIO(self.read(rel))),
            reader=lambda rel: (lambda: self.read(rel)),
        )

    def close(self):
        self.zf.close()


def _decode(entry: _Entry, **kw) -> np.ndarray | str:
    """Runs in a worker thread: an image array, or the reason the file is unusable."""
    try:
        return load_square(entry.open(), **kw)
    except UnusableImage as e:
        return str(e)


def prepare_dataset(
    source,
    out_dir,
    resolution: int,
    *,
    crop: str = "center",
    upscale: bool = False,
    background=(255, 255, 255),
    labels_from_folders: bool = False,
    text_encoder="auto",
    overwrite: bool = False,
    max_images: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    workers: int | None = None,
    progress: bool | None = None,
) -> dict:
    """Convert a folder (searched recursively, sorted) or a .zip of images into a prepared dataset.

    crop: "center" (central square) or "pad" (letterbox onto `background`). Images whose square is
    smaller than `resolution` are skipped unless upscale=True. Transparent images are composited
    onto `background`. labels_from_folders: the first folder level names the class (manifest labels and
    label_names). A sidecar `name.txt` beside `name.png` becomes that image's caption; text_encoder
    says whether the captions are encoded (see DatasetWriter.finish). Returns the manifest.
    """
    resolution = check_resolution(resolution)
    if crop not in CROPS:
        raise DatasetError(f"crop must be one of {CROPS}, got {crop!r}")
    background = check_background(background)
    if max_images is not None and (not isinstance(max_images, int) or max_images <= 0):
        raise DatasetError(f"max_images must be a positive int or None, got {max_images!r}")
    source, out_dir = Path(source), Path(out_dir)
    if not source.exists():
        raise FileNotFoundError(f"dataset source {source} does not exist")
    if out_dir.resolve() == source.resolve() or out_dir.resolve() in source.resolve().parents:
        raise DatasetError(f"output {out_dir} would contain the source {source}; choose another folder")
    _check_target(out_dir, overwrite)

    zsrc = None
    if source.is_dir():
        entries = _folder_entries(source)
    elif zipfile.is_zipfile(source):
        zsrc = _ZipSource(source)
        entries = zsrc.entries()
    else:
        raise DatasetError(f"dataset source {source} must be a folder or a .zip file")
    try:
        if not entries:
            raise DatasetError(f"dataset source {source} contains no files")
        label_names, outside = None, []
        if labels_from_folders:
            entries, outside, label_names = _label_entries(entries, source)
        capacity = len(entries) if max_images is None else min(len(entries), max_images)
        kw = dict(resolution=resolution, crop=crop, background=background, upscale=upscale, max_pixels=max_pixels)
        workers = workers or min(8, os.cpu_count() or 1)
        if progress is None:
            progress = sys.stderr.isatty()
        with (
            pixel_limit(max_pixels),
            ThreadPoolExecutor(workers) as pool,
            DatasetWriter(out_dir, resolution, capacity, overwrite=overwrite) as writer,
            tqdm(total=len(entries), unit="img", desc="prepare", disable=not progress) as bar,
        ):
            for entry in outside:
                writer.skip(entry.name, "not inside a class folder (labels_from_folders=True)")
            batch = max(16, 4 * workers)
            for start in range(0, len(entries), batch):
                chunk = entries[start : start + batch]
                for entry, result in zip(chunk, pool.map(lambda e: _decode(e, **kw), chunk)):
                    if isinstance(result, str):
                        writer.skip(entry.name, result)
                    elif writer.written < capacity:
                        writer.add(result, caption=entry.caption(), label=entry.label)
                bar.update(len(chunk))
                if writer.written >= capacity:
                    break
            return writer.finish(
                source=str(source),
                crop=crop,
                background=background,
                label_names=label_names,
                text_encoder=text_encoder,
                extra_report={"candidates": len(entries) + len(outside), "resolution": resolution},
            )
    finally:
        if zsrc is not None:
            zsrc.close()


def _label_entries(entries: list[_Entry], source: Path) -> tuple[list[_Entry], list[_Entry], list[str]]:
    """(entries inside a class folder, each with its label; entries outside any; class names).

    The first folder level names the class; classes are numbered in sorted order.
    """
    parts = [PurePosixPath(e.name).parts for e in entries]
    label_names = sorted({p[0] for p in parts if len(p) > 1})
    if not label_names:
        raise DatasetError(f"labels_from_folders=True but {source} has no class subfolders")
    index = {n: i for i, n in enumerate(label_names)}
    inside, outside = [], []
    for e, p in zip(entries, parts):
        if len(p) > 1:
            e.label = index[p[0]]
            inside.append(e)
        else:
            outside.append(e)
    return inside, outside, label_names
