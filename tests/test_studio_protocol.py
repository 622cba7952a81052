"""The studio's wire format: the binary frame messages and the control table (validation, and what each does)."""

import math

import pytest

from progan.studio.protocol import ControlError, controls, pack_message, parse_control, unpack_message
from progan.studio.targets import Conditioning


def test_frame_messages_round_trip():
    header, payload = unpack_message(pack_message({"kind": "frame", "seq": 3}, b"\xff\xd8abc"))
    assert header == {"kind": "frame", "seq": 3} and payload == b"\xff\xd8abc"


TABLE = controls(sliders=8)
CLASSES = controls(8, Conditioning("class", "class-conditional (3 classes)", ("cat", "dog", "owl")))
TEXT = controls(sliders=8, conditioning=Conditioning("text", "text-conditional (all-MiniLM-L6-v2)"))


@pytest.mark.parametrize("msg, fragment", [
    ([1, 2], "JSON object"),
    ({"value": 1}, '"type"'),
    ({"type": "explode"}, "unknown message type"),
    ({"type": "speed"}, "missing field"),
    ({"type": "speed", "value": "fast"}, "must be a number"),
    ({"type": "speed", "value": True}, "must be a number"),
    ({"type": "speed", "value": math.nan}, "finite"),
    ({"type": "speed", "value": math.inf}, "finite"),
    ({"type": "speed", "value": 10**400}, "finite"),
    ({"type": "speed", "value": -1}, "[0, 4]"),
    ({"type": "truncation", "value": 1.5}, "[0, 1]"),
    ({"type": "slider", "index": 8, "value": 0}, "slider.index"),
    ({"type": "slider", "index": 0, "value": 99}, "slider.value"),
    ({"type": "seed", "value": 1.5}, "integer"),
    ({"type": "seed", "value": -3}, "seed.value"),
    ({"type": "seed", "value": 2**40}, "seed.value"),
    ({"type": "grid", "value": 9}, "grid.value"),
    ({"type": "freeze", "value": 1}, "true or false"),
    ({"type": "like", "cell": 64}, "like.cell"),
    ({"type": "speed", "value": 1, "colour": "red"}, "unknown field"),
    ({"type": "speed", "value": 1, "id": -1}, "id"),
    ({"type": "label", "value": 0}, "unconditional: it takes no class"),
    ({"type": "classes", "weights": {"cat": 1}}, "unconditional: it takes no class"),
    ({"type": "prompt", "text": "a cat"}, "unconditional: it takes no prompt"),
    ({"type": "clear_queue"}, "unconditional: it takes no prompt"),
])
def test_parse_control_rejects_bad_values(msg, fragment):
    with pytest.raises(ControlError) as e:
        parse_control(msg, TABLE)
    assert fragment in str(e.value)


def test_parse_control_accepts_good_values():
    assert parse_control({"type": "speed", "value": 2, "id": 9}, TABLE) == {"type": "speed", "value": 2.0, "id": 9}
    assert parse_control({"type": "seed", "value": 12.0}, TABLE) == {"type": "seed", "value": 12}
    assert parse_control({"type": "like"}, TABLE) == {"type": "like"}
    assert parse_control({"type": "label", "value": 2}, CLASSES)["value"] == 2
    assert parse_control({"type": "classes", "weights": {"owl": 1, "cat": 3.0}}, CLASSES)["weights"] == {2: 1.0, 0: 3.0}
    assert parse_control({"type": "prompt", "text": "  monkeys\tsurfing  "}, TEXT) == {"type": "prompt",
                                                                                      "text": "monkeys surfing"}
    assert parse_control({"type": "prompt", "text": "moon", "queue": True}, TEXT)["queue"] is True
    assert parse_control({"type": "prompt_seconds", "value": 5}, TEXT)["value"] == 5.0


@pytest.mark.parametrize("msg, fragment", [
    ({"type": "label", "value": 3}, "label.value"),
    ({"type": "classes", "weights": {"bat": 1}}, "unknown class 'bat'"),
    ({"type": "classes", "weights": {"ca": 1}}, "did you mean cat"),
    ({"type": "classes", "weights": {"cat": 0, "dog": 0}}, "not all be zero"),
    ({"type": "classes", "weights": {"cat": -1}}, "classes.weights['cat'] must be in"),
    ({"type": "classes", "weights": {"cat": "lots"}}, "must be a number"),
    ({"type": "classes", "weights": ["cat"]}, "object of class names"),
    ({"type": "classes", "weights": {}}, "object of class names"),
    ({"type": "classes", "weights": {str(i): 1 for i in range(9)}}, "at most 8"),
    ({"type": "prompt", "text": "a cat"}, "class-conditional (3 classes): it takes no prompt"),
])
def test_class_controls_check_names_and_weights(msg, fragment):
    with pytest.raises(ControlError) as e:
        parse_control(msg, CLASSES)
    assert fragment in str(e.value)


@pytest.mark.parametrize("msg, fragment", [
    ({"type": "prompt"}, "missing field 'text'"),
    ({"type": "prompt", "text": ""}, "prompt is empty"),
    ({"type": "prompt", "text": " \t\n "}, "prompt is empty"),
    ({"type": "prompt", "text": "x" * 301}, "301 characters long; at most 300"),
    ({"type": "prompt", "text": "a cat\x00\x01"}, "control or binary character (U+0000 at position 5)"),
    ({"type": "prompt", "text": "a \x1b[31m red cat"}, "U+001B"),
    ({"type": "prompt", "text": "bad \ud800 half"}, "U+D800"),
    ({"type": "prompt", "text": "bad \ufffd bytes"}, "U+FFFD"),
    ({"type": "prompt", "text": 42}, "prompt must be text, got int"),
    ({"type": "prompt", "text": ["a", "cat"]}, "prompt must be text, got list"),
    ({"type": "prompt", "text": "a cat", "queue": "yes"}, "true or false"),
    ({"type": "prompt", "text": "a cat", "reading": "mine"}, "unknown field(s) reading"),
    ({"type": "prompt", "text": "a cat", "received": 0}, "unknown field(s) received"),
    ({"type": "prompt_seconds", "value": 0.5}, "prompt_seconds.value"),
    ({"type": "label", "value": 0}, "text-conditional (all-MiniLM-L6-v2): it takes no class"),
])
def test_prompt_controls_reject_bad_prompts(msg, fragment):
    with pytest.raises(ControlError) as e:
        parse_control(msg, TEXT)
    assert fragment in str(e.value)


def test_a_text_model_without_captions_takes_no_prompt_and_says_why():
    table = controls(8, Conditioning("text", "text-conditional (384-d)", no_prompt="no captions recorded"))
    with pytest.raises(ControlError, match="no captions recorded"):
        parse_control({"type": "prompt", "text": "a cat"}, table)


class Recorder:
    """Stands in for steering.Steering: records which method each control calls, with what."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        return lambda *args: self.calls.append((name, *args))


@pytest.mark.parametrize("msg, call", [
    ({"type": "speed", "value": 2}, ("set_speed", 2.0)),
    ({"type": "truncation", "value": 0.5}, ("set_truncation", 0.5)),
    ({"type": "freeze", "value": True}, ("set_frozen", True)),
    ({"type": "seed", "value": 12}, ("jump_to_seed", 12)),
    ({"type": "slider", "index": 3, "value": -1}, ("set_slider", 3, -1.0)),
    ({"type": "reset_sliders"}, ("reset_sliders",)),
    ({"type": "like", "frame": 5, "cell": 2}, ("like", 5, 2)),
    ({"type": "dislike"}, ("dislike", None, 0)),  # no frame: the latest; no cell: the first
    ({"type": "reset_preferences"}, ("reset_preferences",)),
    ({"type": "grid", "value": 3}, ("set_grid", 3)),
    ({"type": "shuffle"}, ("shuffle",)),
    ({"type": "save"}, ("save_png",)),
    ({"type": "label", "value": 1, "received": 2.5}, ("blend_classes", {1: 1.0}, 2.5)),
    ({"type": "classes", "weights": {"dog": 1, "owl": 1}}, ("blend_classes", {1: 1.0, 2: 1.0}, None)),
    ({"type": "prompt", "text": "moon", "reading": "R", "received": 1.0}, ("prompt", "moon", "R", False, 1.0)),
    ({"type": "prompt", "text": "moon", "reading": "R", "queue": True}, ("prompt", "moon", "R", True, None)),
    ({"type": "clear_queue"}, ("clear_queue",)),
    ({"type": "prompt_seconds", "value": 4}, ("set_prompt_seconds", 4.0)),
])
def test_each_control_applies_its_own_action(msg, call):
    table = {**CLASSES, **{k: v for k, v in TEXT.items() if k in ("prompt", "clear_queue", "prompt_seconds")}}
    steering = Recorder()
    server_side = {k: msg.pop(k) for k in ("reading", "received") if k in msg}  # what the server adds
    table[msg["type"]].apply(steering, {**parse_control(msg, table), **server_side})
    assert steering.calls == [call]


def test_ping_is_answered_by_the_server_not_applied():
    table = controls(sliders=8)
    assert table["ping"].apply is None
    assert parse_control({"type": "ping", "t": 1.5}, table) == {"type": "ping", "t": 1.5}
