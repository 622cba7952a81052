"""Setlists: a show's entries (prompts, classes or seeds), each played for its own time, in a loop with morphs
between them (`progan studio RUN --setlist show.txt`, the page's Load setlist, `progan generate --setlist`).

One entry a line: how long it plays, what kind of entry it is, and what it shows. Blank lines are skipped, and so is
a line whose first character other than a space is #.

    # seconds  kind    what
    8          prompt  monkeys surfing on the moon      a text model's prompt
    12s        class   cat=0.7, dog=0.3                 a class model's class, or a blend (weights are normalised)
    6          seed    42                               any model: the sample of seed 42 (a liked one: Save PNG
                                                        names a seed's frame progan-seed42.png)

A setlist is read in two steps: `parse_setlist` checks each line's form (no model needed: the page's text is checked
on the server's event loop), `resolve` turns the entries into the model's Targets (prompts read by its text
encoder, class names checked against its classes). Either refuses a bad line with its number and what is wrong.
Playing is steering.Steering's: the entries are its prompt queue, each going back to the end once it has played.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from progan.conditioning.encoder import TextEncoderMissing
from progan.conditioning.prompts import PromptError, check_prompt
from progan.conditioning.spec import ConditionError
from progan.studio.protocol import PROMPT_SECONDS, ControlError, class_blend
from progan.studio.targets import Target, Targets

KINDS = ("prompt", "class", "seed")
MAX_ENTRIES = 256
MAX_BYTES = 64 * 1024


class SetlistError(ValueError):
    """A setlist that cannot be played; the message names the line and what is wrong with it."""


@dataclass(frozen=True)
class Entry:
    line: int                        # 1-based, for messages
    seconds: float
    kind: str                        # one of KINDS
    value: str | dict[str, float] | int   # prompt text, {class name: weight}, seed


def parse_seconds(text: str) -> float:
    """'8', '8s', '1.5s' -> seconds, or ValueError."""
    number = text[:-1] if text.lower().endswith("s") else text
    seconds = float(number)
    if not math.isfinite(seconds):
        raise ValueError
    return seconds


def parse_blend(text: str) -> dict[str, float]:
    """'cat=0.7, dog=0.3' or 'cat' -> {name: weight} (weights default to 1; the page's blend box reads the same)."""
    weights: dict[str, float] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        name, eq, weight = part.rpartition("=") if "=" in part else (part, "", "1")
        name = name.strip()
        try:
            w = float(weight)
        except ValueError:
            raise ValueError(f"the weight of {name!r} is not a number: {weight.strip()!r}") from None
        weights[name] = weights.get(name, 0.0) + w
    if not weights:
        raise ValueError("name one class or more, e.g. cat or cat=0.7, dog=0.3")
    return weights


def parse_setlist(text: str, where: str = "setlist") -> list[Entry]:
    """The entries of a setlist's text, or SetlistError naming the first bad line (`where`: the file's name)."""
    entries = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue

        def bad(why: str) -> SetlistError:
            shown = line if len(line) <= 60 else line[:57] + "..."
            return SetlistError(f"{where} line {number}: {why} (the line: {shown!r}); a line is SECONDS KIND WHAT, "
                                f"e.g. '8 prompt a red heart', '12 class cat=0.7, dog=0.3' or '6 seed 42'")

        parts = line.split(None, 2)
        if len(parts) < 3:
            raise bad("it needs how long it plays, a kind (prompt, class or seed) and what to show")
        duration, kind, what = parts
        try:
            seconds = parse_seconds(duration)
        except ValueError:
            raise bad(f"{duration!r} is not a number of seconds") from None
        if not PROMPT_SECONDS[0] <= seconds <= PROMPT_SECONDS[1]:
            raise bad(f"an entry plays {PROMPT_SECONDS[0]:g} to {PROMPT_SECONDS[1]:g} seconds, not {seconds:g}")
        kind = kind.lower()
        if kind == "prompt":
            try:
                value = check_prompt(what)
            except PromptError as e:
                raise bad(str(e)) from None
        elif kind == "class":
            try:
                value = parse_blend(what)
            except ValueError as e:
                raise bad(str(e)) from None
        elif kind == "seed":
            try:
                value = int(what)
            except ValueError:
                raise bad(f"a seed is a whole number, not {what!r}") from None
            if not 0 <= value < 2**32:
                raise bad(f"a seed is in [0, 2^32), not {value}")
        else:
            raise bad(f"unknown kind {kind!r}; the kinds are {', '.join(KINDS)}")
        entries.append(Entry(number, seconds, kind, value))
        if len(entries) > MAX_ENTRIES:
            raise SetlistError(f"{where} line {number}: a setlist holds at most {MAX_ENTRIES} entries")
    if not entries:
        raise SetlistError(f"{where} has no entries; a line is SECONDS KIND WHAT, e.g. '8 prompt a red heart'")
    return entries


def read_setlist(path: str | Path) -> list[Entry]:
    """parse_setlist of a file, or SetlistError naming it."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SetlistError(f"cannot read the setlist {path}: {e.strerror or e}") from None
    if len(data) > MAX_BYTES:
        raise SetlistError(f"the setlist {path} is {len(data):,} bytes; at most {MAX_BYTES:,}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SetlistError(f"the setlist {path} is not UTF-8 text (byte {e.start})") from None
    return parse_setlist(text, where=path.name)


def resolve(entries: list[Entry], targets: Targets, read_prompt: Callable[[str], object],
            where: str = "setlist") -> list[Target]:
    """The entries as this model's Targets (each with its seconds), or SetlistError naming the first line the model
    cannot play. `read_prompt(text)`: the prompt's progan.conditioning.prompts.PromptReading (called for prompt
    entries only, so a model without a text encoder can play a setlist of seeds)."""
    c = targets.conditioning
    blend = class_blend(c.class_names)
    out = []
    for e in entries:
        at = f"{where} line {e.line}"
        if e.kind == "prompt":
            if c.prompt_unavailable:
                raise SetlistError(f"{at}: {c.prompt_unavailable}")
            try:
                target = targets.prompt_target(e.value, read_prompt(e.value))
            except (PromptError, ConditionError, TextEncoderMissing) as err:
                raise SetlistError(f"{at}: prompt {e.value!r}: {err}") from None
        elif e.kind == "class":
            if c.class_unavailable:
                raise SetlistError(f"{at}: {c.class_unavailable}")
            try:
                target = targets.class_target(blend(at, e.value))
            except ControlError as err:
                raise SetlistError(str(err)) from None
        else:
            target = targets.seed_target(e.value)
        out.append(replace(target, seconds=e.seconds))
    return out


def total_seconds(entries: list[Entry] | list[Target]) -> float:
    """One time round the setlist."""
    return sum(e.seconds for e in entries)
