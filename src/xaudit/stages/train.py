"""The train stage: fit the classifier to the training split (or record that it is used as is)."""

from __future__ import annotations

import torch

from ..data.base import DatasetBundle
from ..data.transforms import DecodedStore
from ..models import Classifier, configure_trainable, count_params
from ..run import RunDir, write_csv


def model_summary(clf: Classifier, recipe, trainable: int, total: int) -> dict:
    m = recipe.model
    weights = clf.source.get("weights", m.weights)
    return {
        "name": clf.source.get("name", m.name),
        "source": clf.source.get("source", m.source),
        "family": clf.family,
        "weights": m.weights if weights == "none" else
        (f"imagenet ({weights})" if clf.source.get("source") == "torchvision" else str(weights)),
        "mode": "pretrained as is" if recipe.train.skip else m.mode,
        "trainable_params": trainable,
        "total_params": total,
        **clf.preprocessing.to_dict(),
        "target_layer": clf.cam_layer,
    }


def train_stage(clf: Classifier, bundle: DatasetBundle, store: DecodedStore, recipe, run: RunDir,
                device: torch.device, progress, log):
    """Train per ``recipe.train`` and save ``model/``; returns (classifier, feature cache)."""
    from .. import train as training
    from ..report import figures

    r = recipe
    if r.train.skip:
        _, total = count_params(clf.module)
        run.update_summary(
            model=model_summary(clf, r, 0, total),
            train={"skipped": True, "reason": "train.skip: the model is used as it is"},
        )
        return clf, None
    trained = configure_trainable(clf, r.model.mode, r.model.n_blocks)
    gen = torch.Generator().manual_seed(r.seed)
    log(f"training {clf.source.get('name', r.model.name)} ({r.model.mode}) for {r.train.epochs} epochs")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(r.seed)
        result, cache = training.train(
            clf, trained, r.model.mode, store, bundle.splits["train"], bundle.splits["val"],
            clf.preprocessing, r.train, device, gen, progress,
        )
    trainable, total = count_params(clf.module)
    clf.save(run.model_dir, weights=clf.source.get("weights", r.model.weights), mode=r.model.mode,
             trained_modules=trained)
    write_csv(run.table("history"), result.history,
              ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds"])
    figures.training_history(result.history, run.figure("history"))
    run.update_summary(
        model=model_summary(clf, r, trainable, total),
        train={
            "epochs_run": len(result.history),
            "best_epoch": result.best_epoch,
            "best_val_accuracy": result.best_val_accuracy,
            "seconds": round(result.seconds, 3),
            "feature_cache": result.feature_cache,
            "backbone_passes": result.backbone_passes,
        },
    )
    return clf.eval(), cache
