"""Acceptance checks of a rendered report, shared by the fast tests (a synthetic run) and the
heavy test on the demo: each reads the run folder's own tables and compares the page to them."""

from __future__ import annotations

import json
from pathlib import Path

# Per-image audit values the viewer shows: (table, column, label), as report/explorer.py.
from xaudit.report.explorer import IMAGE_AUDIT_VALUES
from xaudit.run import read_csv


def scored(run: Path, explained_only: bool = True) -> dict[tuple[str, str], set[str]]:
    """``{(method, audit): ids}`` from the audits' per-image tables: of the explained methods,
    or of every row (the controls' too: their cells link to the images they scored)."""
    methods = set(json.loads((run / "summary.json").read_text())["explanations"])
    out: dict[tuple[str, str], set[str]] = {}
    for path in sorted((run / "tables").glob("audit_*.csv")):
        for r in read_csv(path):
            if (r.get("method") in methods or not explained_only) and r.get("id"):
                out.setdefault((r["method"], path.stem[len("audit_"):]), set()).add(r["id"])
    return out


def tile_ids(page) -> list[str]:
    return page.eval_on_selector_all("#ex-grid .ex-tile", "ts => ts.map(t => t.dataset.id)")


def check_cell_links(page, run: Path) -> int:
    """Every grid cell of a method with per-image rows links to exactly the images it scored;
    returns the number of links followed."""
    expected = scored(run, explained_only=False)
    cells = page.eval_on_selector_all(
        "#top-grid td[data-method]", "tds => tds.map(td => [td.dataset.method, td.dataset.audit,"
        " !!td.querySelector('.imgs')])")
    followed = 0
    for method, audit, linked in cells:
        ids = expected.get((method, audit))
        assert linked == bool(ids), (method, audit)
        if not ids:
            continue
        cell = f"#top-grid td[data-method='{method}'][data-audit='{audit}'] .imgs"
        if not page.locator(cell).is_visible():  # a control's row, folded away
            page.locator("#toggle-controls").click()
        page.locator(cell).click()
        assert sorted(tile_ids(page)) == sorted(ids), (method, audit)
        page.locator("#ex-cell-clear").click()
        followed += 1
    return followed


def check_audit_values(page, run: Path) -> int:
    """Every explorer image an audit scored shows, for each audited method, that image's own
    values (from the per-image tables); returns the number of (image, method) pairs checked."""
    expected = scored(run)
    by_image: dict[str, set[str]] = {}
    for (method, audit), ids in expected.items():
        if any(a == audit for a, _, _ in IMAGE_AUDIT_VALUES):
            for i in ids:
                by_image.setdefault(i, set()).add(method)
    shown = set(tile_ids(page))
    missing = sorted(set(by_image) - shown)
    assert missing == [], f"audited images not in the explorer: {missing[:5]}"
    loc = {(r["method"], r["id"]): r for r in _rows(run, "localization")}
    checked = 0
    for image_id, methods in sorted(by_image.items()):
        page.locator(f".ex-tile[data-id='{image_id}']").click()
        page.wait_for_selector("#ex-viewer:not([hidden])")
        for method in sorted(methods):
            panel = page.locator("#ex-panels .ex-panel", has=page.locator(
                f"figcaption[data-method='{method}']")).first
            text = panel.locator("dl.ex-audit").text_content()
            row = loc.get((method, image_id))
            if row and row.get("auroc") not in (None, ""):
                assert f"{float(row['auroc']):.3f}" in text, (image_id, method)
            assert text.strip(), (image_id, method)
            checked += 1
        page.keyboard.press("Escape")
    return checked


def _rows(run: Path, audit: str) -> list[dict[str, str]]:
    path = run / "tables" / f"audit_{audit}.csv"
    return read_csv(path) if path.is_file() else []
