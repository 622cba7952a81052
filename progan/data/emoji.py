"""The built-in emoji dataset, rendered from the Noto Color Emoji font.

Candidates are all fully-qualified emoji known to the `emoji` package (single code points, ZWJ
sequences, flags, keycaps, skin tones), with their CLDR names as captions. We keep those the font
draws as one glyph: a sequence the font cannot combine lays out as several glyphs (wider than one),
and one it lacks altogether draws an empty box. Each glyph is cropped to its visible pixels,
centred on a square with a small margin and resized; the images go through prepare.DatasetWriter.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from progan.config import check_resolution
from progan.data.dataset import DatasetError
from progan.data.prepare import DatasetWriter, check_background

DEFAULT_FONT = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
FONT_SIZE = 109  # the only size of the font's colour bitmaps (CBDT strike); Pillow refuses others
MARGIN = 0.06  # blank border on each side, as a fraction of the glyph's larger side
_CANVAS = 192  # a 109 px glyph is 136 x 128; the rest is room for any overhang

_SKIN_TONES = {
    "\U0001f3fb": "light skin tone",
    "\U0001f3fc": "medium-light skin tone",
    "\U0001f3fd": "medium skin tone",
    "\U0001f3fe": "medium-dark skin tone",
    "\U0001f3ff": "dark skin tone",
}


def load_font(font_path=None) -> ImageFont.FreeTypeFont:
    path = Path(font_path or DEFAULT_FONT)
    if not path.is_file():
        raise FileNotFoundError(
            f"emoji font {path} not found; install it with `apt-get install fonts-noto-color-emoji` "
            "or pass the path of NotoColorEmoji.ttf"
        )
    try:
        return ImageFont.truetype(str(path), FONT_SIZE)
    except OSError as e:
        raise DatasetError(f"cannot load {path} as a colour emoji font at size {FONT_SIZE}: {e}") from e


def _emoji_data() -> tuple[dict, int]:
    try:
        import emoji
    except ImportError as e:
        raise ImportError("the emoji dataset needs the `emoji` package: pip install emoji") from e
    return emoji.EMOJI_DATA, emoji.STATUS["fully_qualified"]


def cldr_name(seq: str, short_name: str) -> str:
    """The `emoji` package's ':thumbs_up_medium_skin_tone:' -> CLDR 'thumbs up: medium skin tone'."""
    name = short_name.strip(":").replace("_", " ")
    tones = list(dict.fromkeys(_SKIN_TONES[c] for c in seq if c in _SKIN_TONES))
    for joined in (" ".join(tones), " ".join(_SKIN_TONES[c] for c in seq if c in _SKIN_TONES)):
        if tones and name.endswith(" " + joined):
            name = name[: -len(joined) - 1] + ": " + ", ".join(tones)
            break
    is_flag = all(0x1F1E6 <= ord(c) <= 0x1F1FF for c in seq) or (
        seq.startswith("\U0001f3f4") and any(0xE0020 <= ord(c) <= 0xE007F for c in seq)
    )
    if is_flag:
        name = "flag: " + name
    elif name.startswith("keycap "):
        name = "keycap: " + name[len("keycap ") :]
    return name


def codepoints(seq: str) -> str:
    return " ".join(f"U+{ord(c):04X}" for c in seq)


class Emoji(NamedTuple):
    seq: str
    name: str  # CLDR name, e.g. "grinning face"
    version: float  # Emoji version that introduced it


def list_emoji(font: ImageFont.FreeTypeFont | None = None, limit: int | None = None) -> tuple[list[Emoji], list[Emoji]]:
    """Fully-qualified emoji sorted by code points, split into (drawn by the font, not drawn).

    limit: stop once that many drawable ones are found.
    """
    font = font or load_font()
    data, fully_qualified = _emoji_data()
    good, bad = [], []
    for seq in sorted(s for s, d in data.items() if d["status"] == fully_qualified):
        if limit is not None and len(good) >= limit:
            break
        item = Emoji(seq, cldr_name(seq, data[seq]["en"]), float(data[seq]["E"]))
        (good if draws_one_glyph(font, seq) else bad).append(item)
    return good, bad


def draws_one_glyph(font: ImageFont.FreeTypeFont, seq: str) -> bool:
    """True if the font draws `seq` as one visible glyph.

    A sequence the font does not combine lays out as several glyphs (about twice as wide or more);
    a code point it lacks becomes an empty .notdef box (zero-height ink).
    """
    left, top, right, bottom = font.getbbox(seq)
    return bottom > top and font.getlength(seq) < 1.5 * font.getlength("\U0001f600")


def _draw(font: ImageFont.FreeTypeFont, seq: str) -> Image.Image:
    canvas = Image.new("RGBA", (_CANVAS, _CANVAS), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((16, 16), seq, font=font, embedded_color=True)
    return canvas


def _render_square(font: ImageFont.FreeTypeFont, seq: str, background) -> Image.Image:
    canvas = _draw(font, seq)
    bbox = canvas.getchannel("A").getbbox()
    if bbox is None:
        raise DatasetError("renders blank")
    glyph = canvas.crop(bbox)
    w, h = glyph.size
    side = round(max(w, h) * (1 + 2 * MARGIN))
    square = Image.new("RGBA", (side, side), tuple(background) + (255,))
    square.alpha_composite(glyph, ((side - w) // 2, (side - h) // 2))
    return square.convert("RGB")


def render_emoji(font: ImageFont.FreeTypeFont, seq: str, resolution: int, background=(255, 255, 255)) -> np.ndarray:
    """One emoji -> uint8 [resolution, resolution, 3]: glyph cropped to its pixels, centred, margin."""
    square = _render_square(font, seq, background)
    return np.asarray(square.resize((resolution, resolution), Image.LANCZOS))


def build_emoji_dataset(
    out_dir,
    resolution: int = 64,
    *,
    font_path=None,
    background=(255, 255, 255),
    overwrite: bool = False,
    limit: int | None = None,
    progress: bool | None = None,
) -> dict:
    """Render every emoji the font draws into a prepared dataset (captions = CLDR names).

    limit: use only the first `limit` drawable emoji in code-point order (for quick tests); fewer
    images result if some of them share artwork. Returns the manifest.
    """
    resolution = check_resolution(resolution)
    background = check_background(background)
    if limit is not None and (not isinstance(limit, int) or limit <= 0):
        raise DatasetError(f"limit must be a positive int or None, got {limit!r}")
    font_file = Path(font_path or DEFAULT_FONT)
    font = load_font(font_file)
    chosen, bad = list_emoji(font, limit)
    if not chosen:
        raise DatasetError(f"{font_file} draws none of the emoji; is it a colour emoji font?")
    keep = _distinct_artwork(font, chosen)
    if progress is None:
        progress = sys.stderr.isatty()
    with DatasetWriter(out_dir, resolution, sum(keep[i] == i for i in keep), overwrite=overwrite) as writer:
        for e in bad:
            writer.skip(f"{codepoints(e.seq)} ({e.name})", "not drawn as a single glyph by this font")
        for i, e in enumerate(tqdm(chosen, unit="emoji", desc="emoji", disable=not progress)):
            if keep[i] != i:
                writer.skip(f"{codepoints(e.seq)} ({e.name})", f"duplicate artwork: same as {chosen[keep[i]].name!r}")
                continue
            try:
                img = render_emoji(font, e.seq, resolution, background)
            except DatasetError as err:
                writer.skip(f"{codepoints(e.seq)} ({e.name})", str(err))
                continue
            writer.add(img, caption=e.name)
        return writer.finish(
            source=f"builtin:emoji ({font_file})",
            crop="glyph",
            background=background,
            extra_report={"font": str(font_file), "candidates": len(chosen) + len(bad), "drawn": len(chosen)},
        )


def _distinct_artwork(font: ImageFont.FreeTypeFont, emoji: list[Emoji]) -> dict[int, int]:
    """index -> index of the emoji whose name we keep for that artwork (itself if it is kept).

    The font reuses artwork (France and Clipperton Island share a flag; snowboarders have no skin
    tones); duplicates would skew the data. The oldest emoji keeps the artwork: "flag: France".
    """
    owner: dict[bytes, int] = {}
    keys = []
    for i, e in enumerate(emoji):
        key = hashlib.sha256(_draw(font, e.seq).tobytes()).digest()
        keys.append(key)
        j = owner.get(key)
        if j is None or (e.version, e.seq) < (emoji[j].version, emoji[j].seq):
            owner[key] = i
    return {i: owner[k] for i, k in enumerate(keys)}
