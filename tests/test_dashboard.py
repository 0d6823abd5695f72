"""The dashboard at ``/``, driven in a real headless browser (Debian's chromium through Playwright).

One walk through the page on a running app: generate & predict, both panes and the metrics, the
heatmap toggle, uploads (a dot pattern, a photo-like gradient that gets the warning, an unsupported
JPEG that gets the error banner), a download, the run history. Any browser console error or page
error fails the test, and every request must stay on the app's own origin (the page works offline).
The screenshot the README shows, ``docs/dashboard.png``, is written here after the generate step.

chromium comes from the system (``make setup`` installs Debian's package when it can); Playwright's
own browser download (``playwright install``) is never used.
"""

from __future__ import annotations

import io
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "dashboard.png"
TIMEOUT_MS = 120_000  # a prediction on a busy 2-core machine; the page's own timeout is the same


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip(
            "no chromium on PATH: `make setup` installs it as root with apt-get, "
            "or run `sudo apt-get install chromium` (Debian/Ubuntu)"
        )
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def app_url(ray_session) -> Iterator[str]:
    """The app on a free loopback port of the session's Ray; Serve (not Ray) is shut down after."""
    from ray import serve

    from dotseg.serving import run
    from dotseg.serving.config import ServeConfig

    urls = run.start(ServeConfig(port=_free_port(), max_replicas=1))
    try:
        run.wait_ready(urls["api"])
        yield urls["api"]
    finally:
        serve.shutdown()


def _png(array: np.ndarray, path: Path, fmt: str = "PNG") -> Path:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    path.write_bytes(buf.getvalue())
    return path


def _dot_pattern() -> np.ndarray:
    from dotseg.plots import to_uint8
    from dotseg.synthesis import SynthesisConfig, make_sample

    return to_uint8(make_sample(SynthesisConfig(size=256), 0, 0, noisy=False).image)


def test_dashboard(app_url: str, tmp_path: Path) -> None:
    chromium = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install 'playwright>=1.40' (the dev extra)")

    dot_png = _png(_dot_pattern(), tmp_path / "dots.png")
    ramp = np.tile(np.linspace(0, 255, 256, dtype=np.float32), (256, 1)).astype(np.uint8)
    gradient_png = _png(ramp, tmp_path / "gradient.png")
    jpeg = _png(_dot_pattern(), tmp_path / "photo.jpg", fmt="JPEG")

    errors: list[str] = []  # console errors and uncaught page errors
    foreign: list[str] = []  # requests that leave the app's origin
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
            page.set_default_timeout(30_000)  # clicks and the like; waits for predictions use TIMEOUT_MS
            page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
            page.on(
                "request",
                lambda r: None if r.url.startswith((app_url, "data:", "blob:")) else foreign.append(r.url),
            )
            expect = sync_api.expect
            expect.set_options(timeout=TIMEOUT_MS)

            page.goto(f"{app_url}/")
            expect(page.locator("#status-dot")).to_have_class("status-dot ready")  # /ready answered

            # Generate & predict with a few controls set.
            page.fill("#seed", "7")
            page.select_option("#noise", "gaussian")
            page.locator("#level").fill("0.6")
            page.locator("#num-dots").fill("60")
            page.click("#generate")
            expect(page.locator("#history li")).to_have_count(1)
            expect(page.locator("#processing")).to_be_hidden()
            for img in ("#input-img", "#pred-img"):
                expect(page.locator(img)).to_be_visible()
                size = page.eval_on_selector(img, "e => e.complete ? [e.naturalWidth, e.naturalHeight] : [0, 0]")
                assert size == [256, 256], (img, size)
            dice = float(page.inner_text("#dice"))
            assert 0.0 <= dice <= 1.0
            assert 0.0 <= float(page.inner_text("#iou")) <= 1.0
            assert page.inner_text("#snr").endswith("dB")
            assert page.inner_text("#inference-ms").endswith("ms")
            assert page.inner_text("#model-variant") != "—"
            assert "gaussian" in page.inner_text("#history li")
            assert page.is_hidden("#error-banner") and page.is_hidden("#ood-warning")

            # The heatmap overlay: on, then the screenshot for the README, then off.
            heatmap = page.locator("#heatmap-img")
            expect(heatmap).to_be_hidden()
            page.check("#heatmap-toggle")
            expect(heatmap).to_be_visible()
            page.click("label:has(#view-outline)")  # truth and prediction outlines in the right pane
            expect(page.locator("#outline-legend")).to_be_visible()
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
            page.uncheck("#heatmap-toggle")
            expect(heatmap).to_be_hidden()
            page.click("label:has(#view-mask)")
            expect(page.locator("#outline-legend")).to_be_hidden()

            # Upload a dot pattern: a prediction, and no warning.
            page.set_input_files("#upload", str(dot_png))
            expect(page.locator("#history li")).to_have_count(2)
            expect(page.locator("#input-caption")).to_contain_text("dots.png")
            assert page.is_hidden("#ood-warning")
            assert page.inner_text("#dice") == "—"  # no truth for an upload
            assert 0.5 <= float(page.inner_text("#confidence")) <= 1.0

            # Upload something that is not a dot pattern: the warning, with the reason and score.
            page.set_input_files("#upload", str(gradient_png))
            expect(page.locator("#history li")).to_have_count(3)
            expect(page.locator("#ood-warning")).to_be_visible()
            expect(page.locator("#ood-reason")).to_contain_text("does not look like a dot pattern")

            # An unsupported format: the API's message in the error banner, nothing else changes. The
            # browser logs the 415 response itself as a console error; only that one is expected.
            before = len(errors)
            page.set_input_files("#upload", str(jpeg))
            expect(page.locator("#error-banner")).to_be_visible()
            expect(page.locator("#error-message")).to_contain_text("JPEG is not supported")
            expect(page.locator("#processing")).to_be_hidden()
            expected = [e for e in errors[before:] if "status of 415" in e]
            assert len(expected) <= 1
            for e in expected:
                errors.remove(e)
            assert page.locator("#history li").count() == 3
            page.click("#error-close")
            expect(page.locator("#error-banner")).to_be_hidden()

            # History: back to the generated sample, then download its mask and overlay.
            page.click("#history li:last-child button")
            assert float(page.inner_text("#dice")) == dice
            expect(page.locator("#ood-warning")).to_be_hidden()
            for what in ("mask", "overlay"):
                with page.expect_download() as info:
                    page.click(f"#download-{what}")
                download = info.value
                assert download.suggested_filename == f"dotseg-demo-seed7-gaussian-{what}.png"
                data = Path(download.path()).read_bytes()
                assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 100
                from PIL import Image

                assert Image.open(io.BytesIO(data)).size == (256, 256)
        finally:
            browser.close()

    assert not errors, errors
    assert not foreign, f"the page loaded resources from outside the app: {foreign}"
