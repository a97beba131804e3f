"""A screenshot of a run's report page in headless Chromium, small enough for the README.

    python tools/report_screenshot.py RUN/report.html docs/img/report.png [--width 1100] [--height 1500]
        [--from-section attention]

Debian's chromium + chromium-driver through selenium, the network cut off (the page needs none). The
page is drawn at ``--width`` CSS pixels, cut to ``--height`` from the top (or from the top of the
section ``--from-section``), and saved as a 256-colour PNG (photos dither well at thumbnail size; a
full-colour PNG of thumbnails is ~4x bigger).
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
from pathlib import Path

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars",
         "--proxy-server=http://127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("page", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--width", type=int, default=1100)
    ap.add_argument("--height", type=int, default=1500)
    ap.add_argument("--from-section", default=None, help="start the picture at this section's id")
    args = ap.parse_args(argv)

    from PIL import Image
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(prefix="report-shot-") as profile:
        opts = webdriver.ChromeOptions()
        opts.binary_location = shutil.which("chromium")
        for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={args.width},{args.height}"):
            opts.add_argument(flag)
        driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
        try:
            driver.get(args.page.resolve().as_uri())
            top = 0
            if args.from_section:
                top = int(driver.execute_script(
                    "const s = document.getElementById(arguments[0]); return s ? s.getBoundingClientRect().top + "
                    "window.scrollY - 8 : 0", args.from_section))
            full = int(driver.execute_script("return document.body.scrollHeight"))
            driver.set_window_size(args.width, min(full, top + args.height) + 120)
            png = driver.get_screenshot_as_png()
        finally:
            driver.quit()
    im = Image.open(io.BytesIO(png)).convert("RGB")
    im = im.crop((0, top, im.width, min(im.height, top + args.height)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    im.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG).save(
        args.out, optimize=True)
    print(f"{args.out}: {im.width}x{im.height}, {args.out.stat().st_size / 1e3:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
