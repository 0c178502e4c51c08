"""The demo's own report against the issue's limits, in headless Chromium: a page a reader
can act on from its first screen, every verdict one click from its maps, a third of the
former length. Heavy: it needs the demo's run folder (``XAUDIT_DEMO_RUN``, else runs/demo,
else the demo is run here, several minutes), whose report is rendered again with this code."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.browser.checks import check_audit_values, check_cell_links
from tests.browser.chromium import open_report
from tests.browser.measure import measure_page
from xaudit.report import render_report

pytestmark = pytest.mark.heavy

MAX_HEIGHT_PX = 10_000  # at 1,400 px wide
MAX_BYTES = 4_000_000
FIRST_SCREEN_PX = 900
REPO = Path(__file__).resolve().parents[2]


def _finished(run: Path) -> bool:
    try:
        stages = json.loads((run / "manifest.json").read_text())["stages"]
    except (OSError, ValueError, KeyError):
        return False
    return "audit" in stages and not (run / "xaudit.lock").exists()


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """A copy of a finished demo run, its report rendered again by this code."""
    given = os.environ.get("XAUDIT_DEMO_RUN")
    source = Path(given) if given else REPO / "runs" / "demo"
    copy = tmp_path_factory.mktemp("demo") / "demo"
    if _finished(source):
        shutil.copytree(source, copy, ignore=shutil.ignore_patterns("report.html"))
    else:
        if given:
            pytest.fail(f"XAUDIT_DEMO_RUN={given} is not a finished run folder")
        from importlib.resources import files

        from xaudit import run_recipe

        run_recipe(Path(str(files("xaudit") / "configs" / "demo.yaml")),
                   overrides=[f"output_dir={copy.parent}"])
    print(f"demo run: {source if _finished(source) else copy}")
    return render_report(copy)


def test_the_demo_report_is_within_the_limits(browser, demo):
    size = demo.stat().st_size
    page = open_report(browser, demo, 1400, 900)
    wide = measure_page(page)
    narrow = measure_page(open_report(browser, demo, 820, 1180))
    print(f"demo report: {size / 1e6:.2f} MB, {wide['height']} px tall at 1400 px, "
          f"{narrow['height']} px at 820 px")
    assert size <= MAX_BYTES
    assert wide["height"] <= MAX_HEIGHT_PX
    assert narrow["scroll_width"] <= narrow["width"] and narrow["overflowing"] == []
    assert wide["errors"] == [] and narrow["errors"] == []


def test_the_demo_answer_is_on_the_first_screen(browser, demo):
    page = open_report(browser, demo, 1400, 900)
    for sel in ("#headline", "#verdict-lines"):
        assert page.eval_on_selector(sel, "e => e.getBoundingClientRect().bottom") < FIRST_SCREEN_PX
    # the controls' rows are folded behind one button, and all there when it is pressed
    controls = page.locator("#top-grid tr.control")
    assert controls.count() == 5 and not controls.first.is_visible()
    page.locator("#toggle-controls").click()
    assert all(controls.nth(k).is_visible() for k in range(5))


def test_every_demo_verdict_is_one_click_from_its_maps(browser, demo):
    page = open_report(browser, demo, 1400, 900)
    assert check_cell_links(page, demo.parent) > 0
    assert check_audit_values(page, demo.parent) > 0
    assert page.errors == []
