"""Setlists: the line format and its errors (each naming the line), playing one in a loop through the prompt queue
with morphs between entries, over the WebSocket, and the same show offline (`progan generate --setlist`)."""

import asyncio
import json
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import websockets
from PIL import Image

from progan.cli import main as progan
from progan.config import ModelConfig
from progan.generate import latents_from_seeds, normalize
from progan.model_io import load_generator
from progan.networks import Generator
from progan.studio.frames import encode_jpeg
from progan.studio.protocol import unpack_message
from progan.studio.renderer import FrameRenderer
from progan.studio.server import BackgroundServer, Studio
from progan.studio.sessions import RenderLoop, Session
from progan.studio.setlist import SetlistError, parse_setlist, read_setlist, resolve, total_seconds
from progan.studio.show import ShowSettings, show_frames
from tests.studio_helpers import class_generator, export_random_generator

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHOW = """# a show: seconds, kind, what
2 class cat

3s   class dog=0.5, owl=0.5
   # an indented comment
2 seed 5
"""


@pytest.fixture(scope="module")
def class_renderer():
    return FrameRenderer(class_generator(), mean_samples=64)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return export_random_generator(tmp_path_factory.mktemp("setlist"), resolution=16, latent_size=32,
                                   fmap_base=256, fmap_max=32)


@pytest.fixture(scope="module")
def G(model_dir):
    return load_generator(model_dir)


# -- the format ---------------------------------------------------------------------------------------------------

def test_the_line_format_and_what_is_read_from_it(class_renderer):
    entries = parse_setlist(SHOW, "show.txt")
    assert [(e.line, e.seconds, e.kind, e.value) for e in entries] == [
        (2, 2.0, "class", {"cat": 1.0}), (4, 3.0, "class", {"dog": 0.5, "owl": 0.5}), (6, 2.0, "seed", 5)]
    assert total_seconds(entries) == 7.0
    targets = resolve(entries, class_renderer.targets, read_prompt=None, where="show.txt")
    assert [t.as_json() for t in targets] == [
        {"text": "cat", "reading": "cat", "source": "class", "seconds": 2.0},
        {"text": "owl 0.50, dog 0.50", "reading": "owl 0.50, dog 0.50", "source": "class", "seconds": 3.0},
        {"text": "seed 5", "reading": "the sample of seed 5", "source": "seed", "seconds": 2.0}]
    assert torch.allclose(targets[1].row, torch.tensor([0.0, 0.5, 0.5]))
    assert targets[2].row is None and targets[2].seed == 5


@pytest.mark.parametrize("line, message", [
    ("2 klass cat", "bad.txt line 4: unknown kind 'klass'; the kinds are prompt, class, seed"),
    ("1 class cat", "bad.txt line 4: an entry plays 2 to 600 seconds, not 1"),
    ("soon class cat", "bad.txt line 4: 'soon' is not a number of seconds"),
    ("nan class cat", "bad.txt line 4: 'nan' is not a number of seconds"),
    ("2 seed", "bad.txt line 4: it needs how long it plays, a kind (prompt, class or seed) and what to show"),
    ("2 seed 4.5", "bad.txt line 4: a seed is a whole number, not '4.5'"),
    ("2 seed 99999999999", "bad.txt line 4: a seed is in [0, 2^32)"),
    ("2 class cat=lots", "bad.txt line 4: the weight of 'cat' is not a number: 'lots'"),
    ("2 class ,", "bad.txt line 4: name one class or more"),
    ("2 prompt " + "x" * 400, "bad.txt line 4: prompt is 400 characters long"),
])
def test_a_corrupt_line_is_refused_with_its_number(line, message):
    with pytest.raises(SetlistError) as e:
        parse_setlist(f"# fine so far\n2 seed 1\n\n{line}\n2 seed 3\n", "bad.txt")
    assert str(e.value).startswith(message)
    assert "a line is SECONDS KIND WHAT" in str(e.value)  # and how a line looks


def test_lines_the_model_cannot_play_are_named(class_renderer, G, tmp_path):
    with pytest.raises(SetlistError, match=r"^show.txt line 2: unknown class 'dgo'$"):
        resolve(parse_setlist("2 class cat\n2 class dgo\n"), class_renderer.targets, None, "show.txt")
    with pytest.raises(SetlistError, match=r"^show.txt line 1: this model is class-conditional .*: it takes no prompt"):
        resolve(parse_setlist("8 prompt a red heart\n"), class_renderer.targets, None, "show.txt")
    plain = FrameRenderer(G, mean_samples=64)
    with pytest.raises(SetlistError, match=r"^show.txt line 1: this model is unconditional: it takes no class"):
        resolve(parse_setlist("8 class cat\n"), plain.targets, None, "show.txt")
    assert resolve(parse_setlist("8 seed 1\n"), plain.targets, None)[0].seed == 1  # seeds play on any model
    with pytest.raises(SetlistError, match="empty.txt has no entries"):
        parse_setlist("# nothing\n\n", "empty.txt")
    with pytest.raises(SetlistError, match="at most 256 entries"):
        parse_setlist("2 seed 1\n" * 300)
    (tmp_path / "latin1.txt").write_bytes("8 class caf\xe9\n".encode("latin-1"))
    with pytest.raises(SetlistError, match=r"latin1.txt is not UTF-8 text \(byte 11\)"):
        read_setlist(tmp_path / "latin1.txt")
    with pytest.raises(SetlistError, match="cannot read the setlist .*missing.txt"):
        read_setlist(tmp_path / "missing.txt")


def test_prompt_entries_are_read_by_the_model(tmp_path):
    """A text model's prompt entries: each read once (here by a stand-in for the encoder), a bad one named."""
    torch.manual_seed(0)
    cfg = ModelConfig(resolution=16, latent_size=32, fmap_base=256, fmap_max=32, text_size=8, ca_size=4)
    G = Generator(cfg).eval().requires_grad_(False)
    G.meta = {"kimg": 1.0, "conditioning": {"kind": "text", "encoder": {"name": "stand-in"}, "captions": ["sun", "moon"],
                                            "caption_vectors": torch.eye(2, 8)}}
    targets = FrameRenderer(G, mean_samples=16).targets
    read = []

    def reading(text):
        read.append(text)
        if text == "nothing at all":
            from progan.conditioning.prompts import PromptError
            raise PromptError("close to nothing in the data")
        return SimpleNamespace(condition=torch.full((8,), float(len(read))), describe=lambda: f"{text} 1.00",
                               indices=torch.tensor([0]), weights=torch.ones(1))

    out = resolve(parse_setlist("4 prompt a sun\n# and then\n6 prompt the moon\n"), targets, reading, "s.txt")
    assert read == ["a sun", "the moon"]
    assert [(t.text, t.reading, t.source, t.seconds) for t in out] == [("a sun", "a sun 1.00", "prompt", 4.0),
                                                                       ("the moon", "the moon 1.00", "prompt", 6.0)]
    with pytest.raises(SetlistError, match=r"^s.txt line 2: prompt 'nothing at all': close to nothing in the data"):
        resolve(parse_setlist("4 prompt a sun\n5 prompt nothing at all\n"), targets, reading, "s.txt")


# -- playing ------------------------------------------------------------------------------------------------------

def test_a_setlist_plays_in_a_loop_with_morphs_through_the_queue(class_renderer):
    r = class_renderer
    notices, headers = [], []
    loop = RenderLoop(r)
    session = Session(r, lambda h, jpeg, png: headers.append(h), seed=0, notice=notices.append)
    st = session.steering
    st.set_speed(0.0)  # the walk holds still: only the setlist moves the picture
    st.load_setlist(resolve(parse_setlist(SHOW), r.targets, None))

    def at(t):
        loop.render_pass([session], t)
        return st.target.text, headers[-1]["morph"]

    assert at(0.0) == ("cat", 1.0)  # the first entry at once
    state = [n for n in notices if n["type"] == "condition"][-1]
    assert state["now"]["seconds"] == 2.0 and [e["text"] for e in state["next"]] == ["owl 0.50, dog 0.50", "seed 5"]
    assert at(1.9) == ("cat", 1.0)
    text, morph = at(2.05)  # cat has played its 2 s: the blend starts, morphing (1.5 s: half its 3 s)
    assert text == "owl 0.50, dog 0.50" and morph == 0.0
    assert 0.5 < at(2.8)[1] < 1.0
    assert at(3.6)[1] == 1.0
    assert torch.allclose(st.morph.shown, torch.tensor([0.0, 0.5, 0.5]))
    before = session.last_frame[0].copy()
    at(5.1)  # the seed entry: the condition stays, the latents glide to seed 5's
    assert st.target.text == "seed 5" and st.shift.active
    assert torch.allclose(st.morph.shown, torch.tensor([0.0, 0.5, 0.5]))
    at(5.4)
    gliding = session.last_frame[0].copy()
    at(6.2)  # the glide has ended (1 s): the frame is seed 5's sample
    assert not st.shift.active
    z = normalize(latents_from_seeds([5], r.latent_size))  # the studio's units (a class row is joined to z)
    seed5 = r.render(z, torch.ones(1), st.morph.shown.view(1, -1))[0].astype(int)
    assert np.abs(session.last_frame[0] - seed5).max() <= 1  # (rounding: the stream normalises z once more)
    assert 1 < np.abs(gliding - seed5).mean() < np.abs(before - seed5).mean()
    assert at(7.2)[0] == "cat"  # round again
    assert [n["now"]["text"] for n in notices if n["type"] == "condition"] == [
        "cat", "owl 0.50, dog 0.50", "seed 5", "cat"]

    st.next_entry(7.5)  # "next": the blend at once, cat back to the end
    assert at(7.6)[0] == "owl 0.50, dog 0.50" and [t.text for t in st.queue] == ["seed 5", "cat"]
    st.clear_queue()  # the loop ends; what plays goes on
    for t in (12.0, 20.0):
        assert at(t)[0] == "owl 0.50, dog 0.50"
    assert [n for n in notices if n["type"] == "condition"][-1]["next"] == []


def ws_url(srv):
    return srv.url.replace("http://", "ws://") + "ws"


async def next_text(ws, kind, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        msg = await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic()))
        if isinstance(msg, str):
            obj = json.loads(msg)
            if obj["type"] == kind:
                return obj
        else:
            await ws.send('{"type":"credit"}')


def test_setlists_over_the_websocket():
    """A studio started with a setlist plays it to every viewer; the page's "setlist" control loads another (a bad
    line answered with the file and line), "next" skips on."""
    studio = Studio(class_generator(), seed=0, setlist=parse_setlist(SHOW, "show.txt"), setlist_name="show.txt")
    with BackgroundServer(studio) as srv:
        async def main():
            async with websockets.connect(ws_url(srv)) as ws:
                state = await next_text(ws, "condition")
                assert state["now"] == {"text": "cat", "reading": "cat", "source": "class", "seconds": 2.0}
                assert [e["seconds"] for e in state["next"]] == [3.0, 2.0]
                await ws.send(json.dumps({"type": "setlist", "text": "2 class owl\n3 class cot\n", "name": "b.txt"}))
                err = await next_text(ws, "error")
                assert err["about"] == "setlist" and err["message"] == "b.txt line 2: unknown class 'cot'"
                await ws.send(json.dumps({"type": "setlist", "text": "2 class owl\n2 class cat\n# end\n"}))
                state = await next_text(ws, "condition")
                assert state["now"]["text"] == "owl" and [e["text"] for e in state["next"]] == ["cat"]
                await ws.send(json.dumps({"type": "next"}))
                state = await next_text(ws, "condition")
                assert state["now"]["text"] == "cat" and [e["text"] for e in state["next"]] == ["owl"]
                await ws.send(json.dumps({"type": "setlist", "text": "2 seed 1\n" * 2000}))
                err = await next_text(ws, "error")
                assert "too large" in err["message"] or "at most 3500" in err["message"]
        asyncio.run(main())
    with pytest.raises(SetlistError, match="show.txt line 1: this model is class-conditional"):
        Studio(class_generator(), setlist=parse_setlist("8 prompt a sun\n"), setlist_name="show.txt")


def test_the_offline_setlist_is_the_studios(G, model_dir, tmp_path, capsys):
    """Seeds with the walk held still: once each glide has ended, the studio's frame and the offline render's are
    both the seed's sample, byte for byte; `progan generate --setlist` renders the round; a bad file is named."""
    (tmp_path / "seeds.txt").write_text("# two liked samples\n2 seed 3\n2 seed 11\n")
    entries = read_setlist(tmp_path / "seeds.txt")
    offline = FrameRenderer(G)
    settings = ShowSettings(seconds=6, fps=10, size=(16, 16), speed=0.0)
    frames = list(show_frames(offline, settings, setlist=resolve(entries, offline.targets, None)))
    assert len(frames) == 60
    sample = {3: frames[19], 11: frames[39]}
    for s, frame in sample.items():  # the seed's own sample (up to rounding: the stream normalises z once more)
        plain = offline.render(latents_from_seeds([s], G.latent_size), torch.ones(1))[0]
        assert np.abs(frame.astype(int) - plain).max() <= 1
    for k, seed in [(0, 3), (31, 11), (51, 3)]:  # the glides take 1 s from 2 s and from 4 s
        assert np.array_equal(frames[k], sample[seed]), k
    assert not np.array_equal(frames[25], sample[3]) and not np.array_equal(frames[25], sample[11])  # gliding

    studio = Studio(G, seed=0, setlist=entries, setlist_name="seeds.txt")
    with BackgroundServer(studio) as srv:
        async def main():
            async with websockets.connect(ws_url(srv)) as ws:
                await ws.send(json.dumps({"type": "speed", "value": 0.0}))
                seen = set()
                deadline = time.monotonic() + 20
                while seen != {3, 11} and time.monotonic() < deadline:
                    msg = await ws.recv()
                    if isinstance(msg, str):
                        continue
                    header, jpeg = unpack_message(msg)
                    await ws.send('{"type":"credit"}')
                    for seed in (3, 11):
                        if jpeg == encode_jpeg(sample[seed]):
                            seen.add(seed)
                assert seen == {3, 11}
        asyncio.run(main())

    gif = tmp_path / "show.gif"
    assert progan(["generate", str(model_dir), "--setlist", str(tmp_path / "seeds.txt"), "--speed", "0", "--fps",
                   "5", "--size", "16x16", "--video", str(gif), "--device", "cpu"]) == 0
    assert "setlist of 2 entries (4 s a round): 20 frames" in capsys.readouterr().out  # one round by default
    with Image.open(gif) as im:  # (Pillow merges repeated frames into longer ones: the walk holds at each seed)
        total = 0
        for k in range(im.n_frames):
            im.seek(k)
            total += im.info["duration"]
        assert im.n_frames >= 4 and total == 4000
    (tmp_path / "bad.txt").write_text("2 seed 3\n2 sead 11\n")
    assert progan(["generate", str(model_dir), "--setlist", str(tmp_path / "bad.txt"), "--video", str(gif)]) == 2
    assert "bad.txt line 2: unknown kind 'sead'" in capsys.readouterr().err
    assert progan(["studio", str(model_dir), "--setlist", str(tmp_path / "bad.txt"), "--port", "0"]) == 2
    assert "bad.txt line 2: unknown kind 'sead'" in capsys.readouterr().err
    (tmp_path / "classes.txt").write_text("2 seed 3\n5 class cat\n")
    assert progan(["generate", str(model_dir), "--setlist", str(tmp_path / "classes.txt"), "--video", str(gif),
                   "--device", "cpu"]) == 2
    assert "classes.txt line 2: this model is unconditional: it takes no class" in capsys.readouterr().err
