"""The built-in emoji dataset rendered from Noto Color Emoji."""

import json

import pytest

from progan.data import emoji as emoji_module
from progan.data.dataset import DatasetError, PreparedDataset
from progan.data.emoji import (
    build_emoji_dataset,
    cldr_name,
    draws_one_glyph,
    keywords_of,
    list_emoji,
    load_emoji_groups,
    load_emoji_keywords,
    load_font,
)


@pytest.fixture(scope="module")
def font():
    return load_font()


@pytest.fixture(scope="module")
def full_list(font):
    return list_emoji(font)


def test_small_build_is_deterministic_and_colourful(tmp_path):
    m1 = build_emoji_dataset(tmp_path / "a", 16, limit=40, text_encoder=None)
    m2 = build_emoji_dataset(tmp_path / "b", 16, limit=40, text_encoder=None)
    assert m1["sha256"] == m2["sha256"] and m1["captions"] == m2["captions"]
    assert m1["count"] == 40 and m1["resolution"] == 16 and m1["labels"] is None
    ds = PreparedDataset(tmp_path / "a", verify=True)
    assert ds.captions[:3] == ["keycap: #", "keycap: *", "keycap: 0"]  # sorted by code point
    assert "copyright" in ds.captions
    top = ds.level(16).astype(int)
    assert (top[:, :, 0, 0] == 255).all()  # white background in the margin
    ink = (255 - top.min(axis=1)) > 40  # [N, 16, 16]: pixels visibly off the white background
    assert (ink.mean(axis=(1, 2)) > 0.1).all()  # no blank images
    saturation = top.max(axis=1) - top.min(axis=1)
    assert ((saturation > 80).mean(axis=(1, 2)) > 0.02).mean() > 0.2  # many have vivid colour
    assert len({img.tobytes() for img in top}) == 40  # no two alike
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    hash_words = manifest["keywords"][0]  # keycap: #, alias 'hash'
    assert "octothorpe" in hash_words and "hashtag" in hash_words and "hash" not in hash_words
    assert all(isinstance(w, list) for w in manifest["keywords"]) and len(manifest["keywords"]) == 40
    description = ds.column("descriptions")[0]
    assert description.startswith("keycap: # (hash); keywords: ") and "octothorpe" in description
    assert set(ds.columns) == {"descriptions", "keywords", "sequences", "groups", "subgroups", "variant_of",
                              "caption_variants"}
    assert ds.column("caption_variants")[0][:3] == ["keycap: #", "a keycap: #", "keycap: # emoji"]


def test_background_and_font_errors(tmp_path):
    m = build_emoji_dataset(tmp_path / "bg", 32, limit=3, background=(0, 0, 0), text_encoder=None)
    assert m["background"] == [0, 0, 0]
    border = PreparedDataset(tmp_path / "bg").level(32)[:, :, [0, -1]][..., [0, -1]]
    assert border.max() <= 8  # the margin is background (up to resampling ringing)
    with pytest.raises(FileNotFoundError, match="apt-get install fonts-noto-color-emoji"):
        build_emoji_dataset(tmp_path / "x", 16, font_path=tmp_path / "missing.ttf")


def test_full_list_has_names_and_sequences(full_list):
    good, bad = full_list
    names = {e.seq: e.name for e in good}
    assert len(good) > 3000
    assert names["\U0001f600"] == "grinning face"
    assert names["\U0001f468\u200d\U0001f469\u200d\U0001f467"].startswith("family")  # ZWJ sequence
    assert names["\U0001f1eb\U0001f1f7"] == "flag: France"
    assert names["\U0001f44d\U0001f3fd"] == "thumbs up: medium skin tone"
    assert [e.seq for e in good] == sorted(e.seq for e in good)
    assert not set(names) & {e.seq for e in bad}


def test_single_glyph_check(font):
    assert draws_one_glyph(font, "\U0001f600")
    assert draws_one_glyph(font, "\U0001f469\u200d\U0001f52c")  # woman scientist: a ligature
    assert not draws_one_glyph(font, "\U0001f600\U0001f600")
    assert not draws_one_glyph(font, "\U0001f600\u200d\U0001f600")  # a ZWJ pair the font cannot join
    assert not draws_one_glyph(font, "A")  # not in the font: empty glyph


def test_cldr_names():
    assert cldr_name("\U0001f600", ":grinning_face:") == "grinning face"
    assert cldr_name("1\ufe0f\u20e3", ":keycap_1:") == "keycap: 1"
    assert cldr_name("\U0001f1fa\U0001f1f8", ":United_States:") == "flag: United States"
    hands = "\U0001faf1\U0001f3fb\u200d\U0001faf2\U0001f3ff"
    name = cldr_name(hands, ":handshake_light_skin_tone_dark_skin_tone:")
    assert name == "handshake: light skin tone, dark skin tone"
    same = "\U0001f9d1\U0001f3fd\u200d\U0001f91d\u200d\U0001f9d1\U0001f3fd"
    assert cldr_name(same, ":people_holding_hands_medium_skin_tone:") == "people holding hands: medium skin tone"


def test_keywords_of_well_known_emoji(full_list):
    by_seq = {e.seq: e for e in full_list[0]}
    heart, grinning = by_seq["\u2764\ufe0f"], by_seq["\U0001f600"]
    assert heart.name == "red heart" and {"love", "valentines"} <= set(heart.keywords)
    assert {"smile", "happy", "joy", "grin"} <= set(grinning.keywords)
    assert "grinning face" not in grinning.keywords  # emojilib's first keyword repeats the name
    assert grinning.description() == (
        "grinning face (grinning); keywords: face, smile, happy, joy, :D, grin, smiley"
    )  # no groups given to list_emoji
    big_eyes = by_seq["\U0001f603"].keywords
    assert "haha" in big_eyes and ":D" in big_eyes and ":)" not in big_eyes  # no keyword without a letter
    france = by_seq["\U0001f1eb\U0001f1f7"].keywords
    assert "french" in france and "flag france" not in france and "flag" not in france
    thumbs, tone = by_seq["\U0001f44d"], by_seq["\U0001f44d\U0001f3fd"]
    assert set(thumbs.keywords) <= set(tone.keywords) and "approve" in tone.keywords  # a skin tone takes its base's
    mixed = by_seq["\U0001faf1\U0001f3fb\u200d\U0001faf2\U0001f3ff"]  # handshake, two tones: a different base
    assert mixed.keywords == by_seq["\U0001f91d"].keywords and "agreement" in mixed.keywords
    assert not any("_" in w for e in full_list[0] for w in e.keywords)
    assert sum(bool(e.keywords) for e in full_list[0]) > 0.95 * len(full_list[0])


def test_keywords_match_with_or_without_variation_selector(tmp_path):
    path = tmp_path / "kw.json"
    path.write_text(json.dumps({"\u2764": ["red_heart", "love"], "\u263a\ufe0f": ["smiling_face", "blush"]}))
    table = load_emoji_keywords(path)
    assert keywords_of("\u2764\ufe0f", "red heart", table) == ["red_heart", "love"]  # file lacks U+FE0F
    assert keywords_of("\u263a", "smiling face", table) == ["smiling_face", "blush"]  # file has it
    assert keywords_of("\U0001f600", "grinning face", table) == []


def test_missing_or_broken_keyword_file(tmp_path, monkeypatch):
    with pytest.raises(DatasetError, match="absent.json not found"):
        load_emoji_keywords(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    for text, message in [
        ("{not json", "bad.json is not valid JSON"),
        ('["grinning_face"]', "bad.json must be a non-empty JSON object"),
        ('{"\\ud83d\\ude00": "smile"}', "bad.json: the keywords of .* must be a list of strings"),
        ('{"\\u2764": ["a"], "\\u2764\\ufe0f": ["b"]}', "listed twice"),
    ]:
        bad.write_text(text)
        with pytest.raises(DatasetError, match=message):
            load_emoji_keywords(bad)
    monkeypatch.setattr(emoji_module, "DEFAULT_KEYWORDS", tmp_path / "gone.json")
    with pytest.raises(DatasetError, match="gone.json not found"):
        build_emoji_dataset(tmp_path / "x", 8, limit=2, text_encoder=None)


def test_skin_tones_left_out_and_groups_as_class_labels(tmp_path):
    # The first 70 drawable emoji in code-point order: symbols, places, objects, and "index pointing up" with its
    # five skin tones (the first toned emoji).
    full = build_emoji_dataset(tmp_path / "full", 8, limit=70, labels_from_groups=True, text_encoder=None)
    plain = build_emoji_dataset(tmp_path / "plain", 8, limit=70, skin_tones=False, text_encoder=None)
    toned = [c for c in full["captions"] if "skin tone" in c]
    assert len(toned) == 5 and "index pointing up" in plain["captions"]
    assert plain["count"] == full["count"] - 5 and not any("skin tone" in c for c in plain["captions"])
    assert plain["labels"] is None
    report = json.loads((tmp_path / "plain" / "report.json").read_text())
    left_out = {s["file"].split("(", 1)[1][:-1] for s in report["skipped"] if "skin-tone variant" in s["reason"]}
    assert left_out == set(toned)
    # The skin-tone variants name the emoji they recolour: one thing for the text model's mismatched pairs.
    variants = {full["variant_of"][i] for i, c in enumerate(full["captions"]) if "index pointing up" in c}
    assert variants == {"index pointing up"}

    # Labels: the groups present, in emoji-test.txt's order, each image labelled with its own group
    ds = PreparedDataset(tmp_path / "full", verify=True)
    file_order = list(dict.fromkeys(g for g, _ in load_emoji_groups().values()))
    assert full["label_names"] == [g for g in file_order if g in set(full["groups"])]
    assert {"People & Body", "Symbols"} <= set(full["label_names"]) and ds.num_classes == len(full["label_names"])
    assert [full["label_names"][y] for y in full["labels"]] == full["groups"]


def test_emoji_only_options_are_refused_elsewhere(tmp_path, capsys):
    from progan.cli import main

    (tmp_path / "src").mkdir()
    assert main(["dataset", "--source", str(tmp_path / "src"), "--out", str(tmp_path / "a"), "--no-skin-tones"]) == 2
    assert "--no-skin-tones: only for --builtin emoji" in capsys.readouterr().err
    assert main(["dataset", "--builtin", "emoji", "--out", str(tmp_path / "b"), "--labels-from-folders"]) == 2
    assert "--labels-from-groups" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_only_groups_keeps_those_groups_and_names_the_valid_ones(tmp_path, capsys):
    from progan.cli import main

    full = build_emoji_dataset(tmp_path / "full", 8, limit=70, text_encoder=None)
    wanted = ["Symbols", "Travel & Places"]
    some = build_emoji_dataset(tmp_path / "some", 8, limit=70, only_groups=wanted, text_encoder=None)
    assert set(some["groups"]) == set(wanted)
    assert some["count"] == sum(g in wanted for g in full["groups"]) < full["count"]
    report = json.loads((tmp_path / "some" / "report.json").read_text())
    assert sum("not in only_groups" in s["reason"] for s in report["skipped"]) == full["count"] - some["count"]

    # a subgroup of another group in the same list: the names differ in form (food-fruit, Food & Drink)
    other = next(sub for g, sub in zip(full["groups"], full["subgroups"]) if g not in wanted)
    mixed = build_emoji_dataset(tmp_path / "mixed", 8, limit=70, only_groups=["Symbols", other], text_encoder=None)
    pairs = list(zip(full["groups"], full["subgroups"]))
    assert mixed["count"] == sum(g == "Symbols" or sub == other for g, sub in pairs)
    assert set(mixed["subgroups"]) == {sub for g, sub in pairs if g == "Symbols"} | {other}

    assert main(["dataset", "--builtin", "emoji", "--out", str(tmp_path / "bad"), "--resolution", "8",
                 "--groups", "Symbols,Smileys"]) == 2
    err = capsys.readouterr().err
    assert "unknown Unicode group(s) ['Smileys']" in err and "Smileys & Emotion" in err and "subgroups" in err
    assert main(["dataset", "--builtin", "emoji", "--out", str(tmp_path / "bad"), "--groups", " , "]) == 2
    assert "only_groups: no group given" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
