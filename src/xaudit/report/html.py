"""The self-contained HTML report of a run directory.

One file: figures embedded as base64 PNG data URIs, CSS inline, one inline script (sortable
tables, the image explorer), nothing loaded from the network: the page's
Content-Security-Policy allows images from data: URIs and only the script whose sha256 it
names. Every string that comes from the run (class names, ids, recipe values, audit texts)
goes through jinja2's autoescaping; the one exception is the explorer's JSON data block,
whose '<', '>' and '&' are escaped as JSON unicode escapes instead (``payload_json``).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from ..errors import XauditError
from ..run import RunDir, atomic_write_text, read_csv, read_inside, read_json
from .answer import answer
from .captions import caption_of, display_width
from .explorer import explorer_payload, payload_json, static_text
from .formats import fmt_number, fmt_value  # noqa: F401  (re-exported)
from .known_truth import known_truth_table
from .notices import embeddable_figures, notices

TEMPLATE_DIR = Path(__file__).parent / "templates"
MAX_TABLE_ROWS = 200
EXPLAIN_PREFIXES = ("explain_", "grid_", "cvi_")
# Figures with a fixed place in the report.
FIXED_FIGURES = ("dataset_examples.png", "history.png", "confusion_matrix.png", "top_losses.png",
                 "top_losses_maps.png")
# CSV columns that hold names or ids: shown verbatim even when they look like numbers.
TEXT_COLUMNS = {"id", "class", "true", "pred", "predicted", "file", "path", "name", "method",
                "label", "split", "reason"}
_FLOAT = re.compile(r"^[+-]?(\d+\.\d*|\.\d+|\d+(\.\d*)?[eE][+-]?\d+|\.\d+[eE][+-]?\d+)$")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?%?$")
SPLIT_ORDER = ("train", "val", "test")


def fmt_seconds(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:,.1f}" if value >= 1 or value == 0 else f"{value:.3f}"
    return fmt_value(value)


def fmt_percent(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{100.0 * value:.1f}%"
    return fmt_value(value)


def _fmt_cell(column: str, value: str) -> str:
    if column.lower() in TEXT_COLUMNS or not _FLOAT.match(value.strip()):
        return value
    return fmt_number(float(value))


def csv_table(rows: list[dict[str, str]], limit: int = MAX_TABLE_ROWS) -> dict:
    """A CSV (as read by ``read_csv``) as {columns, rows, more}: cells formatted, rows capped."""
    columns = list(rows[0].keys()) if rows else []
    body = [[_fmt_cell(c, row.get(c) or "") for c in columns] for row in rows[:limit]]
    return {"columns": columns, "rows": body, "more": max(0, len(rows) - limit),
            "numeric": _numeric_columns(columns, body)}


def _numeric_columns(columns: list[str], body: list[list[str]]) -> list[bool]:
    """Columns whose every non-empty cell is a number (right-aligned in the report)."""
    def is_num(cell: str) -> bool:
        return bool(_NUMBER.match(cell.replace(",", "")))

    return [
        bool(body) and columns[i].lower() not in TEXT_COLUMNS
        and all(is_num(row[i]) for row in body if row[i] not in ("", "–"))
        for i in range(len(columns))
    ]


# ---------------------------------------------------------------- inputs -------------------------


def _plain_name(name: str, folder: str) -> str:
    """A file name from summary.json, refused if it could point outside ``folder``."""
    if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
        raise XauditError(f"summary.json names {name!r} in {folder}/: expected a plain file name")
    return name


def _load_summary(run: RunDir) -> dict:
    hint = f"run `xaudit evaluate {run.root}` first"
    if not run.summary_path.is_file():
        raise XauditError(f"no summary.json in {run.root}: {hint}", hint=hint)
    try:
        summary = read_json(run.summary_path)
    except XauditError as err:  # not JSON, not UTF-8, not a regular file of the folder
        raise XauditError(f"{err}: {hint}", hint=hint) from None
    if not isinstance(summary, dict):
        raise XauditError(f"summary.json in {run.root} is not a JSON object: {hint}", hint=hint)
    if not isinstance(summary.get("test"), dict):
        raise XauditError(f"summary.json in {run.root} has no test metrics: {hint}", hint=hint)
    return summary


def _load_recipe_text(run: RunDir) -> str:
    if not run.recipe_path.is_file():
        hint = "create a run with `xaudit run RECIPE`"
        raise XauditError(f"no recipe.yaml in {run.root}: not a run folder; {hint}", hint=hint)
    return read_inside(run.recipe_path, run.root, max_bytes=2**20).decode("utf-8", errors="replace")


def _required_table(run: RunDir, name: str, stage: str) -> list[dict[str, str]]:
    path = run.table(name)
    if not path.is_file():
        hint = f"run `xaudit {stage} {run.root}` first"
        raise XauditError(f"no tables/{name}.csv in {run.root}: {hint}", hint=hint)
    return read_csv(path)


def _optional_table(run: RunDir, name: str) -> list[dict[str, str]] | None:
    path = run.table(name)
    return read_csv(path) if path.is_file() else None


def _figure(run: RunDir, name: str) -> dict:
    data = read_inside(run.figures / name, run.figures)
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return {"name": name, "uri": uri, "caption": caption_of(name), "width": display_width(data)}


# ---------------------------------------------------------------- sections -----------------------


def _header(summary: dict) -> dict:
    versions = summary.get("versions") or {}
    return {
        "name": fmt_value(summary.get("name", "run")),
        "created": fmt_value(summary.get("created")),
        "seed": fmt_value(summary.get("seed")),
        "versions": [(k, fmt_value(v)) for k, v in versions.items()],
        "timing": [(k, fmt_seconds(v)) for k, v in (summary.get("timing") or {}).items()],
    }


def _splits(per_class: dict) -> list[str]:
    known = [s for s in SPLIT_ORDER if s in per_class]
    return known + [s for s in per_class if s not in known]


def _dataset(run: RunDir, summary: dict, figures: dict[str, dict]) -> dict | None:
    ds = summary.get("dataset")
    if not isinstance(ds, dict):
        return None
    per_class = ds.get("per_class") or {}
    splits = _splits(per_class)
    classes = list(ds.get("classes") or [])
    for split in splits:  # classes missing from the list still get a row
        classes += [c for c in per_class[split] if c not in classes]
    rows = []
    for c in classes:
        counts = [int(per_class[s].get(c, 0)) for s in splits]
        rows.append([c, *(fmt_number(n) for n in counts), fmt_number(sum(counts))])
    totals = [sum(int(per_class[s].get(c, 0)) for c in classes) for s in splits]
    skipped_rows = _optional_table(run, "skipped")
    return {
        "facts": [
            ("name", fmt_value(ds.get("name"))),
            ("source", fmt_value(ds.get("source"))),
            ("classes", fmt_number(len(classes))),
            ("images", ", ".join(f"{k} {fmt_value(v)}" for k, v in (ds.get("n") or {}).items())),
            ("ground-truth masks", fmt_value(bool(ds.get("has_masks")))),
        ],
        "per_class": {
            "columns": ["class", *splits, "total"],
            "rows": rows,
            "numeric": [False] + [True] * (len(splits) + 1),
            "totals": ["total", *(fmt_number(n) for n in totals), fmt_number(sum(totals))],
        } if splits else None,
        "skipped": fmt_value(ds.get("skipped", len(skipped_rows or []))),
        "skipped_table": csv_table(skipped_rows) if skipped_rows else None,
        "figure": figures.get("dataset_examples.png"),
    }


MODEL_FIELDS = (
    ("name", "architecture"), ("weights", "weights"), ("mode", "training mode"),
    ("trainable_params", "trainable parameters"), ("total_params", "total parameters"),
    ("resize_size", "resize to"), ("image_size", "crop to"), ("mean", "normalise mean"),
    ("std", "normalise std"), ("target_layer", "CAM target layer"),
)
TRAIN_FIELDS = (
    ("epochs_run", "epochs run"), ("best_epoch", "best epoch"),
    ("best_val_accuracy", "best validation accuracy"), ("seconds", "seconds"),
    ("feature_cache", "frozen-feature cache"),
)


def _facts(section: dict, fields: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Known keys with readable labels first, then any other keys as they are."""
    fields = list(fields)
    known = [k for k, _ in fields]
    def fmt(key: str, value: Any) -> str:
        return fmt_seconds(value) if key == "seconds" else fmt_value(value)

    out = [(label, fmt(k, section[k])) for k, label in fields if k in section]
    out += [(k, fmt(k, v)) for k, v in section.items() if k not in known]
    return out


def _test(run: RunDir, summary: dict, figures: dict[str, dict]) -> dict:
    test = summary["test"]
    most_confused = _optional_table(run, "most_confused")
    return {
        "stats": [
            ("accuracy", fmt_percent(test.get("accuracy"))),
            ("macro F1", fmt_value(test.get("macro_f1"))),
            ("test images", fmt_value(test.get("n"))),
            ("mean loss", fmt_value(test.get("loss"))),
        ],
        "per_class": csv_table(_required_table(run, "metrics_per_class", "evaluate")),
        "confusion": figures.get("confusion_matrix.png"),
        "most_confused": csv_table(most_confused) if most_confused else None,
        "top_losses": figures.get("top_losses.png"),
        "top_losses_maps": figures.get("top_losses_maps.png"),
    }


def _method_of(stem: str, labels: list[str]) -> str | None:
    """The longest method label that ``stem`` (prefix removed) starts with, as a whole token."""
    hits = [lab for lab in labels if stem == lab or stem.startswith(lab + "_")]
    return max(hits, key=len) if hits else None


def _explanations(summary: dict, figures: dict[str, dict], taken: set[str]) -> dict | None:
    """Cost table and explanation figures (``taken``: figures already shown by an audit, or
    replaced by the explorer)."""
    costs = summary.get("explanations") or {}
    names = [n for n in figures if n.startswith(EXPLAIN_PREFIXES) and n not in taken]
    if not costs and not names and not summary.get("explanations_refused"):
        return None
    labels = list(costs)
    methods = {lab: [] for lab in labels}
    panels, other = [], []
    for name in names:
        if name.startswith("explain_"):
            panels.append(figures[name])
            continue
        prefix = "grid_" if name.startswith("grid_") else "cvi_"
        method = _method_of(name[len(prefix):-len(".png")], labels)
        (methods[method] if method else other).append(figures[name])
    cost_rows = []
    for lab, cost in costs.items():
        cost = cost or {}
        n, secs = cost.get("n_images"), cost.get("seconds")
        per_image = secs / n if isinstance(secs, int | float) and isinstance(n, int) and n else None
        cost_rows.append([lab, fmt_value(n), fmt_seconds(secs), fmt_seconds(per_image),
                          fmt_value(cost.get("model_evals")), fmt_value(cost.get("params") or None)])
    return {
        "costs": {
            "columns": ["method", "images", "seconds", "s / image", "model evaluations",
                        "parameters"],
            "rows": cost_rows,
            "numeric": [False, True, True, True, True, False],
        },
        "panels": panels,
        "methods": [(lab, methods[lab]) for lab in labels if methods[lab]],
        "other": other,
        "refused": [(fmt_value(lab), fmt_value(why)) for lab, why in
                    (summary.get("explanations_refused") or {}).items()],
    }


def _audits(run: RunDir, summary: dict, figures: dict[str, dict],
            replaced: set[str] = frozenset()) -> tuple[dict | None, list]:
    """The verdict and one section per audit (``replaced``: figures the explorer shows)."""
    audits = summary.get("audits")
    if not isinstance(audits, dict):
        return None, []
    scorecard = _optional_table(run, "scorecard")
    verdict = {
        "text": fmt_value(audits.get("verdict") or "no verdict"),
        "trusted": [fmt_value(t) for t in audits.get("trusted") or []],
        "scorecard": csv_table(scorecard) if scorecard else None,
    }
    hint = f"run `xaudit audit {run.root}` again"
    sections = []
    for sec in audits.get("sections") or []:
        title = fmt_value(sec.get("title", "audit"))
        if title == "Scorecard":  # shown once, on the first screen
            continue
        sec_figures, sec_tables = [], []
        for name in sec.get("figures") or []:
            name = _plain_name(name, "figures")
            if name in replaced:  # shown better by the explorer
                continue
            if name not in figures and (run.figures / name).is_symlink():
                raise XauditError(f"figures/{name} in {run.root} is a symbolic link: a report embeds "
                                  "only plain files")
            if name not in figures:
                raise XauditError(
                    f"no figures/{name} in {run.root} (listed by audit {title!r}): {hint}",
                    hint=hint,
                )
            sec_figures.append(figures[name])
        for name in sec.get("tables") or []:
            name = _plain_name(name, "tables")
            rows = _optional_table(run, name)
            if rows is None:
                raise XauditError(
                    f"no tables/{name}.csv in {run.root} (listed by audit {title!r}): {hint}",
                    hint=hint,
                )
            sec_tables.append({"name": name, **csv_table(rows)})
        text = str(sec.get("text") or "")
        sections.append({
            "title": title,
            "paragraphs": [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()],
            "figures": sec_figures,
            "tables": sec_tables,
        })
    return verdict, sections


# ---------------------------------------------------------------- render -------------------------


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def build_context(run_dir: str | Path, originals=None) -> dict:
    """Everything the template shows, as plain strings, lists and dicts (no markup but the
    explorer's escaped JSON). ``originals``: how to load the explained images (tests)."""
    run = RunDir(run_dir)
    recipe_text = _load_recipe_text(run)
    summary = _load_summary(run)
    names, refused = embeddable_figures(run)
    explorer = _explorer(run, summary, originals)
    # The explorer shows every explained (and audited) image with every method's map: the
    # static galleries of the same maps would repeat it, several megabytes over.
    replaced = replaced_figures(names, explorer)
    figures = {name: _figure(run, name) for name in names if name not in replaced}
    verdict, audit_sections = _audits(run, summary, figures, replaced)
    model, train = summary.get("model"), summary.get("train")
    context = {
        "header": _header(summary),
        "notices": notices(run, summary) + [f"Not embedded: {r}" for r in refused],
        "verdict": verdict,
        "dataset": _dataset(run, summary, figures),
        "model": _facts(model, MODEL_FIELDS) if isinstance(model, dict) else None,
        "training": {
            "facts": _facts(train, TRAIN_FIELDS) if isinstance(train, dict) else [],
            "figure": figures.get("history.png"),
        } if isinstance(train, dict) or "history.png" in figures else None,
        "test": _test(run, summary, figures),
        "explanations": _explanations(
            summary, figures, {f["name"] for f in _walk_figures(audit_sections)}
        ),
        "in_explorer": len(replaced),
        "audits": audit_sections,
        "recipe": recipe_text,
        "answer": answer(run, summary),
        "known_truth": known_truth_table(summary),
        "explorer": explorer,
    }
    used = {f["name"] for f in _walk_figures(context)} | replaced
    context["other_figures"] = [figures[n] for n in names if n not in used]
    return context


def replaced_figures(names: list[str], explorer: dict | None) -> set[str]:
    """Figures another one repeats: the highest-loss images where a figure shows them with
    their maps; the per-image and per-class galleries of maps, and the localization overlays
    once the explorer holds the images localization scored."""
    out = {"top_losses.png"} if "top_losses_maps.png" in names else set()
    if explorer is None:
        return out & set(names)
    out |= {n for n in names if n.startswith(EXPLAIN_PREFIXES)}
    if explorer["audited"].get("localization"):
        out |= {n for n in names if n.startswith("audit_localization")}
    return out & set(names)


def _explorer(run: RunDir, summary: dict, originals) -> dict | None:
    payload = explorer_payload(run, summary, originals)
    if payload is None:
        return None
    audited: dict[str, int] = {}
    for key, members in payload["cells"].items():
        audit = key.split("\t")[1]
        audited[audit] = max(audited.get(audit, 0), len(members))
    return {"n": len(payload["images"]), "note": payload["note"], "audited": audited,
            "json": Markup(payload_json(payload))}


def script_hash(script: str) -> str:
    """The CSP source that allows exactly this inline script."""
    digest = hashlib.sha256(script.encode("utf-8")).digest()
    return "sha256-" + base64.b64encode(digest).decode("ascii")


def _walk_figures(obj: Any) -> Iterable[dict]:
    if isinstance(obj, dict):
        if "uri" in obj and "name" in obj:
            yield obj
            return
        for v in obj.values():
            yield from _walk_figures(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            yield from _walk_figures(v)


def render_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report.html`` from what earlier stages stored; return its path."""
    run = RunDir(run_dir)
    html = render_html(build_context(run.root))
    atomic_write_text(run.report_path, html)
    return run.report_path


def render_html(context: dict) -> str:
    """The page of a context from ``build_context``."""
    script = static_text("report.js")
    return _environment().get_template("report.html").render(
        **context, script=Markup(script), script_hash=script_hash(script),
        css=Markup(static_text("report.css")))
