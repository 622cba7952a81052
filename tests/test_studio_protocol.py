"""The studio's wire format: the binary frame messages and the control table (validation, and what each does)."""

import math

import pytest

from progan.studio.protocol import ControlError, controls, pack_message, parse_control, unpack_message


def test_frame_messages_round_trip():
    header, payload = unpack_message(pack_message({"kind": "frame", "seq": 3}, b"\xff\xd8abc"))
    assert header == {"kind": "frame", "seq": 3} and payload == b"\xff\xd8abc"


TABLE = controls(sliders=8, num_classes=0)


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
    ({"type": "label", "value": 0}, "no classes"),
])
def test_parse_control_rejects_bad_values(msg, fragment):
    with pytest.raises(ControlError) as e:
        parse_control(msg, TABLE)
    assert fragment in str(e.value)


def test_parse_control_accepts_good_values():
    assert parse_control({"type": "speed", "value": 2, "id": 9}, TABLE) == {"type": "speed", "value": 2.0, "id": 9}
    assert parse_control({"type": "seed", "value": 12.0}, TABLE) == {"type": "seed", "value": 12}
    assert parse_control({"type": "like"}, TABLE) == {"type": "like"}
    assert parse_control({"type": "label", "value": 2}, controls(8, num_classes=3))["value"] == 2


class Recorder:
    """Stands in for render.Steering: records which method each control calls, with what."""

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
    ({"type": "label", "value": 1}, ("set_label", 1)),
])
def test_each_control_applies_its_own_action(msg, call):
    table = controls(sliders=8, num_classes=2)
    steering = Recorder()
    table[msg["type"]].apply(steering, parse_control(msg, table))
    assert steering.calls == [call]


def test_ping_is_answered_by_the_server_not_applied():
    table = controls(sliders=8, num_classes=0)
    assert table["ping"].apply is None
    assert parse_control({"type": "ping", "t": 1.5}, table) == {"type": "ping", "t": 1.5}
