"""The report in headless Chromium from file://: no console errors, every image decoded, the
top grid equal to summary.json, filters, the side-by-side viewer, keyboard, load time."""

from __future__ import annotations

import json

import pytest

from tests.browser.checks import check_audit_values, check_cell_links, tile_ids
from tests.browser.chromium import open_report
from tests.browser.measure import measure_page
from tests.browser.synthetic_run import AUDITED_ONLY, write_run
from xaudit.audit.cell_text import fmt
from xaudit.report import render_report
from xaudit.run import read_csv

READY_MS = 2000  # page ready for a 2,000-image run (docs/report.md)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = write_run(tmp_path_factory.mktemp("small") / "run", n_test=12)
    return render_report(root)


def test_page_has_no_console_errors_and_every_image_decodes(browser, small):
    page = open_report(browser, small)
    page.locator("#explorer").scroll_into_view_if_needed()
    page.wait_for_function("[...document.querySelectorAll('#ex-grid img')].every(i => i.src)")
    page.locator(".ex-tile").first.click()
    page.wait_for_selector("#ex-viewer:not([hidden])")
    page.wait_for_function("[...document.images].every(i => i.complete)")
    broken = page.evaluate("[...document.images].filter(i => !i.src || !i.naturalWidth).length")
    total = page.evaluate("document.images.length")
    assert total > 12 and broken == 0
    assert page.errors == []


def test_top_grid_cells_equal_summary_json(browser, small):
    summary = json.loads((small.parent / "summary.json").read_text())
    entries = summary["audits"]["scorecard"]
    page = open_report(browser, small)
    cells = page.eval_on_selector_all("#top-grid td[data-method]", """tds => tds.map(td => ({
        method: td.dataset.method, audit: td.dataset.audit, metric: td.dataset.metric,
        status: td.dataset.status, value: td.querySelector('.val').textContent,
        ci: td.querySelector('.ci').textContent, n: td.querySelector('.n').textContent}))""")
    assert {(c["method"], c["audit"]) for c in cells} == {(e["method"], e["audit"]) for e in entries}
    for c in cells:
        own = [e for e in entries if (e["method"], e["audit"]) == (c["method"], c["audit"])]
        e = next(e for e in own if e["metric"] == c["metric"])
        assert c["status"] == e["status"]
        assert c["value"] == fmt(e["score"]) and c["n"] == f"n={e['n']}"
        assert c["ci"] == f"[{fmt(e['ci'][0])}, {fmt(e['ci'][1])}]"
        if any(x["status"] == "fail" for x in own):  # a failed metric decides the cell
            assert c["status"] == "fail"
    lines = page.eval_on_selector_all("#verdict-lines li", "ls => ls.map(l => l.textContent)")
    assert lines == [summary["audits"]["verdict_lines"][m] for m in summary["explanations"]]
    statuses = {c["status"] for c in cells}
    assert statuses == {"pass", "fail", "inconclusive"}


def test_filters_change_the_visible_count(browser, small):
    # every test image of this run is explained or audited: the explorer holds them all
    rows = read_csv(small.parent / "tables/predictions.csv")
    page = open_report(browser, small)

    def visible() -> int:
        n = page.locator("#ex-grid .ex-tile").count()
        assert page.locator("#ex-count").get_attribute("data-count") == str(n)
        return n

    assert visible() == len(rows)
    page.select_option("#ex-true", "rust")
    assert visible() == sum(r["true"] == "rust" for r in rows)
    page.select_option("#ex-correct", "incorrect")
    assert visible() == sum(r["true"] == "rust" and r["correct"] == "0" for r in rows) > 0
    page.select_option("#ex-true", "")
    assert visible() == sum(r["correct"] == "0" for r in rows)
    page.select_option("#ex-correct", "")
    page.select_option("#ex-sort", "loss-desc")
    preds = {r["id"]: float(r["loss"]) for r in read_csv(small.parent / "tables/predictions.csv")}
    ids = page.eval_on_selector_all("#ex-grid .ex-tile", "ts => ts.map(t => t.dataset.id)")
    assert ids == sorted(preds, key=lambda i: -preds[i])


def test_click_opens_the_side_by_side_view_of_that_image(browser, small):
    page = open_report(browser, small)
    tile = page.locator("#ex-grid .ex-tile").nth(3)  # a right prediction
    image_id = tile.get_attribute("data-id")
    tile.click()
    assert page.locator("#ex-id").text_content() == image_id
    # original + one panel per method; the signed toggle only where maps take both signs
    assert page.locator("#ex-panels .ex-panel").count() == 3
    assert page.locator("#ex-panels .ex-mode").count() == 1
    assert page.locator("#ex-panels .ex-true").count() == 0
    page.locator("#ex-panels .ex-mode").click()
    assert "integrated_gradients (signed)" in page.locator("#ex-panels").text_content()
    assert "maps explain the class" in page.locator("#ex-facts").text_content()
    page.fill("#ex-opacity", "20")
    page.dispatch_event("#ex-opacity", "input")
    assert page.eval_on_selector(".ex-overlay", "o => o.style.opacity") == "0.2"
    # each map has its colour bar: its own scale, and the sign key where it is signed
    keys = page.eval_on_selector_all("#ex-panels .ex-key", "ks => ks.map(k => k.textContent)")
    assert len(keys) == 2 and "red raises" in keys[1] and keys[1].count("0") >= 1
    # the map is drawn in colour over the photo, clear where it is weak
    page.wait_for_function("[...document.querySelectorAll('.ex-overlay')].every(c => c.dataset.drawn)")
    alphas = page.eval_on_selector(".ex-overlay", """c => { const d = c.getContext('2d')
        .getImageData(0, 0, c.width, c.height).data; const a = [];
        for (let k = 3; k < d.length; k += 4) a.push(d[k]); return [Math.min(...a), Math.max(...a)]; }""")
    assert alphas[0] < 64 and alphas[1] > 200
    ids = page.eval_on_selector_all("#ex-grid .ex-tile", "ts => ts.map(t => t.dataset.id)")
    page.keyboard.press("ArrowRight")
    assert page.locator("#ex-id").text_content() == ids[4]
    page.keyboard.press("Escape")
    assert page.locator("#ex-viewer").is_hidden()
    assert page.evaluate("document.activeElement.dataset.id") == ids[4]
    page.keyboard.press("ArrowLeft")
    assert page.evaluate("document.activeElement.dataset.id") == ids[3]
    page.keyboard.press("Enter")
    assert page.locator("#ex-id").text_content() == ids[3]


def test_a_wrong_prediction_shows_the_true_class_map_too(browser, small):
    rows = read_csv(small.parent / "tables/predictions.csv")
    wrong = next(r for r in rows if r["correct"] == "0")
    page = open_report(browser, small)
    page.locator(f".ex-tile[data-id='{wrong['id']}']").click()
    captions = page.eval_on_selector_all("#ex-panels figcaption", "cs => cs.map(c => c.textContent)")
    assert captions == ["original", "saliency", f"saliency · true class {wrong['true']}",
                        "integrated_gradients", f"integrated_gradients · true class {wrong['true']}"]
    # the true-class panel shows its own map, not the predicted class's
    page.wait_for_function("[...document.querySelectorAll('.ex-overlay')].every(c => c.dataset.drawn)")
    overlays = page.eval_on_selector_all("#ex-panels .ex-overlay", "os => os.map(o => o.toDataURL())")
    assert overlays[0] != overlays[1] and overlays[2] != overlays[3]


def test_a_scorecard_cell_links_to_the_images_behind_it(browser, small):
    loc = read_csv(small.parent / "tables/audit_localization.csv")
    audited = sorted({r["id"] for r in loc if r["method"] == "saliency"})
    page = open_report(browser, small)
    cell = "#top-grid td[data-method='saliency'][data-audit='localization']"
    assert page.locator(f"{cell} .imgs").text_content() == f"{len(audited)} images ›"
    # no per-image table behind the faithfulness cells of this run: no link
    assert page.locator("#top-grid td[data-audit='faithfulness'] .imgs").count() == 0
    page.locator(f"{cell} .imgs").click()
    ids = page.eval_on_selector_all("#ex-grid .ex-tile", "ts => ts.map(t => t.dataset.id)")
    assert sorted(ids) == audited
    assert page.locator("#ex-count").get_attribute("data-count") == str(len(audited))
    assert page.locator("#ex-cell-label").text_content() == "saliency · localization"
    page.locator("#ex-cell-clear").click()
    total = len(read_csv(small.parent / "tables/explained_images.csv")) + AUDITED_ONLY
    assert page.locator("#ex-grid .ex-tile").count() == total
    assert page.locator("#ex-cell").is_hidden()
    assert page.errors == []


def test_audit_values_of_the_image_are_shown(browser, small):
    loc = read_csv(small.parent / "tables/audit_localization.csv")
    row = next(r for r in loc if r["method"] == "saliency")
    page = open_report(browser, small)
    page.locator(f".ex-tile[data-id='{row['id']}']").click()
    text = page.locator("#ex-panels").text_content()
    assert "pointing-game hit" in text and f"{float(row['auroc']):.3f}" in text
    # the similarity at the deepest cascading step (depth 1 here): 0.1 + 0.01 k
    k = [r["id"] for r in loc if r["method"] == "saliency"].index(row["id"])
    assert f"randomized-modelsimilarity{0.1 + 0.01 * k:.3f}" in text.replace(" ", "")


@pytest.mark.parametrize("width", [1400, 820])
def test_top_screen_numbers_never_wrap(browser, small, width, tmp_path):
    page = open_report(browser, small, width=width)
    page.screenshot(path=str(tmp_path / f"top-{width}.png"))
    wrapped = page.eval_on_selector_all(
        "#top-grid .num, .fact .v", "ns => ns.filter(n => n.getClientRects().length > 1"
        " || n.scrollWidth > n.clientWidth + 1).map(n => n.textContent)")
    assert page.locator("#top-grid td[data-method]").count() == 4
    assert wrapped == []
    # The grid and the verdict lines are on the first screen.
    assert page.eval_on_selector("#top-grid", "t => t.getBoundingClientRect().bottom") < 900


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    root = write_run(tmp_path_factory.mktemp("large") / "run", n_test=2000)
    return render_report(root)


def test_a_2000_image_report_is_ready_within_2_s(browser, large):
    size_mb = large.stat().st_size / 1e6
    page = open_report(browser, large)
    ready_ms = int(page.get_attribute("body", "data-ready-ms"))
    print(f"2,000-image report: {size_mb:.1f} MB, ready in {ready_ms} ms")
    assert page.locator("#ex-grid .ex-tile").count() == 2000
    assert ready_ms <= READY_MS
    assert page.errors == []


def test_the_csp_runs_only_the_pages_own_script(browser, small, tmp_path):
    html = small.read_text(encoding="utf-8")
    tampered = tmp_path / "report.html"
    tampered.write_text(html.replace("<script>//", "<script>/* changed */ //", 1),
                        encoding="utf-8")
    assert tampered.read_text(encoding="utf-8") != html
    page = browser.new_page()
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(tampered.as_uri())
    page.wait_for_timeout(500)
    assert page.get_attribute("body", "data-ready") is None
    assert any("Content Security Policy" in e for e in errors)


def test_every_grid_cell_links_to_the_images_it_scored(browser, small):
    page = open_report(browser, small)
    assert check_cell_links(page, small.parent) == 2  # the localization cell of each method
    assert page.errors == []


def test_audited_images_not_explained_are_in_the_explorer_with_their_values(browser, small):
    page = open_report(browser, small)
    explained = {r["id"] for r in read_csv(small.parent / "tables/explained_images.csv")}
    extra = [i for i in tile_ids(page) if i not in explained]
    assert len(extra) == AUDITED_ONLY
    assert check_audit_values(page, small.parent) == 2 * 6  # 6 audited images, 2 methods
    page.locator(f".ex-tile[data-id='{extra[0]}']").click()
    assert "audited, not in the explained selection" in page.locator("#ex-facts").text_content()
    assert page.errors == []


def test_headline_and_action_are_on_the_first_screen(browser, small):
    page = open_report(browser, small)
    for sel in ("#headline", "#verdict-lines"):
        assert page.eval_on_selector(sel, "e => e.getBoundingClientRect().bottom") < 900, sel


@pytest.mark.parametrize("width", [1400, 820])
def test_nothing_overflows_the_page(browser, small, width):
    page = open_report(browser, small, width=width)
    m = measure_page(page)
    assert m["scroll_width"] <= m["width"] and m["overflowing"] == [], m
    assert m["errors"] == []
