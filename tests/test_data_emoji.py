"""The built-in emoji dataset rendered from Noto Color Emoji."""

import pytest

from progan.data.dataset import PreparedDataset
from progan.data.emoji import (
    build_emoji_dataset,
    cldr_name,
    draws_one_glyph,
    list_emoji,
    load_font,
)


@pytest.fixture(scope="module")
def font():
    return load_font()


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


def test_background_and_font_errors(tmp_path):
    m = build_emoji_dataset(tmp_path / "bg", 32, limit=3, background=(0, 0, 0), text_encoder=None)
    assert m["background"] == [0, 0, 0]
    border = PreparedDataset(tmp_path / "bg").level(32)[:, :, [0, -1]][..., [0, -1]]
    assert border.max() <= 8  # the margin is background (up to resampling ringing)
    with pytest.raises(FileNotFoundError, match="apt-get install fonts-noto-color-emoji"):
        build_emoji_dataset(tmp_path / "x", 16, font_path=tmp_path / "missing.ttf")


def test_full_list_has_names_and_sequences(font):
    good, bad = list_emoji(font)
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
