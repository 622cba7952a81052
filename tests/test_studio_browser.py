"""The studio page in a real browser: Playwright driving Debian's chromium, headless, with no network but ours."""

import pytest
import torch
from playwright import sync_api  # pip install playwright; the browser is Debian's chromium (never `playwright install`)

from progan.config import ModelConfig
from progan.networks import Generator
from progan.studio.server import BackgroundServer, Studio
from progan.conditioning.encoder import load_text_encoder
from tests.studio_helpers import class_generator

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def server():
    torch.manual_seed(0)
    G = Generator(ModelConfig(resolution=32, latent_size=64, fmap_base=512, fmap_max=64)).eval().requires_grad_(False)
    G.meta = {"kimg": 42.0, "source": "random weights"}
    with BackgroundServer(Studio(G, seed=0)) as srv:
        yield srv


def canvas_pixels(page) -> str:
    return page.evaluate("document.getElementById('view').toDataURL()")


def frames(page) -> int:
    return int(page.evaluate("document.body.dataset.frames || 0"))


def test_page_streams_likes_and_steers(server, tmp_path):
    requests, problems = [], []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.on("request", lambda r: requests.append(r.url))
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.goto(server.url)

            page.wait_for_function("() => Number(document.body.dataset.frames || 0) > 5", timeout=20000)
            assert page.locator("#model-line").inner_text().startswith("32\u00d732, 42 kimg")
            assert page.locator("#info").inner_text().count("random weights") == 1
            first = canvas_pixels(page)
            start = frames(page)
            page.wait_for_function(f"() => Number(document.body.dataset.frames) > {start + 10}", timeout=20000)
            assert canvas_pixels(page) != first  # the walk moves
            page.wait_for_function("() => Number(document.getElementById('fps').textContent) > 0", timeout=10000)

            page.click("#like")
            page.wait_for_function("() => document.getElementById('likes').textContent === '1'", timeout=10000)

            page.click("#freeze")
            page.wait_for_function("() => document.getElementById('freeze').getAttribute('aria-pressed') === 'true'")
            page.wait_for_timeout(300)
            frozen = canvas_pixels(page)
            start = frames(page)
            page.wait_for_function(f"() => Number(document.body.dataset.frames) > {start + 3}", timeout=10000)
            assert canvas_pixels(page) == frozen  # frozen: the picture holds still

            slider = page.locator("input.sefa").first
            slider.scroll_into_view_if_needed()
            box = slider.bounding_box()
            page.mouse.click(box["x"] + box["width"] * 0.95, box["y"] + box["height"] / 2)  # drag it near the end
            assert float(slider.input_value()) > 3
            page.wait_for_function("() => document.getElementById('ctl').textContent !== '\u2013'", timeout=10000)
            start = frames(page)
            page.wait_for_function(f"() => Number(document.body.dataset.frames) > {start + 2}", timeout=10000)
            assert canvas_pixels(page) != frozen  # the slider moved the (frozen) image

            shot = tmp_path / "studio_screenshot.png"
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000

            # an unconditional model: the prompt box is there, disabled, with the reason
            assert page.locator("#prompt").is_disabled()
            reason = page.locator("#prompt-reason").inner_text()
            assert reason == "Prompts: this model is unconditional: it takes no prompt."
            assert page.locator("#class-row").is_hidden()
        finally:
            browser.close()
    assert all(url.startswith(server.url) for url in requests), requests  # nothing from the internet
    assert not problems, problems


CAPTIONS = ["red heart", "monkey", "full moon", "person surfing", "cat face", "pizza", "fire", "snowflake", "rocket"]


@pytest.fixture(scope="module")
def text_server():
    encoder = load_text_encoder()  # the real one (loaded once per process)
    torch.manual_seed(0)
    cfg = ModelConfig(resolution=16, latent_size=32, fmap_base=256, fmap_max=32, text_size=encoder.dimension,
                      ca_size=16)
    G = Generator(cfg).eval().requires_grad_(False)
    G.meta = {"kimg": 1.0, "source": "random weights", "conditioning": {
        "kind": "text", "encoder": encoder.info(), "captions": CAPTIONS, "caption_vectors": encoder.encode(CAPTIONS)}}
    with BackgroundServer(Studio(G, seed=0, text_encoder=encoder)) as srv:
        yield srv


def test_typing_a_prompt_turns_the_stream_and_shows_the_reading(text_server):
    problems = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(text_server.url)
            page.wait_for_function("() => Number(document.body.dataset.frames || 0) > 3", timeout=20000)
            assert page.locator("#prompt").is_enabled() and page.locator("#prompt-reason").is_hidden()
            page.wait_for_function("() => document.getElementById('now-text').textContent !== ''", timeout=10000)
            assert page.locator("#now-reading").inner_text() == "a caption of the training data"
            page.click("#freeze")
            page.wait_for_function("() => document.getElementById('freeze').getAttribute('aria-pressed') === 'true'")
            page.wait_for_timeout(600)  # any morph under way has ended
            still = canvas_pixels(page)

            page.fill("#prompt", "monkeys surfing on the moon")
            page.press("#prompt", "Enter")
            page.wait_for_function("() => document.getElementById('now-text').textContent === "
                                   "'monkeys surfing on the moon'", timeout=10000)
            reading = page.locator("#now-reading").inner_text()
            assert reading.startswith("read as: ") and all(c in reading for c in ("monkey 0.", "person surfing 0.",
                                                                                  "full moon 0."))
            page.wait_for_function("() => document.getElementById('morph').value === 1", timeout=10000)
            start = frames(page)
            page.wait_for_function(f"() => Number(document.body.dataset.frames) > {start + 2}", timeout=10000)
            assert canvas_pixels(page) != still  # the (frozen) picture turned to the prompt

            page.fill("#prompt", "pizza on fire")
            page.press("#prompt", "Shift+Enter")  # queued after what plays now
            page.wait_for_function("() => document.querySelectorAll('#next-list li').length === 1", timeout=10000)
            assert page.locator("#next-list li").inner_text().startswith("pizza on fire")
            assert "read as: pizza 0." in page.locator("#next-list li").inner_text()
            page.click("#clear-queue")
            page.wait_for_function("() => document.getElementById('queue-box').hidden", timeout=10000)

            page.fill("#prompt", "quarterly tax law reform")  # nothing like it in the data
            page.press("#prompt", "Enter")
            page.wait_for_function("() => document.getElementById('now-reading').textContent.includes("
                                   "'nothing in the data is close')", timeout=10000)
            assert page.locator("#now-text").inner_text() == "quarterly tax law reform"  # played as read

            page.fill("#prompt", "x" * 400)  # the box holds at most 300 characters
            assert len(page.locator("#prompt").input_value()) == 300
            page.evaluate("document.getElementById('prompt').removeAttribute('maxlength')")
            page.fill("#prompt", "y" * 400)
            page.press("#prompt", "Enter")
            page.wait_for_function("() => document.getElementById('prompt-note').textContent.includes("
                                   "'400 characters long; at most 300')", timeout=10000)
            start = frames(page)
            page.wait_for_function(f"() => Number(document.body.dataset.frames) > {start + 3}", timeout=10000)
        finally:
            browser.close()
    assert not problems, problems


CLASSES = ["cat", "dog", "owl"]


@pytest.fixture(scope="module")
def class_server():
    with BackgroundServer(Studio(class_generator(), seed=0)) as srv:
        yield srv


def shown_row(srv) -> list[float]:
    """The condition row the (one) viewer's stream is turning to, as the render thread holds it."""
    loop = srv.studio.render_loop
    with loop.lock:
        sessions = list(loop.sessions)
    assert len(sessions) == 1
    return [round(w, 4) for w in sessions[0].steering.target.row.tolist()]


def test_picking_and_blending_classes_turns_the_stream(class_server):
    problems, downloads = [], []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("download", lambda d: downloads.append(d.suggested_filename))
            page.goto(class_server.url)
            page.wait_for_function("() => Number(document.body.dataset.frames || 0) > 3", timeout=20000)
            assert page.locator("#class-row").is_visible()
            assert page.locator("#label option").all_inner_texts() == CLASSES
            assert page.eval_on_selector_all("#class-names option", "os => os.map(o => o.value)") == CLASSES
            assert page.locator("#prompt").is_disabled()
            assert page.locator("#prompt-reason").inner_text() == \
                "Prompts: this model is class-conditional (3 classes): it takes no prompt."
            page.wait_for_function("() => document.getElementById('now-text').textContent === 'cat'", timeout=10000)
            assert shown_row(class_server) == [1.0, 0.0, 0.0]  # the first class plays until one is picked
            page.click("#freeze")
            page.wait_for_function("() => document.getElementById('freeze').getAttribute('aria-pressed') === 'true'")
            page.wait_for_timeout(300)
            cat = canvas_pixels(page)

            def settled(text):  # the page was told what plays now, the morph has ended and newer frames are drawn
                page.wait_for_function(f"() => document.getElementById('now-text').textContent === '{text}'",
                                       timeout=10000)
                page.wait_for_function("() => document.getElementById('morph').value < 1", timeout=10000)
                page.wait_for_function("() => document.getElementById('morph').value === 1", timeout=10000)
                page.wait_for_timeout(200)  # the header's morph is rounded: 0.99996 shows as 1
                start = frames(page)
                page.wait_for_function(f"() => Number(document.body.dataset.frames) > {start + 2}", timeout=10000)
                return canvas_pixels(page)

            page.select_option("#label", label="owl")
            owl = settled("owl")
            assert shown_row(class_server) == [0.0, 0.0, 1.0]
            assert owl != cat  # the (frozen) picture turned to the picked class

            page.fill("#blend", "cat=0.7, dog=0.3")
            page.press("#blend", "Enter")
            blend = settled("cat 0.70, dog 0.30")
            assert shown_row(class_server) == [0.7, 0.3, 0.0]
            assert blend not in (cat, owl)  # a soft row: neither the first class nor the last pick

            page.fill("#blend", "cat=0.5, zebra=0.5")  # a class the model does not have
            page.press("#blend", "Enter")
            page.wait_for_function("() => document.getElementById('prompt-note').textContent === "
                                   "\"classes.weights: unknown class 'zebra'\"", timeout=10000)
            assert page.locator("#prompt-note").get_attribute("class") == "note bad"
            page.fill("#blend", "Owl")
            page.press("#blend", "Enter")
            page.wait_for_function("() => document.getElementById('prompt-note').textContent === "
                                   "\"classes.weights: unknown class 'Owl'; did you mean owl?\"", timeout=10000)
            start = frames(page)
            page.wait_for_function(f"() => Number(document.body.dataset.frames) > {start + 3}", timeout=10000)
            assert page.locator("#now-text").inner_text() == "cat 0.70, dog 0.30"  # the stream goes on as it was
            assert shown_row(class_server) == [0.7, 0.3, 0.0]
            assert canvas_pixels(page) == blend
        finally:
            browser.close()
    assert not problems, problems
    assert not downloads, downloads  # a pick is not a "save"
