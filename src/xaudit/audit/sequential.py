"""One audit session: each round's audits run (or reloaded), merged, and the summary built."""

from __future__ import annotations

import dataclasses
import hashlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import MethodRefused
from .helpers import plain
from .plan import _planned
from .registry import AUDITS, INFO, audit_params, skipped
from .rounds import copy_result, merge, rounds_to, tag_round
from .types import AuditInput, AuditResult, Cell, Maps


def audit_seed(seed: int, name: str) -> int:
    """The seed of audit ``name``: from the run's audit seed and the name alone.

    Each audit draws from its own generator (and a global RNG seeded the same way), so its
    numbers do not depend on which audits ran before it, or were reloaded on resume.
    """
    digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class Rounds:
    """The audits of one call, round after round: results merged per audit, tables written,
    round results saved and reloaded under ``state``."""

    def __init__(self, inp: AuditInput, run_dir: Any, state: str | None,
                 log: Callable[[str], None], claim: Callable[[str], bool] | None,
                 refused: dict[str, str], controls: list, n_images: int) -> None:
        from .checkpoint import STATE_DIR

        self.run_dir, self.state, self.log, self.claim = run_dir, state, log, claim
        self.refused, self.controls, self.n_images = refused, controls, n_images
        self.figures_dir = Path(run_dir.figures)
        self.figures_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir = Path(run_dir.root) / STATE_DIR if state is not None else None
        self.base_seed = inp.generator.initial_seed()
        self.results: dict[str, AuditResult] = {}  # merged over rounds, in run order
        self.maps_cost: dict[Any, tuple[float, float]] = {}  # trained-map key -> (seconds, evals)
        self.looks: list[dict] = []
        self.plan: dict = {}
        inp.cache["results"] = {}  # this call's results, in run order (correctness reads them)

    def round(self, inp: AuditInput, specs: list[dict], look: int, plan: dict | None,
              model_level: AuditInput | None = None) -> None:
        """Run (or reload) round ``look`` of ``specs`` on ``inp``'s test images; the
        model-level audits on ``model_level``'s."""
        from ..run import fingerprint
        from .checkpoint import load_checkpoint, save_checkpoint

        with tempfile.TemporaryDirectory(prefix="xaudit-round-") as scratch:
            # later rounds' figures are not kept: the report's figures show round 1's images
            figures = self.figures_dir if look == 1 else Path(scratch)
            for number, spec in enumerate(specs, start=1):
                name = spec["name"]
                suffix = _planned(plan["audits"].get(name)) if plan else f" (round {look})"
                self.log(f"audit {number}/{len(specs)} {name}{suffix}")
                source = model_level if INFO[name].model_level and model_level else inp
                params = {k: v for k, v in spec.items() if k != "name"}
                if "n_images" in audit_params(name) and (look > 1 or params.get("n_images") is None):
                    params["n_images"] = self.n_images if look == 1 else len(inp.splits["test"])
                saved = name if look == 1 else f"{name}.round{look}"
                key = fingerprint({"state": self.state, "audit": name, "params": params,
                                   "round": look, "ids": source.splits["test"].ids,
                                   "methods": [e.label for e in source.explainers]})
                loaded = (load_checkpoint(self.state_dir, saved, key, figures)
                          if self.state_dir else None)
                if self.claim is not None and (loaded is not None or INFO[name].needs_others
                                               or not self.claim(name)):
                    continue
                if loaded is not None:
                    result, new_maps = loaded
                    self.log(f"audit {name}: already done, kept")
                else:
                    # Controls are judged like methods by the method audits, and kept out of
                    # the model-level ones (an edge map in a corner is not the model's shortcut).
                    own = source if INFO[name].model_level else dataclasses.replace(
                        inp, explainers=inp.explainers + self.controls)
                    seed = audit_seed(self.base_seed, name if look == 1 else f"{name}/round{look}")
                    result, new_maps = _run_one(own, name, params, seed, figures)
                    if result.model_evals:
                        self.log(f"audit {name}: {result.seconds:.0f} s, "
                                 f"{result.model_evals:,} model evaluations")
                    if not INFO[name].model_level and result.cells and look == 1:
                        result.cells += not_tested_cells(name, self.refused)
                    if look > 1:
                        result.figures = []
                        tag_round(result, look)
                    if self.state_dir is not None:
                        save_checkpoint(self.state_dir, saved, key, result, new_maps, self.log)
                for map_key, cost in new_maps.items():
                    self.maps_cost.setdefault(map_key, cost)
                if look == 1 or name not in self.results:
                    self.results[name] = copy_result(result)
                else:
                    merge(self.results[name], result)
                merged = self.results[name]
                inp.cache.setdefault("results", {})[name] = merged
                if merged.rows:
                    _write_table(self.run_dir.table(f"audit_{name}"), merged.rows,
                                 only_if_changed=loaded is not None)

    def cells(self) -> list[Cell]:
        return [c for r in self.results.values() for c in r.cells]

    def summary(self, labels: list[str], assessment, stop: str,
                continue_hint: Callable[[int], str] | None, rounds: int, alpha: float,
                min_effect: float, decided: dict[str, int], preset: str) -> dict:
        """summary.json's ``audits`` section (docs/audits.md), and tables/scorecard.csv."""
        from .scorecard import scorecard_rows, scorecard_summary, summarize_cells
        from .verdict_lines import images_to_decide, method_lines, verdict

        results = list(self.results.values())
        cells = self.cells()
        rows = scorecard_rows(cells, assessment)
        _write_table(self.run_dir.table("scorecard"), rows,
                     columns=None if rows else ["method", "audit", "metric", "mean", "ci_lo", "ci_hi"])
        summary: dict[str, Any] = {}
        for result in results:
            section = summarize_cells([c for c in result.cells if c.audit == result.name], assessment)
            section.update(result.summary)
            summary[result.name] = section
        lines = method_lines(cells, assessment, summary)
        undecided = {}
        per_image = self._seconds_per_image_label()
        for m, j in assessment.methods.items():
            if m in decided or assessment.state_word(m) != "undecided" or not j.unsure or j.hopeless:
                continue  # decided, or not a matter of more images
            need = images_to_decide(j.unsure, assessment)
            audited = max((len(c.values) for c in j.counted), default=0)
            more = max(need - audited, 0) if need else None
            entry: dict[str, Any] = {"open": [f"{c.audit}.{c.metric}" for c in j.unsure],
                                     "images_audited": audited, "images_to_decide": need}
            if more:
                # timing-dependent, so kept out of the line (the same seed gives the same text)
                entry["estimated_seconds"] = round(more * per_image * (1 + len(self.controls)), 1)
                target = len(self.looks) + rounds_to(more, self.n_images)
                if continue_hint:
                    entry["command"] = continue_hint(target)
                    lines[m] += f"; run `{entry['command']}`"
            undecided[m] = entry
        summary["verdict"] = verdict(assessment, summary.get("shortcut"), lines)
        summary["trusted"] = assessment.trusted
        summary["states"] = {m: assessment.state_word(m) for m in labels}
        summary["verdict_lines"] = lines
        summary["undecided"] = undecided
        summary["rules"] = {"alpha": alpha, "min_effect": min_effect,
                            "look_level": "alpha / (k (k + 1)) at look k",
                            "decided_at_look": decided}
        summary["rounds"] = {"max": rounds, "per_round": self.n_images, "looks": self.looks,
                             "stopped": stop}
        summary["controls"] = [c.label for c in self.controls]
        summary["not_tested"] = self.refused
        summary["preset"] = preset
        summary["plan"] = self.plan
        summary["scorecard"] = scorecard_summary(cells, assessment)
        summary["sections"] = [
            {"title": r.title, "text": r.text, "figures": r.figures,
             "tables": [f"audit_{r.name}"] if r.rows else []}
            for r in results
        ] + [{"title": "Scorecard", "text": summary["verdict"], "figures": [], "tables": ["scorecard"]}]
        summary["cost"] = {r.name: {"seconds": round(r.seconds, 3), "model_evals": int(r.model_evals)}
                           for r in results}
        if self.maps_cost:
            summary["cost"]["maps"] = {
                "seconds": round(sum(s for s, _ in self.maps_cost.values()), 3),
                "model_evals": int(sum(e for _, e in self.maps_cost.values())),
            }
        return plain(summary)

    def _seconds_per_image_label(self) -> float:
        """Audit seconds per image and map scored (method or control), over the rounds run."""
        work = sum(look["images"] for look in self.looks) or 1
        labels = 1 + len(self.controls)
        seconds = sum(r.seconds for r in self.results.values())
        return seconds / (work * labels)


def _shared(key: Any) -> bool:
    """Cache entries every audit sees: earlier results and the trained model's maps.

    Other entries (e.g. a random pairing of images) stay private to the audit that made
    them, so an audit's numbers never depend on whether another ran before it.
    """
    return key == "results" or (isinstance(key, tuple) and bool(key) and key[0] == "maps")


def _run_one(
    inp: AuditInput, name: str, params: dict, seed: int, figures_dir: Path
) -> tuple[AuditResult, dict[Any, tuple[float, float]]]:
    """Run one audit with its own generator, global RNG seed and cache view.

    Returns its result and the trained maps it computed (cache key -> seconds, evals).
    """
    view = {k: v for k, v in inp.cache.items() if _shared(k)}
    before = set(view)
    own = dataclasses.replace(inp, generator=torch.Generator().manual_seed(seed), cache=view)
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            result = AUDITS.get(name)(own, figures_dir, **params)
        except MethodRefused as err:  # a refusal inside one audit skips that audit, stated
            result = skipped(name, name, str(err))
    result.seconds = result.seconds or time.perf_counter() - start
    new_maps: dict[Any, tuple[float, float]] = {}
    for key, value in view.items():
        if not _shared(key):
            continue
        inp.cache[key] = value
        if key not in before and isinstance(value, Maps):
            new_maps[key] = (float(value.seconds), float(value.model_evals))
    return result, new_maps


def not_tested_cells(audit: str, refused: dict[str, str]) -> list[Cell]:
    """One "not tested" cell per refused method: in the scorecard, never in its favour."""

    return [Cell(label, audit, "not_tested", np.array([]), True, None, "refused by the method",
                 forced="not tested", note=why) for label, why in refused.items()]


def _write_table(path: Path, rows: list[dict], only_if_changed: bool = False, columns=None) -> None:
    from ..run import atomic_write_text, csv_text

    text = csv_text(rows, columns or _columns(rows))
    if only_if_changed and path.is_file() and path.read_text(encoding="utf-8") == text:
        return  # a reloaded audit's table is already there: leave it untouched
    atomic_write_text(path, text)


def _columns(rows: list[dict]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    return columns
