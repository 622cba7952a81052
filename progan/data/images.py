"""Robust image decoding: any file Pillow can open -> a square 8-bit RGB image of the target size.

Everything that can go wrong with one file raises `UnusableImage` with a short reason, so the
caller can skip the file and list it in the report instead of dying halfway through a dataset.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

CROPS = ("center", "pad")

# Pillow's default bomb limit is ~89 Mpx; photos from large sensors and scans exceed it legitimately.
DEFAULT_MAX_PIXELS = 256 * 1024 * 1024


class UnusableImage(Exception):
    """One input file cannot be used; str(exc) is the reason that goes into report.json."""


def _to_8bit(arr: np.ndarray) -> np.ndarray:
    """Scale a single-channel integer/float array to uint8.

    16-bit modes are scaled by 255/65535. Modes "I" (int32) and "F" (float) carry no bit depth,
    so the value range decides: <=1 (float) is [0, 1], <=255 is 8-bit, <=65535 is 16-bit.
    """
    is_float = arr.dtype.kind == "f"
    arr = np.nan_to_num(arr.astype(np.float64))
    top = float(arr.max()) if arr.size else 0.0
    if is_float and top <= 1.0:
        scale = 255.0
    elif top <= 255.0:
        scale = 1.0
    elif top <= 65535.0:
        scale = 255.0 / 65535.0
    else:
        scale = 255.0 / top
    return np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8)


def to_rgb(img: Image.Image, background=(255, 255, 255)) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB; transparency is composited onto `background`."""
    mode = img.mode
    if mode.startswith("I;16"):
        # Pillow's own I;16 -> L conversion clips at 255 instead of scaling, which whitens everything.
        arr = np.asarray(img).astype(np.float64) * (255.0 / 65535.0)
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode in ("I", "F"):
        return Image.fromarray(_to_8bit(np.asarray(img)), "L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, tuple(background) + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if mode == "RGB":
        return img
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as e:
        raise UnusableImage(f"cannot convert image mode {mode} to RGB: {e}") from e


def load_square(
    fp,
    resolution: int,
    *,
    crop: str = "center",
    background=(255, 255, 255),
    upscale: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Decode one image (path or binary file object) -> uint8 [resolution, resolution, 3] RGB.

    Raises UnusableImage with the reason for anything wrong with the file. Call it inside
    `pixel_limit(max_pixels)` so Pillow's own decompression-bomb check agrees with ours.
    """
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
    if isinstance(fp, (str, os.PathLike)):
        # Opening the file ourselves separates "cannot read" (permissions, broken links, folders
        # named like images) from "cannot decode".
        try:
            f = open(fp, "rb")
        except OSError as e:
            raise UnusableImage(f"cannot read file: {e.strerror or e}") from e
        with f:
            return load_square(
                f, resolution, crop=crop, background=background, upscale=upscale, max_pixels=max_pixels
            )
    if fp.seek(0, os.SEEK_END) == 0:
        raise UnusableImage("empty file (0 bytes)")
    fp.seek(0)
    try:
        with warnings.catch_warnings():
            # Our explicit size check reports bombs; Pillow's warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(fp)
        with img:
            w, h = img.size
            if max_pixels is not None and w * h > max_pixels:
                raise UnusableImage(
                    f"decompression bomb: {w}x{h} = {w * h} pixels exceeds the limit of {max_pixels}"
                )
            if w == 0 or h == 0:
                raise UnusableImage(f"image has zero size ({w}x{h})")
            img.load()
            # Phone photos store their rotation in EXIF; honour it so faces are upright.
            ImageOps.exif_transpose(img, in_place=True)
            rgb = to_rgb(img, background)
            out = square_resize(rgb, resolution, crop=crop, background=background, upscale=upscale)
            return np.asarray(out, dtype=np.uint8)
    except UnusableImage:
        raise
    except Image.DecompressionBombError as e:
        raise UnusableImage(f"decompression bomb: {e}") from e
    except UnidentifiedImageError:
        raise UnusableImage("not an image (Pillow cannot identify the format)") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError, Image.DecompressionBombWarning) as e:
        # Truncated and corrupt files surface as OSError ("image file is truncated"), SyntaxError
        # (broken headers in some plugins), ValueError or EOFError depending on the format.
        raise UnusableImage(f"corrupt or truncated image: {type(e).__name__}: {e}") from e


def square_resize(
    img: Image.Image,
    resolution: int,
    *,
    crop: str = "center",
    background=(255, 255, 255),
    upscale: bool = False,
) -> Image.Image:
    """Make an RGB image square ("center" crop or "pad" letterbox) and resize it to resolution^2."""
    w, h = img.size
    if crop == "center":
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        box = (left, top, left + side, top + side)
        square = img
    elif crop == "pad":
        side = max(w, h)
        square = Image.new("RGB", (side, side), tuple(background))
        square.paste(img, ((side - w) // 2, (side - h) // 2))
        box = (0, 0, side, side)
    else:
        raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
    if side < resolution and not upscale:
        raise UnusableImage(
            f"too small: {w}x{h} gives a {side}x{side} square, below {resolution}x{resolution} "
            "(pass upscale=True to enlarge small images)"
        )
    if side == resolution:
        return square.crop(box)
    return square.resize((resolution, resolution), Image.LANCZOS, box=box)


class pixel_limit:
    """Set Pillow's global MAX_IMAGE_PIXELS for the duration of a `with` block, then restore it."""

    def __init__(self, max_pixels: int | None):
        self.max_pixels = max_pixels

    def __enter__(self):
        self.saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = self.max_pixels
        return self

    def __exit__(self, *exc):
        Image.MAX_IMAGE_PIXELS = self.saved
        return False
