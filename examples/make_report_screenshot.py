"""Make docs/report.png: the review report of a synthetic exam, as a 1280x800 browser screenshot.

    python examples/make_report_screenshot.py [--out docs/report.png] [--frames 3000] [--keep DIR]

Steps: a synthetic exam (`vce_stream.synthetic`) scored by its PaletteScorer through the real pipeline
(events = the exam's ground truth, no training needed), `vce-stream report` on its events, scores and
video, then Debian's Chromium (driven by Playwright, never downloaded) opens the page from disk and takes
the screenshot. The PNG is reduced to a 256-colour palette so it stays small in the repository.
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
from pathlib import Path

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]


def screenshot(html: Path, png: Path, width: int = 1280, height: int = 800) -> None:
    from PIL import Image
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("no system Chromium: apt-get install chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": width, "height": height})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.goto(html.resolve().as_uri())
        page.wait_for_selector("#timeline rect.sec")
        raw = page.screenshot()
        browser.close()
    if errors:
        sys.exit(f"the page reported errors: {errors}")
    image = Image.open(io.BytesIO(raw)).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    png.parent.mkdir(parents=True, exist_ok=True)
    image.save(png, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/report.png")
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", help="Keep the exam, its files and report.html in this folder.")
    args = parser.parse_args()

    from vce_stream.cli import main as vce

    from vce_stream.synthetic import scored_synthetic_exam

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        exam = scored_synthetic_exam(root, frames=args.frames, size=240, seed=args.seed, lesion_rate=5.0, name="synthetic_exam")
        html = root / "report.html"
        try:
            vce(["report", str(exam.events), str(exam.scores), str(exam.video), "--out", str(html)])
        except SystemExit as done:
            if done.code:
                raise
        screenshot(html, Path(args.out))
    print(f"{args.out}: {Path(args.out).stat().st_size / 1024:.0f} kB")


if __name__ == "__main__":
    main()
