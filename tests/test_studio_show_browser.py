"""The show in a real browser (Playwright driving Debian's chromium, as tests/test_studio_browser.py): the patterns'
motions and layouts as drawn, smooth upscaling, wall mode, recording to WebM and taste profiles through the page."""

import json

import pytest
import torch
from playwright import sync_api

from progan.config import ModelConfig
from progan.networks import Generator
from progan.studio.server import BackgroundServer, Studio

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# In the page: mean |difference| of canvas pixels under a map of pixel positions (a symmetry of the layout).
PIXELS = """
([kind, n]) => {
  const c = document.getElementById('view');
  const W = c.width, H = c.height, d = c.getContext('2d').getImageData(0, 0, W, H).data;
  const at = (x, y, k) => d[(y * W + x) * 4 + k];
  let sum = 0, count = 0;
  const add = (x, y, x2, y2) => {
    for (let k = 0; k < 3; k++) { sum += Math.abs(at(x, y, k) - at(x2, y2, k)); count++; }
  };
  for (let y = 2; y < H - 2; y += 3) for (let x = 2; x < W - 2; x += 3) {
    if (kind === 'mirror-x') add(x, y, W - 1 - x, y);
    else if (kind === 'mirror-y') add(x, y, x, H - 1 - y);
    else if (kind === 'period-x') { if (x + n < W) add(x, y, x + n, y); }
    else if (kind === 'next-pixel') { if (x + 1 < W) add(x, y, x + 1, y); }
  }
  if (kind === 'cells') {  // neighbouring cells of an n x n grid, drawn plain on a square canvas
    sum = 0; count = 0;
    const s = Math.floor(W / n);
    for (let r = 0; r < n; r++) for (let col = 0; col + 1 < n; col++)
      for (let y = 1; y < s - 1; y += 2) for (let x = 1; x < s - 1; x += 2)
        add(col * s + x, r * s + y, (col + 1) * s + x, r * s + y);
  }
  return [sum / count, W, H];
}
"""


@pytest.fixture(scope="module")
def server():
    torch.manual_seed(0)
    G = Generator(ModelConfig(resolution=16, latent_size=64, fmap_base=256, fmap_max=32)).eval().requires_grad_(False)
    G.meta = {"kimg": 1.0, "source": "random weights"}
    with BackgroundServer(Studio(G, seed=0)) as srv:
        yield srv


@pytest.fixture
def page(server):
    problems = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 700}, accept_downloads=True)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.goto(server.url)
            page.wait_for_function("() => Number(document.body.dataset.frames || 0) > 3", timeout=20000)
            yield page
        finally:
            browser.close()
    assert not problems, problems


def frames(page) -> int:
    return int(page.evaluate("document.body.dataset.frames || 0"))


def settle(page, n=3):
    """Wait until n more frames have been drawn."""
    start = frames(page)
    page.wait_for_function(f"() => Number(document.body.dataset.frames) > {start + n}", timeout=15000)


def measure(page, kind, n=0):
    return page.evaluate(PIXELS, [kind, n])[0]


def set_range(page, selector, value):
    page.eval_on_selector(selector, "(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }", value)


def the_session(srv):
    with srv.studio.render_loop.lock:
        sessions = list(srv.studio.render_loop.sessions)
    assert len(sessions) == 1
    return sessions[0]


def test_field_and_loop_from_the_page(server, page):
    page.select_option("#motion", "field")
    page.wait_for_function("() => document.body.dataset.pattern === 'field'", timeout=10000)
    assert page.locator("#grid").input_value() == "4"  # a field needs neighbours: the grid turns on
    assert page.locator("#coupling-row").is_visible() and page.locator("#period-row").is_hidden()
    assert the_session(server).steering.grid == 4
    page.click("#freeze")
    set_range(page, "#coupling", 0)
    page.wait_for_function("() => document.getElementById('coupling-out').textContent === '0.00'")
    page.wait_for_timeout(300)
    settle(page)
    apart = measure(page, "cells", 4)
    set_range(page, "#coupling", 0.95)
    page.wait_for_timeout(300)
    settle(page)
    assert the_session(server).steering.pattern.coupling == 0.95
    together = measure(page, "cells", 4)
    assert together < 0.5 * apart, (together, apart)  # coupled: neighbouring cells are near relatives

    page.select_option("#motion", "loop")
    page.fill("#period", "1")
    page.press("#period", "Enter")
    page.dispatch_event("#period", "change")
    page.click("#freeze")  # moving again
    page.wait_for_function("() => document.body.dataset.pattern === 'loop'", timeout=10000)
    assert page.locator("#period-row").is_visible() and page.locator("#coupling-row").is_hidden()
    phases = []
    for _ in range(30):  # 1.5 s of a 1 s loop: the phase goes round and wraps
        phases.append(float(page.evaluate("document.body.dataset.phase")))
        page.wait_for_timeout(50)
    assert all(0 <= p < 1 for p in phases)
    assert any(b < a for a, b in zip(phases, phases[1:])), phases  # came round to the start
    assert the_session(server).steering.pattern.period == 1.0


@pytest.mark.parametrize("layout, checks", [
    ("mirror", ["mirror-x"]),
    ("kaleidoscope", ["mirror-x", "mirror-y"]),
    ("kaleidoscope6", ["mirror-y"]),
    ("tile", ["period-x"]),
])
def test_layouts_are_symmetric_on_screen(page, layout, checks):
    page.click("#freeze")
    page.wait_for_timeout(300)
    settle(page)
    plain = {kind: measure(page, kind, 0) for kind in ("mirror-x", "mirror-y")}
    page.select_option("#layout", layout)
    page.wait_for_function(f"() => document.body.dataset.layout === '{layout}'")
    settle(page)
    w, h = page.evaluate(PIXELS, ["mirror-x", 0])[1:]
    assert w >= 500 and w == h  # composed at the canvas's own size, not the model's 16 pixels
    for kind in checks:
        n = 2 * w // 4 if kind == "period-x" else 0  # tile: a mirrored pair of the 4 copies across
        symmetric = measure(page, kind, n)
        reference = plain.get(kind) or plain["mirror-x"]
        assert symmetric < 0.2 * reference, (layout, kind, symmetric, reference)


def test_smooth_upscale_and_pixelated_on_request(page):
    page.click("#freeze")
    page.wait_for_timeout(300)
    settle(page)
    smooth = measure(page, "next-pixel")
    page.uncheck("#smooth")
    blocky = page.evaluate("""() => {
      const c = document.getElementById('view'), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      let same = 0, n = 0;
      for (let i = 0; i + 4 < d.length; i += 4 * 7) { same += d[i] === d[i + 4] && d[i + 1] === d[i + 5]; n++; }
      return same / n;
    }""")
    assert blocky > 0.85  # nearest-neighbour: runs of equal pixels, 16 px frames on a ~600 px canvas
    page.check("#smooth")
    page.wait_for_timeout(100)
    assert measure(page, "next-pixel") == pytest.approx(smooth, rel=0.05)
    assert smooth > 0.3  # smooth: neighbouring pixels blend instead of repeating


def test_wall_mode_hides_the_controls_and_one_key_brings_them_back(page):
    page.select_option("#layout", "kaleidoscope")
    page.focus("#seed")
    page.keyboard.press("f")
    assert page.locator("#panel").is_visible()  # a key typed into a control is not a command
    page.click("#wall")  # leaves the focus on the (now hidden) button: keys must still reach the page
    page.wait_for_function("() => document.body.classList.contains('wall')")
    assert page.locator("#panel").is_hidden() and page.locator("header").is_hidden()
    page.wait_for_timeout(200)
    w, h = page.evaluate(PIXELS, ["mirror-x", 0])[1:]
    assert (w, h) == (1000, 700)  # the pattern fills the screen at its resolution
    assert measure(page, "mirror-x") < 5  # still the layout, at the new size
    page.keyboard.press("f")
    page.wait_for_function("() => !document.body.classList.contains('wall')")
    assert page.locator("#panel").is_visible()
    page.keyboard.press("f")
    page.wait_for_function("() => document.body.classList.contains('wall')")
    page.keyboard.press("Escape")
    page.wait_for_function("() => !document.body.classList.contains('wall')")
    settle(page)


def test_record_what_is_on_screen_to_webm(page, tmp_path):
    page.select_option("#layout", "mirror")
    page.click("#record")
    assert page.locator("#record").get_attribute("aria-pressed") == "true"
    page.wait_for_timeout(1500)
    with page.expect_download(timeout=15000) as info:
        page.click("#record")
    download = info.value
    assert download.suggested_filename.startswith("progan-walk-mirror-")
    assert download.suggested_filename.endswith(".webm")
    path = tmp_path / "show.webm"
    download.save_as(path)
    data = path.read_bytes()
    assert data[:4] == b"\x1a\x45\xdf\xa3" and b"webm" in data[:64]  # EBML header, WebM doc type
    assert len(data) > 5000
    assert page.locator("#record").get_attribute("aria-pressed") == "false"
    assert page.locator("#show-note").inner_text().startswith("saved progan-walk-mirror-")


def test_taste_saved_and_loaded_through_the_page(server, page, tmp_path):
    page.click("#like")
    page.click("#like")
    page.click("#dislike")
    page.wait_for_function("() => document.getElementById('dislikes').textContent === '1'", timeout=10000)
    with page.expect_download(timeout=10000) as info:
        page.click("#save-taste")
    assert info.value.suggested_filename == "progan-taste.json"
    saved = tmp_path / "taste.json"
    info.value.save_as(saved)
    profile = json.loads(saved.read_text())
    assert (profile["likes"], profile["dislikes"]) == (2, 1)
    point = the_session(server).steering.prefs.point.tolist()
    page.click("#reset-prefs")
    page.wait_for_function("() => document.getElementById('likes').textContent === '0'", timeout=10000)
    page.set_input_files("#taste-file", str(saved))
    page.wait_for_function("() => document.getElementById('taste-note').textContent === "
                           "'taste loaded: 2 likes, 1 dislikes'", timeout=10000)
    assert page.locator("#likes").inner_text() == "2"
    assert the_session(server).steering.prefs.point.tolist() == point

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    page.set_input_files("#taste-file", str(bad))
    page.wait_for_function("() => document.getElementById('taste-note').textContent.startsWith("
                           "'bad.json is not a taste profile')", timeout=10000)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**profile, "model": {**profile["model"], "latent_size": 512}}))
    page.set_input_files("#taste-file", str(other))
    page.wait_for_function("() => document.getElementById('taste-note').textContent.includes("
                           "'for another model')", timeout=10000)
    assert page.locator("#taste-note").get_attribute("class") == "note bad"
    assert page.locator("#likes").inner_text() == "2"  # nothing changed
