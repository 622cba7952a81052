"""A screenshot of each studio pattern in Debian's headless chromium, in wall mode (the pattern fills the window).

    python -m benchmarks.studio_pattern_shots runs/demo --out docs/images   # docs/images/studio-pattern-<name>.png
"""

import argparse
import time
from pathlib import Path

from PIL import Image
from playwright import sync_api

from progan.model_io import load_generator
from progan.studio.patterns import parse_pattern
from progan.studio.server import BackgroundServer, Studio

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PATTERNS = ["field", "loop", "field+mirror", "field+kaleidoscope", "loop+kaleidoscope6", "field+tile"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    parser.add_argument("--size", default="360x216", help="window WIDTHxHEIGHT (small: the PNGs stay under 100 KB)")
    parser.add_argument("--seconds", type=float, default=3.0, help="how long each pattern plays before its shot")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    G = load_generator(args.model)
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        for name in PATTERNS:
            with BackgroundServer(Studio(G, seed=3, pattern=parse_pattern(name, coupling=0.6, period=6))) as server:
                page = browser.new_page(viewport={"width": width, "height": height})
                page.goto(server.url)
                page.wait_for_function("() => Number(document.body.dataset.frames || 0) > 3", timeout=30000)
                if name.startswith("loop"):
                    page.select_option("#grid", "2")
                page.click("#wall")
                time.sleep(args.seconds)
                page.evaluate("document.getElementById('wall-hint').hidden = true")
                path = args.out / f"studio-pattern-{name.replace('+', '-')}.png"
                page.locator("#view").screenshot(path=str(path))
                # a 256-colour palette: a third of the size or less, and the repository stays small
                Image.open(path).convert("RGB").quantize(256).save(path, optimize=True)
                frames = page.evaluate("document.body.dataset.frames")
                print(f"{path}: {path.stat().st_size / 1024:.0f} KB after {frames} frames")
                page.close()
        browser.close()


if __name__ == "__main__":
    main()
