"""The morph reel and the music in a real browser (Playwright driving Debian's chromium, as
tests/test_studio_browser.py): a setlist loaded through the page and its bad lines, a song picked as a file and the
microphone measured in the page, their hits and loudness driving the stream, unreadable audio and a refused
microphone said on the page, the display's crossfade at the screen's rate."""

import json
import time

import pytest
import torch
from playwright import sync_api

from progan.config import ModelConfig
from progan.networks import Generator
from progan.studio.server import BackgroundServer, Studio
from tests.studio_helpers import write_clicks

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--autoplay-policy=no-user-gesture-required", "--use-fake-device-for-media-stream"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def clicks(tmp_path_factory):
    return write_clicks(tmp_path_factory.mktemp("audio") / "clicks.wav", seconds=4.0, rate=44100)


@pytest.fixture(scope="module")
def server():
    torch.manual_seed(0)
    G = Generator(ModelConfig(resolution=16, latent_size=32, fmap_base=256, fmap_max=32, num_classes=3))
    G = G.eval().requires_grad_(False)
    G.meta = {"kimg": 1.0, "source": "random weights",
              "conditioning": {"kind": "class", "label_names": ["cat", "dog", "owl"]}}
    with BackgroundServer(Studio(G, seed=0)) as srv:
        yield srv


class Browser:
    """One chromium with a page on the studio; `sent`: the WebSocket messages the page sent; `requests`: every URL
    it asked for."""

    def __init__(self, p, url, args=ARGS, permissions=None):
        self.browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
        self.context = self.browser.new_context(viewport={"width": 1100, "height": 800}, permissions=permissions)
        self.page = self.context.new_page()
        self.problems, self.sent, self.requests = [], [], []
        self.page.on("pageerror", lambda e: self.problems.append(str(e)))
        self.page.on("console", lambda m: self.problems.append(m.text) if m.type == "error" else None)
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("websocket", lambda ws: ws.on("framesent", lambda payload: self.sent.append(payload)))
        self.page.goto(url)
        self.page.wait_for_function("() => Number(document.body.dataset.frames || 0) > 3", timeout=20000)

    def data(self, key):
        return self.page.evaluate(f"document.body.dataset.{key}")

    def note(self, id):
        return self.page.locator(f"#{id}").inner_text()

    def close(self):
        self.browser.close()
        assert not self.problems, self.problems


# In the page: the motion's rate (phase units a second, from the frame headers) on every animation frame for `ms`.
WATCH_RATE = """(ms) => new Promise((done) => {
  const rates = [], end = performance.now() + ms;
  const watch = (t) => { rates.push(Number(document.body.dataset.rate)); if (t < end) requestAnimationFrame(watch);
                         else done(rates); };
  requestAnimationFrame(watch);
})"""


def the_session(srv):
    with srv.studio.render_loop.lock:
        sessions = list(srv.studio.render_loop.sessions)
    assert len(sessions) == 1
    return sessions[0]


def test_a_setlist_loaded_in_the_page_plays_in_a_loop(server, tmp_path):
    show = tmp_path / "show.txt"
    show.write_text("# the reel\n2 class cat\n\n2 class dog=0.5, owl=0.5\n2 seed 4\n")
    with sync_api.sync_playwright() as p:
        b = Browser(p, server.url)
        page = b.page
        page.eval_on_selector("#speed", "el => { el.value = 0; el.dispatchEvent(new Event('input')); }")
        page.set_input_files("#setlist-file", str(show))
        page.wait_for_function("() => document.getElementById('now-text').textContent === 'cat (2 s)'",
                               timeout=10000)
        assert b.note("setlist-note") == "playing show.txt in a loop: 3 entries"
        assert b.note("queue-label") == "next (the setlist loops)"
        assert page.locator("#next-list li").all_inner_texts() == [
            "owl 0.50, dog 0.50 (2 s)\nowl 0.50, dog 0.50", "seed 4 (2 s)\nthe sample of seed 4"]
        cat = page.evaluate("document.getElementById('view').toDataURL()")
        page.wait_for_function("() => document.getElementById('now-text').textContent.startsWith('owl 0.50')",
                               timeout=10000)  # cat has played its 2 s
        page.wait_for_function("() => document.getElementById('morph').value === 1", timeout=10000)
        page.wait_for_timeout(300)
        assert page.evaluate("document.getElementById('view').toDataURL()") != cat  # the morph turned the picture
        page.click("#next-entry")
        page.wait_for_function("() => document.getElementById('now-text').textContent === 'seed 4 (2 s)'",
                               timeout=10000)
        page.wait_for_function("() => document.getElementById('now-text').textContent === 'cat (2 s)'",
                               timeout=10000)  # round again
        assert [t.text for t in the_session(server).steering.queue] == ["owl 0.50, dog 0.50", "seed 4"]

        bad = tmp_path / "bad.txt"
        bad.write_text("2 class cat\n# fine\n2 clas dog\n")
        page.set_input_files("#setlist-file", str(bad))
        page.wait_for_function("() => document.getElementById('setlist-note').textContent.startsWith("
                               "'bad.txt line 3: unknown kind')", timeout=10000)
        assert page.locator("#setlist-note").get_attribute("class") == "note bad"
        unknown = tmp_path / "unknown.txt"
        unknown.write_text("2 class cat\n2 class dgo\n")
        page.set_input_files("#setlist-file", str(unknown))
        page.wait_for_function("() => document.getElementById('setlist-note').textContent === "
                               "'unknown.txt line 2: unknown class \\'dgo\\''", timeout=10000)
        big = tmp_path / "big.txt"
        big.write_text("2 seed 1\n" * 1000)
        page.set_input_files("#setlist-file", str(big))
        page.wait_for_function("() => document.getElementById('setlist-note').textContent.startsWith("
                               "'big.txt is longer than the page sends')", timeout=10000)
        assert len(the_session(server).steering.queue) == 2  # the reel plays on
        b.close()


def test_a_song_drives_the_show_and_stays_in_the_browser(server, clicks, tmp_path):
    with sync_api.sync_playwright() as p:
        b = Browser(p, server.url)
        page = b.page
        page.select_option("#on-hit", "pulse")
        page.eval_on_selector("#audio-motion", "el => { el.value = 1; el.dispatchEvent(new Event('input')); }")
        start_hits = int(b.data("hits"))
        page.set_input_files("#song-file", str(clicks))
        page.wait_for_function("() => document.getElementById('music-note').textContent === "
                               "'playing clicks.wav; the sound stays in this browser'", timeout=10000)
        rates = page.evaluate(WATCH_RATE, 3000)  # 3 s of the song: clicks every 0.5 s
        onsets = int(page.locator("#onsets").inner_text())
        assert 4 <= onsets <= 7, onsets  # 5 or 6 clicks in 3 s, the first one before the page knows the floor
        hits = int(b.data("hits")) - start_hits
        assert hits >= 4  # the server was told each one
        steering = the_session(server).steering
        assert steering.motion == 1.0
        # motion follows the loudness: slow in the quiet between clicks, fast on them (speed 0.25 by default)
        assert min(rates) < 0.1 and max(rates) > 0.3, sorted(set(rates))
        sent = [json.loads(m) for m in b.sent]
        assert {m["type"] for m in sent} <= {"credit", "drive", "hit", "pattern", "speed", "truncation", "freeze"}
        assert max(len(m) for m in b.sent) < 200  # numbers, never sound
        assert [m for m in sent if m["type"] == "hit"][0] == {"type": "hit", "action": "pulse", "strength": 0.6}
        assert all(url.startswith((server.url, "blob:")) for url in b.requests), b.requests  # nothing uploaded

        page.set_input_files("#song-file", str(write_clicks(tmp_path / "slow.wav", seconds=2.0)))
        page.wait_for_function("() => document.getElementById('music-note').textContent.startsWith('playing slow')",
                               timeout=10000)
        page.click("#music-stop")
        page.wait_for_function("() => Number(document.body.dataset.rate) === 0.25", timeout=10000)  # back to speed
        garbage = tmp_path / "garbage.wav"
        garbage.write_bytes(b"RIFF\0\0\0\0WAVEfmt nothing that plays" * 20)
        page.set_input_files("#song-file", str(garbage))
        page.wait_for_function("() => document.getElementById('music-note').textContent === "
                               "'cannot play garbage.wav: this browser cannot read it as audio'", timeout=10000)
        assert page.locator("#music-note").get_attribute("class") == "note bad"
        b.close()


def test_hits_can_play_the_next_entry(server, clicks, tmp_path):
    reel = tmp_path / "reel.txt"
    reel.write_text("600 seed 1\n600 seed 2\n600 seed 3\n")
    with sync_api.sync_playwright() as p:
        b = Browser(p, server.url)
        page = b.page
        page.set_input_files("#setlist-file", str(reel))
        page.wait_for_function("() => document.getElementById('now-text').textContent === 'seed 1 (600 s)'",
                               timeout=10000)
        page.select_option("#on-hit", "next")
        seen = set()
        page.set_input_files("#song-file", str(clicks))
        for _ in range(30):
            page.wait_for_timeout(100)
            seen.add(page.locator("#now-text").inner_text())
        assert seen == {"seed 1 (600 s)", "seed 2 (600 s)", "seed 3 (600 s)"}  # each click the next entry
        b.close()


def test_the_microphone_after_the_browser_asks(server, clicks):
    """Refused: said on the page. Allowed: the (fake) microphone, playing the click track, drives the show."""
    args = [*ARGS, f"--use-file-for-fake-audio-capture={clicks}"]
    with sync_api.sync_playwright() as p:
        b = Browser(p, server.url, args=args)
        b.page.click("#mic")
        b.page.wait_for_function("() => document.getElementById('music-note').textContent.startsWith("
                                 "'the microphone was refused')", timeout=10000)
        assert b.page.locator("#mic").get_attribute("aria-pressed") == "false"
        b.close()

        b = Browser(p, server.url, args=args, permissions=["microphone"])
        b.page.click("#mic")
        b.page.wait_for_function("() => document.getElementById('music-note').textContent === "
                                 "'listening to the microphone; the sound stays in this browser'", timeout=10000)
        assert b.page.locator("#mic").get_attribute("aria-pressed") == "true"
        b.page.wait_for_function("() => Number(document.body.dataset.onsets || 0) >= 3", timeout=10000)
        b.page.wait_for_function("() => Number(document.body.dataset.hits) >= 3", timeout=5000)  # told the server
        b.page.click("#mic")  # off again
        assert b.page.locator("#mic").get_attribute("aria-pressed") == "false"
        b.close()


def test_the_display_crossfades_at_the_screens_rate():
    """A generator held to about 10 frames a second: the page still draws a new picture every animation frame (a
    crossfade between the last two frames), and controls arriving all the while do not stall it."""
    torch.manual_seed(0)
    G = Generator(ModelConfig(resolution=16, latent_size=32, fmap_base=256, fmap_max=32)).eval().requires_grad_(False)
    G.meta = {"kimg": 1.0, "source": "random weights"}
    studio = Studio(G, seed=0)
    render = studio.renderer.render

    def slow(*args):
        time.sleep(0.1)
        return render(*args)
    studio.renderer.render = slow
    with BackgroundServer(studio) as srv, sync_api.sync_playwright() as p:
        b = Browser(p, srv.url)
        page = b.page
        page.wait_for_timeout(500)
        shown, rendered, gap = page.evaluate("""() => new Promise((done) => {
          const data = document.body.dataset, d0 = Number(data.displayed), f0 = Number(data.frames);
          const slider = document.querySelector('input.sefa');
          let k = 0, gap = 0, last = performance.now(), shown = d0;
          const wiggle = setInterval(() => { slider.value = (k++ % 2) * 3; slider.dispatchEvent(new Event('input')); },
                                     100);
          const watch = (t) => {
            if (Number(data.displayed) !== shown) { shown = Number(data.displayed); gap = Math.max(gap, t - last);
                                                    last = t; }
            requestAnimationFrame(watch);
          };
          requestAnimationFrame(watch);
          setTimeout(() => { clearInterval(wiggle);
            done([Number(data.displayed) - d0, Number(data.frames) - f0, gap]); }, 2000);
        })""")
        assert rendered <= 22, rendered  # the generator's pace
        assert shown > 3 * rendered and shown > 70, (shown, rendered)  # the screen's (60 Hz in headless chromium)
        assert gap < 150, gap  # a picture at least every few animation frames, controls or not
        b.close()
