"""A report's weight as a reader meets it: page height at a width, file size, what overflows.

Used by the heavy browser test on the demo and from the shell:
``python -m tests.browser.measure runs/demo/report.html`` prints one line per width.
"""

from __future__ import annotations

from pathlib import Path

from tests.browser.chromium import find_chromium, launch, open_report

# Elements wider than the page at a width (a table scrolling inside its own box is fine).
OVERFLOW_JS = """() => {
  const w = document.documentElement.clientWidth;
  const out = [];
  for (const e of document.querySelectorAll('main *')) {
    if (e.closest('.table-wrap, pre, .ex-viewer')) continue;
    const r = e.getBoundingClientRect();
    if (r.width && r.right > w + 1) out.push(e.tagName.toLowerCase() + (e.id ? '#' + e.id : '')
      + (e.className && typeof e.className === 'string' ? '.' + e.className.split(' ')[0] : ''));
  }
  return {scroll: document.documentElement.scrollWidth, width: w, over: out.slice(0, 10)};
}"""


def measure_page(page) -> dict:
    """Height (px), horizontal overflow and console errors of an open report page."""
    height = page.evaluate("document.documentElement.scrollHeight")
    over = page.evaluate(OVERFLOW_JS)
    return {"height": height, "scroll_width": over["scroll"], "width": over["width"],
            "overflowing": over["over"], "errors": list(page.errors)}


def measure(report: Path, widths=(1400, 820)) -> dict:
    """``{"bytes": n, width: measure_page(...)}`` in headless Chromium."""
    from playwright.sync_api import sync_playwright

    executable, reason = find_chromium()
    if executable is None:
        raise RuntimeError(reason)
    out: dict = {"bytes": report.stat().st_size}
    with sync_playwright() as p:
        browser = launch(p, executable)
        for width in widths:
            page = open_report(browser, report, width, 900)
            out[width] = measure_page(page)
            page.close()
        browser.close()
    return out


if __name__ == "__main__":  # python -m tests.browser.measure REPORT.html
    import sys

    result = measure(Path(sys.argv[1]))
    print(f"size {result['bytes'] / 1e6:.2f} MB")
    for width in (1400, 820):
        r = result[width]
        print(f"{width} px wide: {r['height']} px tall, scroll width {r['scroll_width']}, "
              f"overflowing {r['overflowing']}, console errors {len(r['errors'])}")
