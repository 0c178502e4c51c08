"""Debian's chromium driven by Playwright: found or not, launched with fixed flags.

Playwright's own browser download is not used: the system's /usr/bin/chromium is.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def find_chromium() -> tuple[str | None, str]:
    """(executable, "") or (None, the one-line reason it cannot be used)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return None, "the playwright package is not installed (pip install -e '.[dev]')"
    for path in (os.environ.get("XAUDIT_CHROMIUM"), *CANDIDATES, shutil.which("chromium")):
        if path and Path(path).is_file() and os.access(path, os.X_OK):
            return path, ""
    return None, "no chromium found (apt-get install -y chromium)"


def launch(playwright, executable: str):
    return playwright.chromium.launch(executable_path=executable, args=FLAGS)


def open_report(browser, path: Path, width: int = 1400, height: int = 900):
    """A page on ``file://path`` with its console errors collected in ``page.errors``."""
    page = browser.new_page(viewport={"width": width, "height": height})
    page.errors = []
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.goto(path.resolve().as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=30_000)
    return page


def screenshots(report: Path, out_dir: Path, widths=(1400, 820)) -> list[Path]:
    """The top screen at each width and the explorer's side-by-side view, as PNG files."""
    from playwright.sync_api import sync_playwright

    executable, reason = find_chromium()
    if executable is None:
        raise RuntimeError(reason)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with sync_playwright() as p:
        browser = launch(p, executable)
        for width in widths:
            page = open_report(browser, report, width, 900)
            written.append(out_dir / f"report-top-{width}.png")
            page.screenshot(path=str(written[-1]))
            if width == widths[0]:
                wrong = page.locator(".ex-tile.wrong")
                (wrong if wrong.count() else page.locator(".ex-tile")).first.click()
                page.wait_for_selector("#ex-viewer:not([hidden])")
                page.wait_for_function(  # the maps are coloured on canvases once decoded
                    "[...document.querySelectorAll('.ex-overlay')].every(c => c.dataset.drawn)")
                written.append(out_dir / "report-explorer.png")
                page.screenshot(path=str(written[-1]))
            page.close()
        browser.close()
    return written


if __name__ == "__main__":  # python -m tests.browser.chromium RUN_DIR OUT_DIR
    import sys

    for f in screenshots(Path(sys.argv[1]) / "report.html", Path(sys.argv[2])):
        print(f)
