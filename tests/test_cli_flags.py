"""`progan train` has a flag for every config field that cli.INTERNAL_FIELDS does not name, and each flag sets its
field. The fields are read here from the dataclasses themselves: a new field without a flag fails."""

import dataclasses
import json
import typing

import pytest

from progan import cli
from progan.config import TrainConfig
from progan.presets import preset


def all_fields() -> dict[str, tuple[dataclasses.Field, object]]:
    """'section.name' (or 'name' for TrainConfig's own) -> (field, type), for every config field."""
    fields = {}
    for f in dataclasses.fields(TrainConfig):
        kind = typing.get_type_hints(TrainConfig)[f.name]
        if dataclasses.is_dataclass(kind):
            hints = typing.get_type_hints(kind)
            fields.update({f"{f.name}.{g.name}": (g, hints[g.name]) for g in dataclasses.fields(kind)})
        else:
            fields[f.name] = (f, kind)
    return fields


FIELDS = all_fields()
FLAGGED = [path for path in FIELDS if path not in cli.INTERNAL_FIELDS]


def expected_flag(path: str) -> str:
    return cli.FLAG_NAMES.get(path, "--" + path.rpartition(".")[2].replace("_", "-"))


def train_options() -> set[str]:
    sub = cli.build_parser()._subparsers._group_actions[0]
    return {s for action in sub.choices["train"]._actions for s in action.option_strings}


def test_every_field_has_a_flag_or_is_internal():
    options = train_options()
    missing = [f"{path} (expected {expected_flag(path)})" for path in FLAGGED if expected_flag(path) not in options]
    assert not missing, ("config fields without a `progan train` flag: give them option(default, help) in "
                         f"config.py, or list them in cli.INTERNAL_FIELDS: {', '.join(missing)}")
    assert set(cli.INTERNAL_FIELDS) <= set(FIELDS), "cli.INTERNAL_FIELDS names a field that does not exist"
    assert set(cli.FLAG_NAMES) <= set(FLAGGED), "cli.FLAG_NAMES renames a field that has no flag"
    assert [flag.path for flag in cli.config_flags()] == FLAGGED
    for path in FLAGGED:
        assert FIELDS[path][0].metadata.get("help"), f"{path}: a flag needs help text (option(default, help))"


def example(path: str, kind, current) -> tuple[list[str], object]:
    """Command-line words for the flag of `path` and the value they should set, different from `current`."""
    flag = expected_flag(path)
    special = {"augment": (["color,cutout"], "color,cutout"), "metrics": (["swd,msssim"], ["swd", "msssim"])}
    if path in special:
        words, value = special[path]
        return [flag, *words], value
    choices = FIELDS[path][0].metadata.get("choices")
    if choices:
        other = next(c for c in choices if c != current)
        return [flag, other], other
    if kind is bool:
        return ([f"--no-{flag[2:]}"] if current else [flag]), not current
    if kind is int:
        return [flag, str(current + 3)], current + 3
    if kind in (float, float | None):
        value = (current or 0.0) + 0.25
        return [flag, repr(value)], value
    if kind == tuple[float, float]:
        return [flag, "0.5", "0.75"], (0.5, 0.75)
    if kind == dict[int, int]:
        return [flag, "4:7,8:5"], {4: 7, 8: 5}
    if kind in (dict[int, float], float | dict[int, float]):
        return [flag, "4:0.5,8:0.25"], {4: 0.5, 8: 0.25}
    raise AssertionError(f"{path}: no example for a field of type {kind}; add one here")


def resumed_config(tmp_path, words: list[str]) -> TrainConfig:
    """The config `progan train --resume RUN WORDS` would train with (the resume path needs no dataset)."""
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    (run / "config.json").write_text(json.dumps(preset("tiny", 8).to_dict()))
    return cli.train_config_from_args(cli.build_parser().parse_args(["train", "--resume", str(run), *words]))


def holder(cfg: TrainConfig, path: str):
    """(the object holding the field at `path`, the field's name)."""
    section, _, name = path.rpartition(".")
    return (getattr(cfg, section) if section else cfg), name


@pytest.mark.parametrize("path", FLAGGED)
def test_flag_sets_its_field_and_nothing_else(tmp_path, path):
    expected = resumed_config(tmp_path, [])
    obj, name = holder(expected, path)
    words, value = example(path, FIELDS[path][1], getattr(obj, name))
    assert getattr(obj, name) != value
    setattr(obj, name, value)
    assert resumed_config(tmp_path, words) == expected


def test_flags_keep_their_spellings(tmp_path):
    cfg = resumed_config(tmp_path, ["--augment", "none", "--stabilize-kimg", "3", "--batch", "32", "--lr", "0.002"])
    assert cfg.augment == "" and cfg.schedule.stabilize_kimg == 3.0
    assert cfg.schedule.batch == {4: 32} and cfg.schedule.lr == {4: 0.002}
    assert resumed_config(tmp_path, []).minutes is None  # a time bound belongs to one invocation
