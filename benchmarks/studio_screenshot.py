"""Screenshot of `progan studio MODEL` in Debian's headless chromium after a like and a slider move.

    python -m benchmarks.studio_screenshot runs/demo --out out/studio_demo.png
    python -m benchmarks.studio_screenshot runs/demo --grid 4 --out docs/images/studio.png   # the README's
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
    parser.add_argument("--grid", type=int, choices=(1, 2, 3, 4, 6, 8), default=1,
                        help="the stream as an N x N grid of samples (default 1: one sample)")
    args = parser.parse_args()
    with BackgroundServer(Studio(load_generator(args.model), seed=0)) as server, \
            sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        page.goto(server.url)
        page.wait_for_function("() => Number(document.body.dataset.frames || 0) > 5", timeout=30000)
        if args.grid != 1:
            page.select_option("#grid", str(args.grid))
        page.click("#like")
        time.sleep(args.seconds)
        frames = page.evaluate("document.body.dataset.frames")
        page.screenshot(path=args.out)
        print(f"{args.out}: after {frames} frames; fps shown {page.locator('#fps').inner_text()}")
        browser.close()


if __name__ == "__main__":
    main()
