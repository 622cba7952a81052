"""The studio's wire format, read by both sides: server.py validates with it, render.py applies with it, and
static/studio.js speaks it (keep the page in step with this module).

WebSocket, up (browser -> server): JSON text, {"type": ..., ...}.
- "credit" {"t"?: client time}: returns one frame credit (at most 2 frames are in flight per viewer); "t" comes
  back as the next frame's "t", so the page can time a round trip. Handled by the server's flow control.
- "ping" {"t"?}: answered at once with {"type": "pong", "t"} by the server.
- every other type is a control, listed in `controls()` with its fields and what applying it does. A control may
  carry an "id" (an integer); frames echo the id of the last control applied as "ack".

WebSocket, down (server -> browser):
- JSON text: {"type": "info", ...FrameRenderer.info(), limits} once on connect; {"type": "stats", "fps",
  "render_ms", "batch", "clients", "errors", "dropped", "ignored_credits", "render_errors"} once a second;
  {"type": "error", "message", "errors", "dropped"?} for a bad or dropped message; {"type": "pong", "t"}.
- binary: a frame, `pack_message(header, payload)`: uint32 little-endian header length, the JSON header
  {"kind": "frame" | "png", "seq", "ack", "t", "seed", "frozen", "grid", "likes", "dislikes", "render_ms",
  "batch"}, then the JPEG (kind "frame") or, after a "save" control, the same frame as PNG (kind "png").

Adding a control is one entry in `controls()`: its fields (each a check and whether it is required) and its
`apply(steering, cmd)`, which runs on the render thread against a render.Steering.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any, Callable

SLIDER_RANGE = 5.0   # slider offsets in normalised-z units (each coordinate of a latent is about N(0, 1))
MAX_SPEED = 4.0      # keyframes per second
MAX_GRID = 8
MAX_ID = 2**53       # integers a browser's JSON can carry exactly

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


# ---------------------------------------------------------------------------------------------------------------
# The controls

@dataclass(frozen=True)
class Control:
    """One message type: its fields ({name: (check, required)}), what applying it does on the render thread (None:
    the server answers it itself), and why it does not apply to this model (None: it does)."""

    fields: dict[str, tuple[Check, bool]]
    apply: Callable[[Any, dict], None] | None
    unavailable: str | None = None


def controls(sliders: int, num_classes: int) -> dict[str, Control]:
    """type -> Control, for a model with `sliders` SeFa sliders and `num_classes` classes."""
    frame_cell = {"frame": (integer(0, MAX_ID), False), "cell": (integer(0, MAX_GRID**2 - 1), False)}
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
        "label": Control({"value": (integer(0, max(num_classes - 1, 0)), True)}, lambda s, c: s.set_label(c["value"]),
                         unavailable=None if num_classes else "this model has no classes; label does not apply"),
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
