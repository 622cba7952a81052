"""The studio's wire format, read by both sides: server.py validates with it, sessions.py applies with it, and
static/studio.js speaks it (keep the page in step with this module).

WebSocket, up (browser -> server): JSON text, {"type": ..., ...}.
- "credit" {"t"?: client time}: returns one frame credit (at most 2 frames are in flight per viewer); "t" comes
  back as the next frame's "t", so the page can time a round trip. Handled by the server's flow control.
- "ping" {"t"?}: answered at once with {"type": "pong", "t"} by the server.
- every other type is a control, listed in `controls()` with its fields and what applying it does. A control may
  carry an "id" (an integer); frames echo the id of the last control applied as "ack".

WebSocket, down (server -> browser):
- JSON text: {"type": "info", ...Engine.info()} once on connect; {"type": "stats", "fps", "render_ms", "batch",
  "clients", "errors", "dropped", "ignored_credits", "render_errors", "read_ms" (the latest prompt's reading, queue
  wait included; null before one)} once a second;
  {"type": "error", "message", "errors", "dropped"?} for a bad or dropped message; {"type": "pong", "t"}.
- binary: a frame, `pack_message(header, payload)`: uint32 little-endian header length, the JSON header
  {"kind": "frame" | "png", "seq", "ack", "t", "seed", "frozen", "grid", "likes", "dislikes", "render_ms",
  "batch", "pattern", "phase", "show_seed", "rate", "hits"}, then the JPEG (kind "frame") or, after a "save"
  control, the same frame as PNG (kind "png"). "pattern" is the motion (walk, field, loop); for a field or loop the
  frame is patterns.frame_latents at ("show_seed", "phase"), exactly what `progan generate --pattern` renders there.
  "rate": phase units a second the motion moves at now (the music's drive included; 0 when frozen); "hits": the
  music's hits so far.

  Conditional models: "morph" in the header is how far the stream has turned toward what was asked for last (0 to
  1; null for an unconditional model).
- JSON text from the render thread: {"type": "condition", "now", "next", "seconds"} whenever what the stream shows
  changes (a prompt starts, is queued or the queue is cleared; a class is picked; a setlist entry starts): "now" and
  each of "next" (the queue, first to play first) are {"text", "reading", "source", "seconds"?}, source "prompt",
  "class", "seed" or "data" (a caption of the training data, shown until the first prompt; a new one every
  "seconds"). "reading" is how a prompt was read ("monkey 0.43, person surfing 0.41, moon 0.16"); an entry's own
  "seconds" marks a setlist entry (it plays that long and comes round again).
- {"type": "notice", "message"}: a prompt that nothing in the data is close to, which is not played.
- {"type": "taste", "profile"}: after a "save_taste" control, the viewer's taste as a profile (taste.py) for the
  page to save; "load_taste" {"profile"} sends one back.

Prompts ("prompt" {"text", "queue"?}): the server checks the text here (check_prompt), reads it with the text
encoder off the event loop, and posts the control with its progan.conditioning.prompts.PromptReading as "reading"; the render
thread then morphs to it (queue false: at once; true: after what plays now, each queued prompt for
"prompt_seconds").

Setlists ("setlist" {"text", "name"?}: a setlist file's text and name, setlist.py): the server parses it, reads its
prompts off the event loop as it does a prompt's, and posts the control with the entries as "entries" (Targets); a
bad line is answered with an error naming the file and the line (about "setlist"). "next" plays the next entry now.

Music (static/studio.js measures it in the page; nothing of it is sent but these): "drive" {"energy", "motion"}, the
loudness in [0, 1] and how strongly the motion's speed follows it; "hit" {"action", "strength"}, an onset, which
does one of HIT_ACTIONS (steering.Steering.hit).

Adding a control is one entry in `controls()`: its fields (each a check and whether it is required) and its
`apply(steering, cmd)`, which runs on the render thread against a steering.Steering; `unavailable` says why a model
cannot take it (the page shows that control disabled with the reason).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any, Callable

from progan.studio.patterns import COUPLING, MOTIONS, PERIOD
from progan.studio.targets import Conditioning
from progan.conditioning.prompts import PromptError, check_prompt

SLIDER_RANGE = 5.0   # slider offsets in normalised-z units (each coordinate of a latent is about N(0, 1))
MAX_SPEED = 4.0      # keyframes per second
MAX_GRID = 8
MAX_ID = 2**53       # integers a browser's JSON can carry exactly
MAX_BLEND = 8        # classes in one blend
MAX_QUEUE = 8        # prompts waiting to play
PROMPT_SECONDS = (2.0, 600.0)  # how long each queued prompt (or setlist entry) plays before the next
HIT_ACTIONS = ("pulse", "jump", "coupling", "next")  # what an onset of the music can do
MAX_SETLIST_CHARS = 3500       # a setlist sent from the page (about 100 lines; within the server's 4096-character
                               # message limit once JSON-escaped; a longer one is given to `progan studio --setlist`)

MAX_NESTING = 32     # JSON depth of an up message: a control is an object of numbers, strings and short lists
HEADER = struct.Struct("<I")  # binary messages: uint32 header length, JSON header, payload (JPEG or PNG)


def pack_message(header: dict, payload: bytes) -> bytes:
    head = json.dumps(header, separators=(",", ":")).encode()
    return HEADER.pack(len(head)) + head + payload


def unpack_message(data: bytes) -> tuple[dict, bytes]:
    (n,) = HEADER.unpack_from(data)
    return json.loads(data[HEADER.size:HEADER.size + n]), data[HEADER.size + n:]


class ControlError(ValueError):
    """A control message that is not acceptable; the text goes back to the client."""


# ---------------------------------------------------------------------------------------------------------------
# Field checks: (name, value) -> the clean value, or ControlError saying what is wrong.

Check = Callable[[str, Any], Any]


def nesting_depth(text: str) -> int:
    """The deepest nesting of [ and { in JSON text, outside its strings. The server refuses an up message deeper than
    MAX_NESTING before json.loads, whose own limit is the interpreter's recursion limit: a setting of the whole
    process, which torch.compile, for one, raises."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def short(v) -> str:
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


def number(lo: float, hi: float) -> Check:
    def check(name, v):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ControlError(f"{name} must be a number, got {short(v)}")
        try:
            v = float(v)
        except OverflowError:
            v = math.inf
        if not math.isfinite(v):
            raise ControlError(f"{name} must be finite, got {v}")
        if not lo <= v <= hi:
            raise ControlError(f"{name} must be in [{lo:g}, {hi:g}], got {v:g}")
        return v
    return check


def integer(lo: int, hi: int) -> Check:
    def check(name, v):
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int):
            raise ControlError(f"{name} must be an integer, got {short(v)}")
        if not lo <= v <= hi:
            raise ControlError(f"{name} must be in [{lo}, {hi}], got {short(v)}")
        return v
    return check


def boolean(name, v):
    if not isinstance(v, bool):
        raise ControlError(f"{name} must be true or false, got {short(v)}")
    return v


def prompt_text(name, v):
    """The prompt as the encoder will read it (progan.conditioning.prompts.check_prompt), or why it cannot be read."""
    try:
        return check_prompt(v)
    except PromptError as e:
        raise ControlError(str(e)) from None


def class_blend(class_names: tuple[str, ...]) -> Check:
    """{class name: weight} -> {class index: weight}, weights non-negative with a positive sum."""
    weight = number(0.0, 1e6)

    def check(name, v):
        if not isinstance(v, dict) or not v:
            raise ControlError(f'{name} must be an object of class names and weights, e.g. {{"cat": 0.7, "dog": 0.3}}'
                               f", got {short(v)}")
        if len(v) > MAX_BLEND:
            raise ControlError(f"{name}: at most {MAX_BLEND} classes in a blend, got {len(v)}")
        out = {}
        for key, w in v.items():
            if key not in class_names:
                close = [c for c in class_names if str(key).lower() in c.lower()][:5]
                raise ControlError(f"{name}: unknown class {short(key)}"
                                   + (f"; did you mean {', '.join(close)}?" if close else ""))
            out[class_names.index(key)] = weight(f"{name}[{short(key)}]", w)
        if sum(out.values()) <= 0:
            raise ControlError(f"{name}: the weights must not all be zero")
        return out
    return check


def choice(options: tuple[str, ...]) -> Check:
    def check(name, v):
        if v not in options:
            raise ControlError(f"{name} must be one of {', '.join(options)}, got {short(v)}")
        return v
    return check


def text(limit: int) -> Check:
    def check(name, v):
        if not isinstance(v, str):
            raise ControlError(f"{name} must be text, got {short(v)}")
        if len(v) > limit:
            raise ControlError(f"{name} is {len(v)} characters long; at most {limit}")
        return v
    return check


def json_object(name, v):
    if not isinstance(v, dict):
        raise ControlError(f"{name} must be a JSON object, got {short(v)}")
    return v


# ---------------------------------------------------------------------------------------------------------------
# The controls

@dataclass(frozen=True)
class Control:
    """One message type: its fields ({name: (check, required)}), what applying it does on the render thread (None:
    the server answers it itself), and why it does not apply to this model (None: it does)."""

    fields: dict[str, tuple[Check, bool]]
    apply: Callable[[Any, dict], None] | None
    unavailable: str | None = None


def controls(sliders: int, conditioning: Conditioning = Conditioning()) -> dict[str, Control]:
    """type -> Control, for a model with `sliders` SeFa sliders, conditioned as `conditioning` says."""
    frame_cell = {"frame": (integer(0, MAX_ID), False), "cell": (integer(0, MAX_GRID**2 - 1), False)}
    no_class, no_prompt = conditioning.class_unavailable, conditioning.prompt_unavailable
    classes = len(conditioning.class_names)
    return {
        "speed": Control({"value": (number(0.0, MAX_SPEED), True)}, lambda s, c: s.set_speed(c["value"])),
        "truncation": Control({"value": (number(0.0, 1.0), True)}, lambda s, c: s.set_truncation(c["value"])),
        "freeze": Control({"value": (boolean, True)}, lambda s, c: s.set_frozen(c["value"])),
        "seed": Control({"value": (integer(0, 2**32 - 1), True)}, lambda s, c: s.jump_to_seed(c["value"])),
        "slider": Control({"index": (integer(0, sliders - 1), True),
                           "value": (number(-SLIDER_RANGE, SLIDER_RANGE), True)},
                          lambda s, c: s.set_slider(c["index"], c["value"])),
        "reset_sliders": Control({}, lambda s, c: s.reset_sliders()),
        "like": Control(frame_cell, lambda s, c: s.like(c.get("frame"), c.get("cell", 0))),
        "dislike": Control(frame_cell, lambda s, c: s.dislike(c.get("frame"), c.get("cell", 0))),
        "reset_preferences": Control({}, lambda s, c: s.reset_preferences()),
        "grid": Control({"value": (integer(1, MAX_GRID), True)}, lambda s, c: s.set_grid(c["value"])),
        "shuffle": Control({}, lambda s, c: s.shuffle()),
        "save": Control({}, lambda s, c: s.save_png()),
        # Patterns (patterns.py): the motion and its settings; the layout is the page's own.
        "pattern": Control({"motion": (choice(MOTIONS), False), "coupling": (number(*COUPLING), False),
                            "period": (number(*PERIOD), False)},
                           lambda s, c: s.set_pattern(c.get("motion"), c.get("coupling"), c.get("period"))),
        # Taste profiles: the page saves the "taste" message's profile to a file and sends one back to load.
        "save_taste": Control({}, lambda s, c: s.save_taste()),
        "load_taste": Control({"profile": (json_object, True)}, lambda s, c: s.load_taste(c["profile"])),
        # Class models: one class, or a blend of several (soft rows); the stream morphs to it.
        "label": Control({"value": (integer(0, max(classes - 1, 0)), True)},
                         lambda s, c: s.blend_classes({c["value"]: 1.0}, c.get("received")), unavailable=no_class),
        "classes": Control({"weights": (class_blend(conditioning.class_names), True)},
                           lambda s, c: s.blend_classes(c["weights"], c.get("received")), unavailable=no_class),
        # Text models. The server adds "reading" (and "received") before posting a prompt to the render thread.
        "prompt": Control({"text": (prompt_text, True), "queue": (boolean, False)},
                          lambda s, c: s.prompt(c["text"], c["reading"], c.get("queue", False), c.get("received")),
                          unavailable=no_prompt),
        "clear_queue": Control({}, lambda s, c: s.clear_queue(), unavailable=no_prompt),
        "prompt_seconds": Control({"value": (number(*PROMPT_SECONDS), True)},
                                  lambda s, c: s.set_prompt_seconds(c["value"]), unavailable=no_prompt),
        # Setlists, for any model (seeds need no conditioning). The server adds "entries" before posting one.
        "setlist": Control({"text": (text(MAX_SETLIST_CHARS), True), "name": (text(200), False)},
                           lambda s, c: s.load_setlist(c["entries"], c.get("received"))),
        "next": Control({}, lambda s, c: s.next_entry(c.get("received"))),
        # Music.
        "drive": Control({"energy": (number(0.0, 1.0), True), "motion": (number(0.0, 1.0), True)},
                         lambda s, c: s.drive(c["energy"], c["motion"])),
        "hit": Control({"action": (choice(HIT_ACTIONS), True), "strength": (number(0.0, 1.0), True)},
                       lambda s, c: s.hit(c["action"], c["strength"], c.get("received"))),
        "ping": Control({"t": (number(-1e18, 1e18), False)}, None),
    }


def parse_control(obj, table: dict[str, Control]) -> dict:
    """A decoded JSON message -> a clean control dict, or ControlError saying what is wrong."""
    if not isinstance(obj, dict):
        raise ControlError(f"a control must be a JSON object, got {type(obj).__name__}")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ControlError('a control needs a "type" string')
    if kind not in table:
        raise ControlError(f"unknown message type {short(kind)}; expected credit or one of {', '.join(table)}")
    control = table[kind]
    if control.unavailable:
        raise ControlError(control.unavailable)
    extra = set(obj) - set(control.fields) - {"type", "id"}
    if extra:
        raise ControlError(f"{kind}: unknown field(s) {', '.join(sorted(map(str, extra)))}")
    cmd = {"type": kind}
    if "id" in obj:
        cmd["id"] = integer(0, MAX_ID)("id", obj["id"])
    for field, (check, required) in control.fields.items():
        if field in obj:
            cmd[field] = check(f"{kind}.{field}", obj[field])
        elif required:
            raise ControlError(f"{kind}: missing field {field!r}")
    return cmd
