"""The built-in emoji dataset, rendered from the Noto Color Emoji font.

Candidates are all fully-qualified emoji known to the `emoji` package (single code points, ZWJ
sequences, flags, keycaps, skin tones), with their CLDR names as captions. Each also gets a richer
description (the `emoji` package's aliases, keywords from emojilib's data vendored in
progan/data/emojilib/, and the CLDR group and subgroup from Debian's unicode-data emoji-test.txt when
it is installed); descriptions, keywords, groups and subgroups are kept in the manifest. We keep those
the font draws as one glyph: a sequence the font cannot combine lays out as several glyphs (wider than one),
and one it lacks altogether draws an empty box. Each glyph is cropped to its visible pixels,
centred on a square with a small margin and resized; the images go through prepare.DatasetWriter.
"""

from __future__ import annotations

import hashlib
import json
import sys
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from progan.config import check_resolution
from progan.data.dataset import DatasetError
from progan.data.prepare import DatasetWriter, check_background

DEFAULT_FONT = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
DEFAULT_EMOJI_TEST = "/usr/share/unicode/emoji/emoji-test.txt"  # Debian's unicode-data package
DEFAULT_KEYWORDS = Path(__file__).parent / "emojilib" / "emoji-en-US.json"  # emojilib 4.0.3 (MIT), see its README
_VS16 = "\ufe0f"  # emoji presentation selector: emojilib's keys and the fully-qualified sequences may differ in it
FONT_SIZE = 109  # the only size of the font's colour bitmaps (CBDT strike); Pillow refuses others
MAX_VARIANT_KEYWORDS = 6  # of an emoji's keywords, the ones its caption variants take
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


def has_skin_tone(seq: str) -> bool:
    return any(c in _SKIN_TONES for c in seq)


def base_name(name: str) -> str:
    """The name of the emoji a skin-tone variant recolours: 'thumbs up: medium skin tone' -> 'thumbs up',
    'woman: red hair, dark skin tone' -> 'woman: red hair' (qualifiers other than skin tones stay)."""
    head, sep, tail = name.partition(":")
    if not sep:
        return name
    rest = [q.strip() for q in tail.split(",") if q.strip() and q.strip() not in _SKIN_TONES.values()]
    return head.strip() + (": " + ", ".join(rest) if rest else "")


def codepoints(seq: str) -> str:
    return " ".join(f"U+{ord(c):04X}" for c in seq)


class Emoji(NamedTuple):
    seq: str
    name: str  # CLDR name, e.g. "grinning face"
    version: float  # Emoji version that introduced it
    aliases: tuple[str, ...] = ()  # other names from the `emoji` package, e.g. ("grinning",)
    group: str | None = None  # CLDR group, e.g. "Smileys & Emotion" (None without emoji-test.txt)
    subgroup: str | None = None  # CLDR subgroup, e.g. "face-smiling"
    keywords: tuple[str, ...] = ()  # emojilib's, e.g. ("face", "smile", "happy", ...)

    def caption_variants(self) -> list[str]:
        """Ways a person might name this emoji: its name, two phrasings of it, its other names and keywords, its
        subgroup and group. Drawn one per training step, they teach a text model the encoder's neighbourhood of
        the name ("puppy" near "dog face"), and the words many emoji share give one prompt many images."""
        # emojilib lists the telling keywords first and ends with code-like ones ('u7a7a', 'blue-square')
        keywords = [k for k in self.keywords if not any(c.isdigit() for c in k)][:MAX_VARIANT_KEYWORDS]
        article = "an" if self.name[:1].lower() in "aeiou" else "a"
        texts = [self.name, f"{article} {self.name}", f"{self.name} emoji", *self.aliases, *keywords]
        if self.group is not None:
            texts += [self.subgroup.replace("-", " "), self.group.lower()]
        return list(dict.fromkeys(t for t in texts if t))

    def description(self) -> str:
        """'grinning face (grinning); keywords: face, smile, happy; face smiling, smileys & emotion'."""
        text = self.name + (f" ({', '.join(self.aliases)})" if self.aliases else "")
        if self.keywords:
            text += f"; keywords: {', '.join(self.keywords)}"
        if self.group is not None:
            text += f"; {self.subgroup.replace('-', ' ')}, {self.group.lower()}"
        return text


def list_emoji(
    font: ImageFont.FreeTypeFont | None = None,
    limit: int | None = None,
    groups: dict | None = None,
    keywords: dict | None = None,
) -> tuple[list[Emoji], list[Emoji]]:
    """Fully-qualified emoji sorted by code points, split into (drawn by the font, not drawn).

    limit: stop once that many drawable ones are found. groups: load_emoji_groups() to fill group and
    subgroup (left None without it). keywords: load_emoji_keywords() (default: the vendored emojilib
    file; {} for none).
    """
    font = font or load_font()
    keywords = load_emoji_keywords() if keywords is None else keywords
    data, fully_qualified = _emoji_data()
    good, bad = [], []
    for seq in sorted(s for s, d in data.items() if d["status"] == fully_qualified):
        if limit is not None and len(good) >= limit:
            break
        name = cldr_name(seq, data[seq]["en"])
        group, subgroup = group_of(seq, groups) if groups is not None else (None, None)
        names = aliases(name, data[seq].get("alias", ()))
        words = clean_keywords(keywords_of(seq, name, keywords), (name, *names))
        item = Emoji(seq, name, float(data[seq]["E"]), names, group, subgroup, words)
        (good if draws_one_glyph(font, seq) else bad).append(item)
    return good, bad


def aliases(name: str, raw: list[str]) -> tuple[str, ...]:
    """The `emoji` package's aliases that add words: ':thumbsup:', ':+1:' -> ('thumbsup',).

    Dropped: repeats of the name, codes of two letters or fewer (':fr:'), symbols, and 'flag for X'.
    """
    out = []
    for a in raw:
        text = a.strip(":").replace("_", " ").strip()
        if (
            len(text) > 2
            and any(c.isalpha() for c in text)
            and text.casefold() != name.casefold()
            and not text.startswith("flag for ")
            and text not in out
        ):
            out.append(text)
    return tuple(out)


def load_emoji_keywords(path=None) -> dict[str, list[str]]:
    """Emoji (without U+FE0F) -> keywords, from emojilib's emoji-en-US.json (default: the vendored copy)."""
    path = Path(path or DEFAULT_KEYWORDS)
    if not path.is_file():
        raise DatasetError(f"emoji keyword file {path} not found (progan ships emojilib's emoji-en-US.json there)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(data, dict) or not data:
        raise DatasetError(f"{path} must be a non-empty JSON object of emoji -> list of keywords (emojilib's format)")
    out = {}
    for seq, words in data.items():
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise DatasetError(f"{path}: the keywords of {seq!r} must be a list of strings, got {words!r}")
        key = seq.replace(_VS16, "")
        if key in out:
            raise DatasetError(f"{path}: {seq!r} is listed twice (with and without U+FE0F)")
        out[key] = words
    return out


def keywords_of(seq: str, name: str, keywords: dict[str, list[str]]) -> list[str]:
    """emojilib's keywords of an emoji; a skin-tone variant (emojilib lists none) takes its base emoji's.

    The base of a pair with two tones is another code point ('handshake: light skin tone, dark skin tone'
    is U+1FAF1 U+1F3FB ZWJ U+1FAF2 U+1F3FF, plain handshake U+1F91D), so it is found by name: the emoji
    whose first keyword is the name before ':'.
    """
    plain = seq.replace(_VS16, "")
    untoned = "".join(c for c in plain if c not in _SKIN_TONES)
    for key in (plain, untoned):
        if key in keywords:
            return keywords[key]
    if untoned == plain:
        return []
    base = name.split(":")[0].casefold()
    return next((w for w in keywords.values() if w and w[0].replace("_", " ").casefold() == base), [])


def clean_keywords(raw: list[str], names: tuple[str, ...]) -> tuple[str, ...]:
    """'grinning_face', 'face', 'smile', ':)' -> ('face', 'smile'): underscores to spaces; repeats of the
    names and of the part of a name before ':' dropped (emojilib's first keyword is usually the name:
    'flag_france' for 'flag: France', 'thumbs_up' for 'thumbs up: medium skin tone'), and so are keywords
    without a letter."""

    def key(text):
        return " ".join(text.casefold().replace(":", " ").replace(",", " ").split())

    seen = {key(n) for n in names} | {key(n.split(":")[0]) for n in names}
    out = []
    for w in raw:
        text = w.replace("_", " ").strip()
        if any(c.isalpha() for c in text) and key(text) not in seen:
            seen.add(key(text))
            out.append(text)
    return tuple(out)


def load_emoji_groups(path=None) -> dict[str, tuple[str, str]]:
    """Emoji sequence -> (group, subgroup) from Unicode's emoji-test.txt (Debian: apt-get install unicode-data)."""
    path = Path(path or DEFAULT_EMOJI_TEST)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: install Debian's unicode-data package (apt-get install unicode-data) "
            "or pass the path of Unicode's emoji-test.txt"
        )
    out, group, subgroup = {}, None, None
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif line.strip() and not line.startswith("#"):
            points = line.split(";", 1)[0].split()
            try:
                seq = "".join(chr(int(p, 16)) for p in points)
            except ValueError:
                raise DatasetError(f"{path}:{n}: not a line of emoji-test.txt: {line!r}") from None
            if group is None or subgroup is None:
                raise DatasetError(f"{path}:{n}: emoji listed before any group/subgroup header")
            out[seq] = (group, subgroup)
    if not out:
        raise DatasetError(f"{path} lists no emoji; is it Unicode's emoji-test.txt?")
    return out


def group_of(seq: str, groups: dict[str, tuple[str, str]]) -> tuple[str | None, str | None]:
    """(group, subgroup) of a sequence; one newer than the file takes that of its first component.

    Debian's file can be a release behind the `emoji` package: 'head shaking horizontally' (Emoji 15.1) is
    'slightly smiling face' + ZWJ + arrow, so it goes with the smileys.
    """
    if seq in groups:
        return groups[seq]
    plain = seq.replace("️", "")
    if plain in groups:
        return groups[plain]
    first = "".join(c for c in plain.split("‍")[0] if c not in _SKIN_TONES)
    for key in (first, first + "️"):
        if key in groups:
            return groups[key]
    return None, None


def draws_one_glyph(font: ImageFont.FreeTypeFont, seq: str) -> bool:
    """True if the font draws `seq` as one visible glyph.

    A sequence the font does not combine lays out as several glyphs (about twice as wide or more);
    a code point it lacks becomes an empty .notdef box (zero-height ink).
    """
    _, top, _, bottom = font.getbbox(seq)
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
    emoji_test=None,
    background=(255, 255, 255),
    overwrite: bool = False,
    limit: int | None = None,
    skin_tones: bool = True,
    only_groups: list[str] | None = None,
    labels_from_groups: bool = False,
    text_encoder="auto",
    progress: bool | None = None,
) -> dict:
    """Render every emoji the font draws into a prepared dataset (captions = CLDR names).

    limit: use only the first `limit` drawable emoji in code-point order (for quick tests); fewer
    images result if some of them share artwork. emoji_test: Unicode's emoji-test.txt (default:
    Debian's unicode-data); without it the dataset has no groups and a warning says how to get them.
    skin_tones=False: leave out the skin-tone variants (recolourings of one drawing; with them, People & Body is
    60% of the set), keeping the default yellow one of each. only_groups: keep the emoji of these Unicode groups
    or subgroups (e.g. ["Smileys & Emotion", "food-fruit"]: the names differ in form, so one list holds both);
    needs emoji-test.txt. labels_from_groups: class labels from the Unicode groups (label_names in
    emoji-test.txt's order), for class-conditional training; needs emoji-test.txt.
    text_encoder: see DatasetWriter.finish. The names are what gets encoded: benchmarks/text_encoders.py
    finds prompts retrieve the right emoji better from bare names than from the longer descriptions
    (which are kept in the manifest, with the keywords as lists of strings). Returns the manifest.
    """
    resolution = check_resolution(resolution)
    background = check_background(background)
    if limit is not None and (not isinstance(limit, int) or limit <= 0):
        raise DatasetError(f"limit must be a positive int or None, got {limit!r}")
    font_file = Path(font_path or DEFAULT_FONT)
    font = load_font(font_file)
    try:
        groups, groups_note = load_emoji_groups(emoji_test), f"from {emoji_test or DEFAULT_EMOJI_TEST}"
    except FileNotFoundError as e:
        if emoji_test is not None:
            raise
        if labels_from_groups or only_groups is not None:
            raise DatasetError(f"labels_from_groups and only_groups need the Unicode groups: {e}") from None
        groups, groups_note = None, f"none: {e}"
        warnings.warn(f"emoji dataset without groups and subgroups: {e}", stacklevel=2)
    if only_groups is not None:
        known = list(dict.fromkeys(g for g, _ in groups.values()))
        known_sub = set(sub for _, sub in groups.values())
        unknown = [g for g in only_groups if g not in known and g not in known_sub]
        if unknown or not only_groups:
            what = f"unknown Unicode group(s) {unknown!r}" if unknown else "no group given"
            raise DatasetError(f"only_groups: {what}; the groups are {', '.join(known)}, or one of their "
                               f"{len(known_sub)} subgroups (e.g. face-smiling, food-fruit: the '# subgroup:' lines "
                               f"of {emoji_test or DEFAULT_EMOJI_TEST})")
    chosen, bad = list_emoji(font, limit, groups, load_emoji_keywords())
    drawn = len(chosen)
    left_out = []  # (emoji, why): chosen but not wanted in this dataset
    if only_groups is not None:
        left_out += [(e, f"group {e.group!r} and subgroup {e.subgroup!r} not in only_groups") for e in chosen
                     if e.group not in only_groups and e.subgroup not in only_groups]
    if not skin_tones:
        left_out += [(e, "a skin-tone variant (skin_tones=False)") for e in chosen if has_skin_tone(e.seq)]
    if labels_from_groups:
        left_out += [(e, "no Unicode group (labels_from_groups=True)") for e in chosen if e.group is None]
    dropped = {id(e) for e, _ in left_out}
    chosen = [e for e in chosen if id(e) not in dropped]
    if not chosen:
        raise DatasetError(f"{font_file} draws none of the emoji; is it a colour emoji font?")
    keep = _distinct_artwork(font, chosen)
    if progress is None:
        progress = sys.stderr.isatty()
    kept: list[Emoji] = []
    with DatasetWriter(out_dir, resolution, sum(keep[i] == i for i in keep), overwrite=overwrite) as writer:
        for e in bad:
            writer.skip(f"{codepoints(e.seq)} ({e.name})", "not drawn as a single glyph by this font")
        for e, why in left_out:
            writer.skip(f"{codepoints(e.seq)} ({e.name})", why)
        label_names = None
        if labels_from_groups:  # the groups this dataset holds, in emoji-test.txt's order
            present = {e.group for e in chosen}
            label_names = [g for g in dict.fromkeys(g for g, _ in groups.values()) if g in present]
        for i, e in enumerate(tqdm(chosen, unit="emoji", desc="emoji", disable=not progress)):
            if keep[i] != i:
                writer.skip(f"{codepoints(e.seq)} ({e.name})", f"duplicate artwork: same as {chosen[keep[i]].name!r}")
                continue
            try:
                img = render_emoji(font, e.seq, resolution, background)
            except DatasetError as err:
                writer.skip(f"{codepoints(e.seq)} ({e.name})", str(err))
                continue
            writer.add(img, caption=e.name, label=label_names.index(e.group) if label_names else None)
            kept.append(e)
        columns = {
            "descriptions": [e.description() for e in kept],
            "keywords": [list(e.keywords) for e in kept],
            "sequences": [e.seq for e in kept],
            # Skin-tone variants are one drawing recoloured: a caption of one is no mismatch for another.
            "variant_of": [base_name(e.name) for e in kept],
            "caption_variants": [e.caption_variants() for e in kept],
        }
        if groups is not None:
            columns["groups"] = [e.group for e in kept]
            columns["subgroups"] = [e.subgroup for e in kept]
        return writer.finish(
            source=f"builtin:emoji ({font_file})",
            crop="glyph",
            background=background,
            columns=columns,
            label_names=label_names,
            text_encoder=text_encoder,
            extra_report={"font": str(font_file), "candidates": drawn + len(bad), "drawn": drawn,
                          "groups": groups_note,
                          "keywords": f"{sum(bool(e.keywords) for e in kept)} of {len(kept)} from {DEFAULT_KEYWORDS}"},
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
