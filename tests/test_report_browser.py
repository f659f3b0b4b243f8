"""The report in a real headless browser: Debian's Chromium driven by Playwright for Python.

Skipped, with the reason, where the `playwright` package or the system Chromium is absent (`.ci/run`
installs both). Nothing is downloaded: Playwright launches the system browser by its path.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest

from vce_stream.cli import main

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
TOP = 24


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed (pip install playwright)")
    path = chromium_path()
    if path is None:
        pytest.skip("no system Chromium (Debian: apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    from vce_stream.synthetic import scored_synthetic_exam

    root = tmp_path_factory.mktemp("browser")
    exam = scored_synthetic_exam(root, frames=600, size=96, seed=5)
    out = root / "report.html"
    with pytest.raises(SystemExit) as done:
        main(["report", str(exam.events), str(exam.scores), str(exam.video), "--out", str(out), "--top", str(TOP), "--quiet"])
    assert done.value.code == 0
    return out


@pytest.fixture
def page(browser, report):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}") if msg.type in ("error", "warning") else None)
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("request", lambda req: problems.append(f"request: {req.url}") if not req.url.startswith(("file:", "data:")) else None)
    page.goto(report.as_uri())
    page.wait_for_selector("#timeline rect.sec")
    yield page, problems
    page.close()


def view(page) -> tuple[int, int]:
    box = page.locator("#timeline")
    return int(box.get_attribute("data-view-start")), int(box.get_attribute("data-view-end"))


def test_report_renders_without_errors_or_requests(page):
    page, problems = page
    assert page.locator("#timeline rect.ev").count() >= 1  # event ticks
    assert page.locator("#timeline rect.sec").count() == 5  # the five sections
    assert page.locator("#curve").count() == 1  # the default curve (any finding)
    images = page.locator("#top-grid figure.kf img")
    assert images.count() == TOP
    assert page.evaluate("Array.from(document.querySelectorAll('#top-grid img')).every(i => i.complete && i.naturalWidth > 0)")
    assert "Reading aid, not a diagnosis" in page.inner_text("#disclaimer")
    assert problems == []


def test_clicking_a_key_frame_centres_the_timeline_on_it(page):
    page, problems = page
    whole = view(page)
    figure = page.locator("#top-grid figure.kf").nth(TOP - 1)
    frame = int(figure.get_attribute("data-frame"))
    figure.click()
    start, end = view(page)
    assert (start, end) != whole and start <= frame <= end
    assert abs((start + end) / 2 - frame) <= max(2, (end - start) * 0.05) or start == whole[0] or end == whole[1]
    assert page.locator("#timeline line.cursor").count() == 1
    # Another key frame far away moves the window again.
    last_section = page.locator("#landmarks figure.kf").nth(4)  # first frame of the colon
    colon = int(last_section.get_attribute("data-frame"))
    last_section.click()
    moved = view(page)
    assert moved != (start, end) and moved[0] <= colon <= moved[1]
    assert problems == []


def test_clicking_an_event_tick_and_zooming_to_single_frames(page):
    page, problems = page
    tick = page.locator("#timeline rect.ev").first
    frame = int(tick.get_attribute("data-frame"))
    tick.click()
    start, end = view(page)
    assert start <= frame <= end and end - start < 600
    for _ in range(8):
        page.click("#zoom-in")
    start, end = view(page)
    assert end - start + 1 <= 21  # single frames: at most 20 frames in view
    page.click("#zoom-all")
    assert view(page)[1] - view(page)[0] + 1 == 600
    assert problems == []


def test_screenshot_has_the_expected_size_and_content(page, tmp_path):
    from PIL import Image

    page, problems = page
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot))
    image = np.asarray(Image.open(io.BytesIO(shot.read_bytes())).convert("RGB")).astype(int)
    assert image.shape == (800, 1280, 3)
    bar = page.evaluate("(() => { const r = document.querySelector('#timeline rect.sec').getBoundingClientRect(); return [r.top, r.bottom]; })()")
    row = image[int((bar[0] + bar[1]) / 2)]
    # The anatomy bar's row shows the section colours (Okabe-Ito stomach green and small-intestine yellow).
    for colour in ((0x00, 0x9E, 0x73), (0xF0, 0xE4, 0x42)):
        assert (np.abs(row - colour).sum(axis=1) < 30).sum() > 20, colour
    # Non-blank regions: the header text, the timeline and the thumbnails all differ from the background.
    for top, bottom in ((0, 60), (150, 420), (500, 800)):
        band = image[top:bottom]
        assert band.std() > 10, (top, bottom)
    assert problems == []


def test_print_layout_hides_the_controls(page):
    page, problems = page
    page.emulate_media(media="print")
    assert page.locator(".controls").is_hidden()
    assert page.locator("#timeline").is_visible()
    pdf = page.pdf(format="A4")
    assert pdf.startswith(b"%PDF") and len(pdf) > 10_000
    assert problems == []
