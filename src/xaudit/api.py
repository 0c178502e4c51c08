"""The library verbs: ``xaudit.explain`` and ``xaudit.audit`` over a ``Classifier``.

Maps come from the explain engine (batches, memory budget, precision) and stay in memory
unless ``out`` names a folder; audits run the registered audit functions and return their
tables, figures and verdict as one object that ``save`` writes out.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .data.base import Record
from .errors import ConfigError
from .explain.base import Explainer, context_for
from .explain.engine import MapStore, explain_dataset
from .explain.fastpath import FastPath
from .inputs import Batch, as_batch
from .models.classifier import Classifier

DEFAULT_METHODS = ("integrated_gradients", "grad_cam")


# ---------------------------------------------------------------- explain


class MemoryMaps:
    """A MapStore held in memory: the same chunk interface, nothing written."""

    def __init__(self, label: str):
        self.label = label
        self.chunks: list[dict[str, Any]] = []

    def done_ids(self) -> set[str]:
        return {i for c in self.chunks for i in c["ids"]}

    def write_chunk(self, ids, maps, targets, delta) -> None:
        self.chunks.append({"ids": list(ids), "maps": maps.float(), "targets": targets.long(),
                            "delta": None if delta is None else delta.float()})

    def load(self, ids: Sequence[str] | None = None) -> dict[str, Any]:
        order = [i for c in self.chunks for i in c["ids"]]
        out: dict[str, Any] = {k: torch.cat([c[k] for c in self.chunks]) for k in ("maps", "targets")}
        if all(c["delta"] is not None for c in self.chunks):
            out["delta"] = torch.cat([c["delta"] for c in self.chunks])
        if ids is not None:
            pos = {i: n for n, i in enumerate(order)}
            take = torch.tensor([pos[i] for i in ids], dtype=torch.long)
            out = {k: v[take] for k, v in out.items()}
            order = list(ids)
        out["ids"] = order
        return out


@dataclass
class MethodMaps:
    """One method's maps: N×H×W signed, channel-summed, in the order of the images."""

    label: str
    maps: torch.Tensor
    targets: torch.Tensor
    delta: torch.Tensor | None
    stats: dict[str, Any]


@dataclass
class Explanations(Mapping):
    """``explain``'s result: method label -> MethodMaps, plus the images' ids."""

    ids: list[str]
    methods: dict[str, MethodMaps] = field(default_factory=dict)

    def __getitem__(self, label: str) -> MethodMaps:
        if label not in self.methods:
            raise KeyError(f"no maps of {label!r}; methods: {', '.join(self.methods)}")
        return self.methods[label]

    def __iter__(self):
        return iter(self.methods)

    def __len__(self) -> int:
        return len(self.methods)


def build_methods(methods: Sequence[str | dict | Explainer] | None) -> list[Explainer]:
    from .explain.base import validate_method_specs

    specs = list(methods or DEFAULT_METHODS)
    built = iter(validate_method_specs([m for m in specs if not isinstance(m, Explainer)]))
    out = [m if isinstance(m, Explainer) else next(built) for m in specs]  # the caller's order
    if len({e.label for e in out}) != len(out):
        raise ConfigError("methods: two methods have the same label; give one a distinct setting")
    return out


def resolve_target(clf: Classifier, target: Any, n: int, labels: Sequence[int] | None,
                   preds: torch.Tensor) -> torch.Tensor:
    """predicted | true | a class name | a class index | one index per image."""
    if isinstance(target, str):
        if target == "predicted":
            return preds.clone()
        if target == "true":
            if labels is None:
                raise ConfigError("target: 'true' needs labels")
            return torch.as_tensor(list(labels), dtype=torch.long)
        if target in clf.classes:
            return torch.full((n,), clf.classes.index(target), dtype=torch.long)
        from .registry import did_you_mean

        raise ConfigError(f"target: {target[:60]!r} is not predicted, true or a class name."
                          f"{did_you_mean(target, clf.classes)}")
    t = torch.as_tensor(target, dtype=torch.long).reshape(-1)
    if len(t) == 1:
        t = t.expand(n).clone()
    if len(t) != n or int(t.min()) < 0 or int(t.max()) >= len(clf.classes):
        raise ConfigError(f"target: expected class indices in 0..{len(clf.classes) - 1}, one per image")
    return t


@torch.no_grad()
def predict(clf: Classifier, x: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """Softmax probabilities, N×K, batched, on the classifier's device."""
    clf.eval()
    out = [clf(x[i : i + batch_size].to(clf.device)).float().softmax(1).cpu()
           for i in range(0, len(x), batch_size)]
    return torch.cat(out)


def explain(clf: Classifier, images: Any, methods: Sequence[str | dict | Explainer] | None = None,
            *, target: Any = "predicted", labels: Sequence[int] | None = None,
            out: str | Path | None = None, seed: int = 0, batch_size: int = 16,
            precision: str = "fp32", adaptive_steps: bool = False,
            memory_budget_mb: int | None = None,
            progress: Callable[[str, int, int], None] | None = None,
            references: Any = None) -> Explanations:
    """Attribution maps of ``images`` for each method (default: integrated gradients and
    Grad-CAM) and the class ``target`` names; in memory, or in ``out/maps/`` when given.
    ``references``: training images (in any form ``images`` takes) that expected_gradients
    draws its baselines from."""
    explainers = build_methods(methods)
    batch = as_batch(images, clf.preprocessing)
    x = clf.preprocessing.normalize(batch.pixels)
    label_idx = _label_indices(clf, labels, batch)
    targets = resolve_target(clf, target, len(batch), label_idx, predict(clf, x).argmax(1))
    ctx = context_for(clf, generator=torch.Generator().manual_seed(seed),
                      references=_references(clf, references))
    records = [Record(id=i, label=-1, image=None) for i in batch.ids]
    pos = {i: n for n, i in enumerate(batch.ids)}
    stores = [MapStore(Path(out) / "maps", e.label) if out is not None else MemoryMaps(e.label)
              for e in explainers]
    fast = FastPath(precision=precision, adaptive_steps=adaptive_steps,
                    memory_budget_mb=memory_budget_mb)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        stats = explain_dataset(
            clf.module, explainers, records, targets.tolist(),
            lambda recs: x[[pos[r.id] for r in recs]], ctx, stores, batch_size, 64,
            clf.device, progress, fast=fast,
        )
    result = Explanations(ids=batch.ids)
    for e, store in zip(explainers, stores, strict=True):
        data = store.load(batch.ids)
        result.methods[e.label] = MethodMaps(e.label, data["maps"], data["targets"],
                                             data.get("delta"), stats[e.label])
    return result


def _references(clf: Classifier, references: Any) -> torch.Tensor | None:
    """Reference images as uint8 pixels in the classifier's geometry (None: none given)."""
    return None if references is None else as_batch(references, clf.preprocessing).pixels


def _label_indices(clf: Classifier, labels: Any, batch: Batch) -> list[int] | None:
    """Labels as class indices: given ones (indices or names), or the folder's class names."""
    given = labels if labels is not None else batch.labels
    if given is None:
        return None
    given = given.tolist() if isinstance(given, torch.Tensor) else list(given)
    if len(given) != len(batch):
        raise ConfigError(f"labels: {len(given)} labels for {len(batch)} images")
    out = []
    for lab in given:
        if isinstance(lab, str):
            if lab not in clf.classes:
                from .registry import did_you_mean

                raise ConfigError(f"labels: {lab[:60]!r} is not one of the classifier's classes."
                                  f"{did_you_mean(lab, clf.classes)}")
            out.append(clf.classes.index(lab))
        elif isinstance(lab, int) and 0 <= lab < len(clf.classes):
            out.append(lab)
        else:
            raise ConfigError(f"labels: {str(lab)[:40]!r} is neither a class name nor an index in "
                              f"0..{len(clf.classes) - 1}")
    return out


# ---------------------------------------------------------------- audit


@dataclass
class AuditReport:
    """``audit``'s result: the scorecard rows, the verdict, every table and figure."""

    summary: dict[str, Any]
    tables: dict[str, str]  # name -> CSV text
    figures: dict[str, bytes]  # file name -> PNG bytes

    @property
    def verdict(self) -> str:
        return self.summary.get("verdict", "")

    @property
    def trusted(self) -> list[str]:
        return list(self.summary.get("trusted") or [])

    @property
    def states(self) -> dict[str, str]:
        """``{method or control: "trusted" | "do not trust" | "undecided" | "no verdict"}``."""
        return dict(self.summary.get("states") or {})

    @property
    def scorecard(self) -> list[dict[str, str]]:
        import csv
        import io

        return list(csv.DictReader(io.StringIO(self.tables.get("scorecard", ""))))

    def save(self, folder: str | Path) -> Path:
        """summary.json, tables/*.csv and figures/*.png under ``folder`` (atomic writes)."""
        from .run import atomic_write_bytes, atomic_write_text, write_json

        folder = Path(folder)
        for name, text in self.tables.items():
            atomic_write_text(folder / "tables" / f"{name}.csv", text)
        for name, data in self.figures.items():
            atomic_write_bytes(folder / "figures" / name, data)
        write_json(folder / "summary.json", {"audits": self.summary})
        return folder


def audit(clf: Classifier, images: Any, labels: Sequence[int | str] | None = None,
          methods: Sequence[str | dict | Explainer] | None = None, *, masks: Any = None,
          audits: Sequence[str | dict] | None = None, target: Any = "predicted",
          n_images: int | None = None, seed: int = 0, out: str | Path | None = None,
          log: Callable[[str], None] | None = None, preset: str = "full",
          controls: bool = True, precision: str = "fp32", adaptive_steps: bool = False,
          memory_budget_mb: int | None = None, rounds: int = 1,
          budget_minutes: float | None = None, alpha: float = 0.05,
          min_effect: float = 0.5, references: Any = None) -> AuditReport:
    """Audit each method's maps of ``images`` (the ``preset``'s audits, ``full`` or ``quick``,
    unless ``audits`` lists some); ``masks`` (one evidence mask per image) enable the
    localization audit. Label randomization needs a retrain and is skipped with its reason.
    ``controls``: score the negative controls (maps that ignore the model) beside the methods.
    ``rounds`` of ``n_images`` (default: all images in one round) are audited until every
    verdict is decided or ``budget_minutes`` would be overrun; ``alpha`` and ``min_effect``
    are the verdict's error rate and smallest difference that matters (docs/audits.md).
    The maps are computed as ``explain`` computes them with the same ``seed``, ``precision``,
    ``adaptive_steps``, ``memory_budget_mb`` and ``references``."""
    from .audit.inputs import audit_images
    from .audit.runner import run_audits
    from .audit.types import AuditInput

    explainers = build_methods(methods)
    batch = as_batch(images, clf.preprocessing, masks)
    label_idx = _label_indices(clf, labels, batch)
    if label_idx is None:
        raise ConfigError("audit: labels are needed (class names or indices, one per image), "
                          "or a folder of class folders")
    x = clf.preprocessing.normalize(batch.pixels)
    preds = predict(clf, x).argmax(1)
    targets = resolve_target(clf, target, len(batch), label_idx, preds)
    test = audit_images(clf, batch.pixels, torch.tensor(label_idx), targets, batch.ids,
                        batch.masks, None)
    inp = AuditInput(
        model=clf.module, explainers=explainers,
        ctx=context_for(clf, generator=torch.Generator().manual_seed(seed),
                        references=_references(clf, references)),
        classes=clf.classes, splits={"test": test},
        generator=torch.Generator().manual_seed(seed + 5),
        blocks=clf.anatomy.randomization_blocks,
        fast=FastPath(precision=precision, adaptive_steps=adaptive_steps,
                      memory_budget_mb=memory_budget_mb),
    )
    n = n_images or len(batch)
    with tempfile.TemporaryDirectory(prefix="xaudit-audit-") as tmp:
        from .run import RunDir, read_inside

        run = RunDir(out if out is not None else tmp)
        run.figures.mkdir(parents=True, exist_ok=True)
        run.tables.mkdir(parents=True, exist_ok=True)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 6)
            summary = run_audits(inp, list(audits or []), run, n, log=log, preset=preset,
                                 controls=controls, rounds=rounds, alpha=alpha,
                                 min_effect=min_effect,
                                 budget_seconds=budget_minutes * 60 if budget_minutes else None,
                                 continue_hint=lambda k: f"xaudit.audit(..., rounds={k})")
        # ``out`` may hold other files: each read as a folder's own file (no FIFO, no link out)
        tables = {p.stem: read_inside(p, run.root).decode("utf-8")
                  for p in sorted(run.tables.glob("*.csv"))}
        figures = {p.name: read_inside(p, run.root) for p in sorted(run.figures.glob("*.png"))}
    report = AuditReport(summary, tables, figures)
    if out is not None:
        report.save(out)
    return report
