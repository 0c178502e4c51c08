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
from .config import Recipe, load_recipe, to_dict
from .data import load_dataset
from .data.base import DatasetBundle, Record
from .data.checks import cross_split_pairs, leakage_message
from .data.transforms import DecodedStore, Preprocessing, preprocessing_from, require_records
from .distributed import (
    current_world,
    local_device,
    step,
)
from .errors import DataError, XauditError
from .evaluate import most_confused, predict, prediction_rows, summarize
from .explain import ExplainContext
from .explain.cam import find_target_layer
from .explain.engine import select_ids
from .models import (
    BuiltModel,
    build_model,
    configure_trainable,
    count_params,
    load_checkpoint,
    save_checkpoint,
)
from .run import STAGES, RunDir, read_csv, read_json, stage_fingerprints, write_csv

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
    """Runs the stages of one recipe into its run directory."""

    def __init__(self, recipe: Recipe, run_dir: str | Path | None = None, progress: Progress | None = None,
                 log: Callable[[str], None] | None = None):
        self.recipe = recipe
        self.run = RunDir(run_dir or recipe.run_dir)
        self.progress = progress or _quiet
        self.log = log or (lambda _m: None)
        # Under torchrun: this process's rank; rank 0 alone writes the run's shared files.
        self.world = current_world()
        self.device = local_device(resolve_device(recipe.device))
        self._bundle: DatasetBundle | None = None
        self._store: DecodedStore | None = None
        self._built: BuiltModel | None = None
        self._model: torch.nn.Module | None = None
        self._meta: dict | None = None
        self._feature_cache = None
        self.fingerprints = stage_fingerprints(to_dict(recipe))

    @classmethod
    def from_run_dir(cls, run_dir: str | Path, overrides: list[str] | None = None, **kw) -> Pipeline:
        rd = RunDir(run_dir).require()
        recipe = load_recipe(rd.recipe_path, overrides)
        return cls(recipe, rd.root, **kw)

    # ----------------------------------------------------------------- shared state
    def preprocessing(self) -> Preprocessing:
        m = self.recipe.model
        meta_path = self.run.model_dir / "model.json"
        if (self._meta is None and not self.recipe.train.skip and meta_path.is_file()
                and self.run.stage_done("train", self.fingerprints["train"])):
            self._meta = read_json(meta_path)
        if self._meta is not None:
            p = self._meta["preprocessing"]
            return Preprocessing(p["image_size"], p["resize_size"], tuple(p["mean"]), tuple(p["std"]))
        built = self.built_model()
        return preprocessing_from(built.weights_transforms, m.image_size, m.resize_size, m.mean, m.std)

    def built_model(self) -> BuiltModel:
        if self._built is None:
            m = self.recipe.model
            n = None if self.recipe.train.skip else len(self.dataset().classes)
            self._built = build_model(m.name, n, m.weights, seed=self.recipe.seed)
        return self._built

    def dataset(self) -> DatasetBundle:
        if self._bundle is None:
            t0 = time.perf_counter()
            self.log("loading data")
            bundle = load_dataset(self.recipe.data, self.recipe.seed)
            if self.recipe.train.skip:
                bundle = self._as_pretrained_classes(bundle)
            self._bundle = bundle
            self._timing("data", time.perf_counter() - t0)
        return self._bundle

    def _as_pretrained_classes(self, bundle: DatasetBundle) -> DatasetBundle:
        """train.skip: labels become indices into the pretrained model's own categories."""
        built = build_model(self.recipe.model.name, None, self.recipe.model.weights, seed=self.recipe.seed)
        self._built = built
        meta = getattr(built.weights_transforms, "_categories", None)
        import torchvision

        w = torchvision.models.get_model_weights(self.recipe.model.name).DEFAULT
        categories = list(w.meta["categories"]) if meta is None else list(meta)
        lookup = {c.lower().replace("_", " "): i for i, c in enumerate(categories)}
        mapping = {}
        for i, name in enumerate(bundle.classes):
            key = name.lower().replace("_", " ")
            if key not in lookup:
                from .registry import did_you_mean

                raise DataError(
                    f"train.skip uses the pretrained classifier as it is, so class folder {name!r} "
                    f"must be one of its {len(categories)} categories.{did_you_mean(key, list(lookup))}"
                )
            mapping[i] = lookup[key]
        for records in bundle.splits.values():
            for r in records:
                r.label = mapping[r.label]
        bundle.info["original_classes"] = bundle.classes
        bundle.classes = categories
        return bundle

    def store(self) -> DecodedStore:
        """Decoded images of every split (bad files skipped or failed per the recipe)."""
        if self._store is None:
            bundle = self.dataset()
            t0 = time.perf_counter()
            store = DecodedStore(self.preprocessing(), self.recipe.data.max_image_pixels)
            skipped = list(bundle.skipped)
            for split in ("train", "val", "test"):
                records = bundle.splits[split]
                if not records:
                    continue
                self.log(f"decoding {len(records)} {split} images")
                good, bad = store.prepare(records, workers=2)
                if bad and self.recipe.data.on_bad_image == "fail":
                    raise DataError(f"bad image {bad[0]['file']}: {bad[0]['reason']} (data.on_bad_image: fail)")
                bundle.splits[split] = good
                skipped += bad
            bundle.skipped = skipped
            pairs = cross_split_pairs(
                {s: [(r.id, store.digests[r.id]) for r in rs] for s, rs in bundle.splits.items()}
            )
            bundle.info["leakage"] = {"pairs": len(pairs), "message": leakage_message(pairs)}
            if pairs:
                self.log(f"warning: {leakage_message(pairs)}")
            if not self.recipe.train.skip:
                require_records(bundle.splits["train"], "the train split")
            require_records(bundle.splits["test"], "the test split")
            self._store = store
            self._timing("decode", time.perf_counter() - t0)
            self._write_dataset_tables(bundle)
        return self._store

    def _timing(self, key: str, seconds: float) -> None:
        if not self.world.is_main:
            return
        timing = self.run.summary().get("timing", {})
        timing[key] = round(seconds, 3)
        self.run.update_summary(timing=timing)

    def _write_dataset_tables(self, bundle: DatasetBundle) -> None:
        from .report import figures

        if not self.world.is_main:
            return
        counts = bundle.counts() if not self.recipe.train.skip else {
            s: _counts_by_name(rs, bundle.classes) for s, rs in bundle.splits.items()
        }
        rows = [{"split": s, "class": c, "n": n} for s, per in counts.items() for c, n in per.items()]
        write_csv(self.run.table("dataset"), rows, ["split", "class", "n"])
        write_csv(self.run.table("skipped"), bundle.skipped, ["file", "reason"])
        self.run.update_summary(
            dataset={
                "name": bundle.name,
                "source": self.recipe.data.source,
                "classes": bundle.info.get("original_classes", bundle.classes) if self.recipe.train.skip else bundle.classes,
                "n": bundle.sizes(),
                "per_class": counts,
                "skipped": len(bundle.skipped),
                "has_masks": bundle.has_masks,
                "info": {k: v for k, v in bundle.info.items() if k != "original_classes"},
            }
        )
        examples = _examples(bundle, per_class=4)
        if examples:
            store = self._store
            images = [store.get(r).image.permute(1, 2, 0).numpy() for r in examples]
            titles = [bundle.classes[r.label] for r in examples]
            figures.dataset_examples(images, titles, self.run.figure("dataset_examples"))

    def model(self) -> torch.nn.Module:
        if self._model is None:
            if self.recipe.train.skip:
                self._model = self.built_model().model.eval().to(self.device)
            else:
                model, meta = load_checkpoint(self.run.model_dir)
                self._meta = meta
                self._model = model.to(self.device)
        return self._model

    # ----------------------------------------------------------------- stages
    def stage_train(self) -> None:
        r = self.recipe
        bundle = self.dataset()
        store = self.store()
        built = self.built_model()
        pre = self.preprocessing()
        if r.train.skip:
            trainable, total = count_params(built.model)
            self.run.update_summary(
                model=self._model_summary(built, pre, 0, total),
                train={"skipped": True, "reason": "train.skip: the pretrained classifier is used as it is"},
            )
            return
        from . import train as training
        from .report import figures

        trained = configure_trainable(built, r.model.mode, r.model.n_blocks)
        gen = torch.Generator().manual_seed(r.seed)
        self.log(f"training {r.model.name} ({r.model.mode}) for {r.train.epochs} epochs")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(r.seed)
            result, cache = training.train(
                built, trained, r.model.mode, store, bundle.splits["train"], bundle.splits["val"],
                pre, r.train, self.device, gen, self.progress,
            )
        self._feature_cache = cache
        trainable, total = count_params(built.model)
        meta = {
            "name": built.name,
            "num_classes": len(bundle.classes),
            "classes": bundle.classes,
            "head": built.head,
            "weights": built.weights_name,
            "mode": r.model.mode,
            "trained_modules": trained,
            "preprocessing": pre.to_dict(),
        }
        save_checkpoint(built.model, self.run.model_dir, meta)
        self._meta, self._model = meta, built.model.eval()
        write_csv(self.run.table("history"), result.history,
                  ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds"])
        figures.training_history(result.history, self.run.figure("history"))
        self.run.update_summary(
            model=self._model_summary(built, pre, trainable, total),
            train={
                "epochs_run": len(result.history),
                "best_epoch": result.best_epoch,
                "best_val_accuracy": result.best_val_accuracy,
                "seconds": round(result.seconds, 3),
                "feature_cache": result.feature_cache,
                "backbone_passes": result.backbone_passes,
            },
        )
        self._timing("train", result.seconds)

    def _model_summary(self, built: BuiltModel, pre: Preprocessing, trainable: int, total: int) -> dict:
        layer = self.recipe.model.target_layer or _safe_target_layer(built.model)
        return {
            "name": built.name,
            "weights": self.recipe.model.weights if built.weights_name == "none" else f"imagenet ({built.weights_name})",
            "mode": "pretrained as is" if self.recipe.train.skip else self.recipe.model.mode,
            "trainable_params": trainable,
            "total_params": total,
            **pre.to_dict(),
            "target_layer": layer,
        }

    def stage_evaluate(self) -> None:
        from .report import figures

        t0 = time.perf_counter()
        bundle, store, model = self.dataset(), self.store(), self.model()
        pre = self.preprocessing()
        test = bundle.splits["test"]
        probs = predict(model, store, test, pre, self.recipe.evaluate.batch_size, self.device, self.progress)
        classes = bundle.classes
        rows = prediction_rows(test, probs, classes, "test")
        prob_cols = [f"p[{c}]" for c in classes] if len(classes) <= 50 else []
        cols = ["id", "split", "true", "pred", "true_idx", "pred_idx", "correct", "prob", "loss", *prob_cols]
        write_csv(self.run.table("predictions"), [{k: r[k] for k in cols} for r in rows], cols)
        present = sorted({r["true_idx"] for r in rows} | {r["pred_idx"] for r in rows})
        if self.recipe.train.skip:  # 1000 categories: keep the ones that occur
            names = [classes[i] for i in present]
            remap = {c: i for i, c in enumerate(present)}
            sub = [{**r, "true_idx": remap[r["true_idx"]], "pred_idx": remap[r["pred_idx"]]} for r in rows]
            metrics, cm, per_class = summarize(sub, names)
        else:
            names = classes
            metrics, cm, per_class = summarize(rows, classes)
        write_csv(self.run.table("metrics_per_class"), per_class)
        write_csv(self.run.table("confusion_matrix"),
                  [{"true": names[i], **{n: int(cm[i, j]) for j, n in enumerate(names)}} for i in range(len(names))],
                  ["true", *names])
        write_csv(self.run.table("most_confused"), most_confused(cm, names), ["true", "pred", "count"])
        figures.confusion_matrix(cm, names, self.run.figure("confusion_matrix"))
        k = self.recipe.evaluate.top_losses
        worst = sorted(rows, key=lambda r: -r["loss"])[:k]
        write_csv(self.run.table("top_losses"), [{c: r[c] for c in ("id", "true", "pred", "prob", "loss")} for r in worst])
        if worst:
            by_id = {r.id: r for r in test}
            images = [store.get(by_id[r["id"]]).image.permute(1, 2, 0).numpy() for r in worst]
            figures.top_losses(images, worst, self.run.figure("top_losses"))
        self.run.update_summary(test=metrics)
        self._timing("evaluate", time.perf_counter() - t0)

    def explain_context(self, model: torch.nn.Module, seed_offset: int = 1) -> ExplainContext:
        pre = self.preprocessing()
        name = self.recipe.model.target_layer
        layers = dict(model.named_modules())
        if name:
            if name not in layers:
                from .registry import did_you_mean

                raise XauditError(f"model.target_layer: {name!r} is not a layer of the model.{did_you_mean(name, list(layers))}")
            target = layers[name]
        else:
            target = _safe_target_module(model)
        return ExplainContext(
            mean=torch.tensor(pre.mean), std=torch.tensor(pre.std), target_layer=target, layers=layers,
            generator=torch.Generator().manual_seed(self.recipe.seed + seed_offset),
        )

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

    def stage_explain(self) -> None:
        from .explain_stage import run_explain_stage

        t0 = time.perf_counter()
        run_explain_stage(self)
        self._timing("explain", time.perf_counter() - t0)

    def stage_audit(self) -> None:
        if not self.recipe.audit.enabled:
            if self.world.is_main:
                self.run.update_summary(audits=None)
            return
        from .audit_stage import run_audit_stage

        t0 = time.perf_counter()
        run_audit_stage(self)
        self._timing("audit", time.perf_counter() - t0)

    def stage_report(self) -> Path:
        from .report import render_report

        return render_report(self.run.root)

    # ----------------------------------------------------------------- driver
    def run_stages(self, stages: list[str] | None = None, force: bool = False) -> Path:
        """Run ``stages`` (default: all); finished stages with a matching fingerprint are kept."""
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
            redo = True  # everything after a re-run stage is re-run too
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
        step(world, lambda: self.run.invalidate(STAGES[STAGES.index(stage):]), main_only=True)
        step(world, getattr(self, f"stage_{stage}"), main_only=stage not in ("explain", "audit"))
        step(world, lambda: self.run.mark_done(stage, self.fingerprints[stage]), main_only=True)

    def run_one(self, stage: str) -> Path:
        """Re-run one stage from what earlier stages stored."""
        previous = STAGES[: STAGES.index(stage)]
        manifest = self.run.manifest()["stages"]
        needed = [s for s in previous if s not in manifest and not (s == "audit")]
        if needed:
            raise XauditError(f"{self.run.root}: stage {needed[0]!r} has not run yet; run `xaudit run` or `xaudit {needed[0]}` first")
        self._stage(stage)
        return self.run.report_path


def _counts_by_name(records: list[Record], classes: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in records:
        out[classes[r.label]] = out.get(classes[r.label], 0) + 1
    return out


def _examples(bundle: DatasetBundle, per_class: int) -> list[Record]:
    out: list[Record] = []
    records = bundle.splits["train"] or bundle.splits["test"]
    seen: dict[int, int] = {}
    for r in records:
        if seen.get(r.label, 0) < per_class:
            out.append(r)
            seen[r.label] = seen.get(r.label, 0) + 1
        if len(out) >= 24:
            break
    return out


def _safe_target_layer(model: torch.nn.Module) -> str | None:
    try:
        return find_target_layer(model)[0]
    except XauditError:
        return None


def _safe_target_module(model: torch.nn.Module) -> torch.nn.Module | None:
    try:
        return find_target_layer(model)[1]
    except XauditError:
        return None


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


__all__ = ["Pipeline", "run_recipe"]
