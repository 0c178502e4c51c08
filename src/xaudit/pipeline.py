"""The pipeline: recipe -> data -> model -> train -> evaluate -> explain -> audit -> report.

Every stage reads and writes one run directory. A stage whose fingerprint (its recipe
sections chained with the stages before it) matches the manifest is not redone; a changed
recipe re-runs exactly the stages it affects and those after them.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import torch

from . import __version__
from .class_checks import check_class_values
from .config import Recipe, load_recipe, to_dict
from .data import load_dataset
from .data.base import DatasetBundle
from .data.transforms import DecodedStore, Preprocessing
from .distributed import current_world, local_device, step
from .errors import XauditError
from .explain.engine import select_ids
from .interrupts import entering, finished
from .lock import run_lock
from .models import Classifier
from .models.memory import check_fits
from .models.sources import build_classifier, check_code_trusted, recipe_preprocessing
from .run import STAGES, RunDir, dependents, read_csv, stage_fingerprints
from .stages.explain import Where
from .stored import read_model_meta

Progress = Callable[[str, int, int], None]


def _quiet(_d: str, _n: int, _t: int) -> None:
    pass


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise XauditError("device: cuda was requested but no CUDA device is available. Allowed here: cpu, auto")
    return torch.device(name)


def versions() -> dict[str, str]:
    import captum
    import torchvision

    return {
        "xaudit": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "captum": captum.__version__,
    }


class Pipeline:
    """Runs the stages of one recipe into its run directory.

    It holds what several stages share within one process (the dataset, the decoded
    images, the classifier) and hands each stage function exactly what it reads.
    """

    def __init__(self, recipe: Recipe, run_dir: str | Path | None = None, progress: Progress | None = None,
                 log: Callable[[str], None] | None = None, trust_code: bool | str | None = None):
        """``trust_code``: the code the model's files may name and xaudit may call (True: any;
        a factory's name: that one). By default the factory the recipe names, since the
        caller gave the recipe; ``from_run_dir`` trusts nothing by default."""
        self.recipe = recipe
        self.trust_code = (recipe.model.module or False) if trust_code is None else trust_code
        self.run = RunDir(run_dir or recipe.run_dir)
        self.progress = progress or _quiet
        self.log = log or (lambda _m: None)
        # Under torchrun: this process's rank; rank 0 alone writes the run's shared files.
        self.world = current_world()
        self.device = local_device(resolve_device(recipe.device))
        self._bundle: DatasetBundle | None = None
        self._store: DecodedStore | None = None
        self._clf: Classifier | None = None
        self._pre: Preprocessing | None = None
        self._cache: dict = {}  # the frozen-mode feature cache, shared by training and audits
        self.fingerprints = recipe_fingerprints(recipe)

    @classmethod
    def from_run_dir(cls, run_dir: str | Path, overrides: list[str] | None = None,
                     trust_code: bool = False, **kw) -> Pipeline:
        """The run folder's own recipe.yaml. It came with the folder, so the code it or the
        model's files name runs only with ``trust_code=True``, or when a ``--set
        model.module=...`` of the caller names that factory."""
        rd = RunDir(run_dir).require()
        recipe = load_recipe(rd.recipe_path, overrides)
        trust: bool | str = trust_code is True or _module_set_by_caller(overrides, recipe)
        check_code_trusted(recipe.model, trust, f"{rd.recipe_path}: model.module")
        return cls(recipe, rd.root, trust_code=trust, **kw)

    @property
    def where(self) -> Where:
        return Where(self.run, self.world, self.device, self.progress, self.log)

    # ----------------------------------------------------------------- shared state
    def _trained(self) -> bool:
        return (not self.recipe.train.skip and (self.run.model_dir / "model.json").is_file()
                and self.run.stage_done("train", self.fingerprints["train"]))

    def preprocessing(self) -> Preprocessing:
        """The trained model's (model.json), else the recipe's model's, read from metadata."""
        if self._pre is None:
            if self._clf is not None:
                self._pre = self._clf.preprocessing
            elif self._trained():
                meta = read_model_meta(self.run.model_dir / "model.json", need_preprocessing=True)
                self._pre = Preprocessing.from_dict(meta["preprocessing"])
            else:
                self._pre = recipe_preprocessing(self.recipe.model)
        return self._pre

    def dataset(self) -> DatasetBundle:
        if self._bundle is None:
            t0 = time.perf_counter()
            self.log("loading data")
            bundle = load_dataset(self.recipe.data, self.recipe.seed)
            if self.recipe.train.skip:
                from .stages.data import relabel_to

                clf = self.classifier()
                bundle = relabel_to(bundle, clf.classes, f"the {clf.source.get('source')} model "
                                                         f"{clf.source.get('name', '')}".strip())
            check_class_values(self.recipe, bundle)
            self._bundle = bundle
            self._timing("data", time.perf_counter() - t0)
        return self._bundle

    def store(self) -> DecodedStore:
        """Decoded images of every split (bad files skipped or failed per the recipe)."""
        if self._store is None:
            from .stages.data import decode, write_dataset_tables

            bundle = self.dataset()
            t0 = time.perf_counter()
            store = decode(bundle, self.preprocessing(), self.recipe.data,
                           not self.recipe.train.skip, self.log, self.run.table("skipped"))
            self._store = store
            self._timing("decode", time.perf_counter() - t0)
            if self.world.is_main:
                write_dataset_tables(self.run, bundle, store, self.recipe.data.source,
                                     self.recipe.train.skip)
        return self._store

    def _timing(self, key: str, seconds: float) -> None:
        if not self.world.is_main:
            return
        summary = self.run.summary()
        timing = summary.get("timing", {})
        timing[key] = round(seconds, 3)
        # This process's peak resident memory once the stage ended (Linux: ru_maxrss in KiB);
        # a resumed run reports its own process only.
        memory = summary.get("memory", {"peak_rss_mb_after": {}})
        memory["peak_rss_mb_after"][key] = round(peak_rss_mb(), 1)
        memory["peak_rss_mb"] = max(memory["peak_rss_mb_after"].values())
        self.run.update_summary(timing=timing, memory=memory)

    def classifier(self) -> Classifier:
        """The run's model: trained and saved by the train stage, or the recipe's as it is."""
        if self._clf is None:
            m = self.recipe.model
            if self._trained():
                # model.json names its factory: called only if the caller trusts it
                clf = Classifier.from_run(self.run.model_dir, trust_code=self.trust_code)
                if m.target_layer:
                    clf = clf.with_overrides(cam_layer=m.target_layer)
            else:
                classes = [] if self.recipe.train.skip else self.dataset().classes
                clf = build_classifier(m, classes, self.recipe.train.skip, self.recipe.seed,
                                       self.trust_code)
            self._clf = clf.to(self.device)
        return self._clf

    def model(self) -> torch.nn.Module:
        return self.classifier().module

    def explained_rows_all(self) -> list[dict]:
        """The stored predictions table of the test split, typed."""
        rows = read_csv(self.run.table("predictions"))
        for r in rows:
            for k in ("true_idx", "pred_idx", "correct"):
                r[k] = int(r[k])
            r["loss"], r["prob"] = float(r["loss"]), float(r["prob"])
        return rows

    def explained_rows(self) -> list[dict]:
        rows = self.explained_rows_all()
        ids = select_ids(rows, self.recipe.explain.select, self.recipe.seed)
        by_id = {r["id"]: r for r in rows}
        return [by_id[i] for i in ids]

    # ----------------------------------------------------------------- stages
    def stage_train(self) -> None:
        from .stages.train import train_stage

        bundle, store = self.dataset(), self.store()
        clf = self.classifier() if self.recipe.train.skip else build_classifier(
            self.recipe.model, bundle.classes, False, self.recipe.seed, self.trust_code)
        r = self.recipe
        check_fits(clf.module, clf.preprocessing.image_size,
                   {"train.batch_size": (r.train.batch_size, r.model.mode == "finetune" and not r.train.skip),
                    "evaluate.batch_size": (r.evaluate.batch_size, False)}, self.device)
        t0 = time.perf_counter()
        clf, cache = train_stage(clf, bundle, store, self.recipe, self.run, self.device,
                                 self.progress, self.log)
        self._clf, self._cache["cache"] = clf.to(self.device), cache
        if not self.recipe.train.skip:
            self._timing("train", time.perf_counter() - t0)

    def stage_evaluate(self) -> None:
        from .stages.evaluate import evaluate_stage

        t0 = time.perf_counter()
        bundle, store, clf = self.dataset(), self.store(), self.classifier()
        evaluate_stage(clf, bundle.splits["test"], store, self.recipe.evaluate,
                       self.recipe.train.skip, self.run, self.device, self.progress)
        self._timing("evaluate", time.perf_counter() - t0)

    def stage_explain(self) -> None:
        from .stages.explain import explain_stage

        t0 = time.perf_counter()
        bundle, store, clf = self.dataset(), self.store(), self.classifier()
        rows = self.explained_rows()
        explain_stage(clf, rows, bundle.splits["test"], store, self.recipe,
                      self.fingerprints["evaluate"], self.where)
        self._timing("explain", time.perf_counter() - t0)
        if self.world.is_main:  # reads the stored maps only: no number of the stage changes
            from .stages.truth import truth_stage

            methods = list(self.run.summary().get("explanations") or {})
            truth_stage(clf, rows, bundle.splits["test"], self.recipe, methods, self.where)

    def stage_audit(self) -> None:
        if not self.recipe.audit.enabled:
            if self.world.is_main:
                self.run.update_summary(audits=None)
            return
        from .stages.audit import audit_stage, make_retrain_shuffled, state_key

        t0 = time.perf_counter()
        bundle, store, clf = self.dataset(), self.store(), self.classifier()
        retrain = make_retrain_shuffled(self.recipe, bundle, store, clf.preprocessing,
                                        self.device, self._cache, self.trust_code)
        audit_stage(clf, bundle, store, self.explained_rows_all(), self.recipe,
                    state_key(rounds_free_fingerprint(self.recipe), self.run), self.where, retrain,
                    upstream=self.fingerprints["evaluate"])
        self._timing("audit", time.perf_counter() - t0)

    def stage_report(self) -> Path:
        from .report import render_report

        return render_report(self.run.root)

    # ----------------------------------------------------------------- driver
    def run_stages(self, stages: list[str] | None = None, force: bool = False) -> Path:
        """Run ``stages`` (default: all); finished stages with a matching fingerprint are kept."""
        with run_lock(self.run.root, self.world, self.log):
            return self._run_stages(stages, force)

    def _run_stages(self, stages: list[str] | None, force: bool) -> Path:
        step(self.world, self._open_run, main_only=True)
        wanted = stages or list(STAGES)
        redo = force
        for stage in STAGES:
            if stage not in wanted:
                continue
            fp = self.fingerprints[stage]
            if not redo and stage != "report" and self.run.stage_done(stage, fp):
                self.log(f"{stage}: already done, kept")
                continue
            self._stage(stage)
        return self.run.report_path

    def _open_run(self) -> None:
        self.run.create()
        self.run.save_recipe(to_dict(self.recipe))
        summary = self.run.summary()
        if not summary.get("created"):
            self.run.update_summary(name=self.recipe.name, created=datetime.now(UTC).isoformat(timespec="seconds"))
        self.run.update_summary(seed=self.recipe.seed, versions=versions())

    def _stage(self, stage: str) -> None:
        """Invalidate ``stage`` and those after it, run it, mark it done.

        Under torchrun, explain and audit run on every rank (each on its share); the other
        stages run on rank 0 while the rest wait.
        """
        world = self.world
        entering(stage)
        # A stage's results go stale with it; the stages that use them re-run (run.STAGE_INPUTS).
        step(world, lambda: self.run.invalidate(dependents(stage)), main_only=True)
        step(world, getattr(self, f"stage_{stage}"), main_only=stage not in ("explain", "audit"))
        step(world, lambda: self.run.mark_done(stage, self.fingerprints[stage]), main_only=True)
        finished(stage)

    def run_one(self, stage: str) -> Path:
        """Re-run one stage from what earlier stages stored."""
        with run_lock(self.run.root, self.world, self.log):
            return self._run_one(stage)

    def _run_one(self, stage: str) -> Path:
        previous = STAGES[: STAGES.index(stage)]
        manifest = self.run.manifest()["stages"]
        needed = [s for s in previous if s not in manifest and not (s == "audit")]
        if needed:
            raise XauditError(f"{self.run.root}: stage {needed[0]!r} has not run yet; run `xaudit run` or `xaudit {needed[0]}` first")
        # The folder's recipe is what its results were made with, --set values included: a
        # later `xaudit run` on it keeps this stage, and the report can tell stale stages.
        step(self.world, lambda: self.run.save_recipe(to_dict(self.recipe)), main_only=True)
        self._stage(stage)
        return self.run.report_path


def _module_set_by_caller(overrides: list[str] | None, recipe: Recipe) -> str | bool:
    """The recipe's ``model.module`` when the caller's own ``--set`` gave it, else False."""
    given = any(o.split("=", 1)[0].strip() == "model.module" for o in overrides or [])
    return (recipe.model.module or False) if given else False


def recipe_fingerprints(recipe: Recipe) -> dict[str, str]:
    """Each stage's fingerprint under ``recipe``: what the manifest records when it finishes."""
    return stage_fingerprints(_with_checkpoint_digest(to_dict(recipe)))


# When to stop auditing, not what is audited: saved rounds stay valid across them, so a run
# continued with more rounds (or a larger budget) reloads the rounds it has.
STOPPING_KEYS = ("max_rounds", "budget_minutes")


def rounds_free_fingerprint(recipe: Recipe) -> str:
    """The audit stage's fingerprint without the keys that only say when to stop."""
    d = _with_checkpoint_digest(to_dict(recipe))
    d["audit"] = {k: v for k, v in d["audit"].items() if k not in STOPPING_KEYS}
    return stage_fingerprints(d)["audit"]


def _with_checkpoint_digest(recipe_dict: dict) -> dict:
    """A model checkpoint counts by its content, not only its path."""
    from .models.checkpoints import content_digest

    model = recipe_dict.get("model", {})
    if model.get("checkpoint"):
        model = {**model, "checkpoint": [model["checkpoint"], content_digest(model["checkpoint"])]}
    return {**recipe_dict, "model": model}


def run_recipe(recipe: Recipe | str | Path, overrides: list[str] | None = None,
               verbose: bool = False, **kw) -> Path:
    """Python API: run every stage of a recipe; returns the report's path.

    ``verbose``: progress as plain lines on stderr (steps, epochs, audits), as the CLI prints
    them when its output is not a terminal."""
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, overrides)
    if not verbose:
        return Pipeline(recipe, **kw).run_stages()
    from .progress import PlainReporter, attach_epoch

    with PlainReporter() as plain:
        kw.setdefault("progress", attach_epoch(plain.progress, plain.epoch))
        kw.setdefault("log", plain.log)
        return Pipeline(recipe, **kw).run_stages()


__all__ = ["Pipeline", "recipe_fingerprints", "run_recipe"]


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB (0 where the platform does not say)."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return 0.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
