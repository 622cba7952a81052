"""Screenshot of `progan studio MODEL` in Debian's headless chromium after a like and a slider move.

    python benchmarks/studio_screenshot.py runs/demo --out out/studio_demo.png
"""

import argparse
import time

from playwright import sync_api

from progan.model_io import load_generator
from progan.studio.server import BackgroundServer, Studio

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--out", default="out/studio_demo.png")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long to watch before the screenshot")
    args = parser.parse_args()
    with BackgroundServer(Studio(load_generator(args.model), seed=0)) as server, \
            sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        page.goto(server.url)
        page.wait_for_function("() => Number(document.body.dataset.frames || 0) > 5", timeout=30000)
        page.click("#like")
        time.sleep(args.seconds)
        frames = page.evaluate("document.body.dataset.frames")
        page.screenshot(path=args.out)
        print(f"{args.out}: after {frames} frames; fps shown {page.locator('#fps').inner_text()}")
        browser.close()


if __name__ == "__main__":
    main()
