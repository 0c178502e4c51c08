"""A recipe's ``model`` section -> its preprocessing (before any model is built) and a Classifier."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import torch

from ..data.transforms import Preprocessing, preprocessing_from
from ..errors import ConfigError, ModelError, echo
from .classifier import Classifier

SOURCES = ("torchvision", "timm", "transformers", "checkpoint", "python")


def check_model_recipe(m, skip: bool) -> None:
    """What can be checked without building anything: names, and the keys each source needs."""
    if m.source == "torchvision":
        from .weights import check_model_name, weights_enum

        check_model_name(m.name)
        if m.weights not in {"imagenet", "none"}:
            weights_enum(m.name, m.weights)
    elif m.source == "checkpoint" and not m.checkpoint:
        raise ConfigError("model.checkpoint: source checkpoint needs a weights file or a run folder")
    elif m.source == "python" and not m.module:
        raise ConfigError("model.module: source python needs 'package.module:factory'")
    elif m.source == "transformers" and not (m.checkpoint or m.name):
        raise ConfigError("model.checkpoint: source transformers needs a save_pretrained folder "
                          "(or model.name: a hub id)")
    if m.classes is not None and len(set(m.classes)) != len(m.classes):
        raise ConfigError("model.classes: the names must be distinct")


def check_code_trusted(m, trust_code: bool | str, where: str = "model.module") -> None:
    """Refuse a recipe whose model is built by a Python factory (``source: python``) unless
    the caller trusts it: True, or that factory's own name from a recipe the caller gave.
    A recipe saved in a run folder travels with the folder, so it does not vouch for itself."""
    if m.source == "python" and m.module and trust_code is not True and trust_code != m.module:
        raise ModelError(
            f"{where}: building this model calls the Python factory {echo(m.module)}, named by "
            "a recipe read from a run folder, not given by you; if you trust the folder, pass "
            "--trust-code (Python: trust_code=True), or run a recipe of your own that names it")


def _run_model_dir(path: Path) -> Path | None:
    for folder in (path, path / "model"):
        if (folder / "model.json").is_file():
            return folder
    return None


def base_preprocessing(m) -> Preprocessing:
    """The model's own preprocessing, read from metadata only (no weights are loaded)."""
    if m.source == "torchvision":
        from .weights import weights_enum

        w = None if m.weights == "none" else weights_enum(m.name, m.weights)
        return preprocessing_from(w.transforms() if w is not None else None)
    if m.source == "timm" or (m.source == "checkpoint" and m.name.startswith("timm:")):
        from .hubs import _require, timm_preprocessing_cfg

        _require("timm")
        return timm_preprocessing_cfg(m.name.removeprefix("timm:"), m.args)
    if m.source == "transformers":
        from .hubs import processor_preprocessing

        return processor_preprocessing(Path(m.checkpoint) if m.checkpoint else m.name)
    if m.source == "checkpoint":
        run = _run_model_dir(Path(m.checkpoint))
        if run is not None:
            meta = json.loads((run / "model.json").read_text(encoding="utf-8"))
            return Preprocessing.from_dict(meta["preprocessing"])
        from .classifier import _default_transforms

        return preprocessing_from(_default_transforms(m.name))
    return Preprocessing()  # python: ImageNet's, unless the recipe or the factory says otherwise


def recipe_preprocessing(m) -> Preprocessing:
    """The model's preprocessing with the recipe's ``image_size``/``resize_size``/``mean``/``std``."""
    pre = base_preprocessing(m)
    resize = m.resize_size
    if m.image_size is not None and resize is None:
        resize = math.ceil(m.image_size * pre.resize_size / pre.image_size)
    return dataclasses.replace(
        pre,
        image_size=m.image_size or pre.image_size,
        resize_size=resize or pre.resize_size,
        mean=tuple(m.mean) if m.mean is not None else pre.mean,
        std=tuple(m.std) if m.std is not None else pre.std,
    )


def build_classifier(m, classes: list[str], skip: bool, seed: int,
                     trust_code: bool | str = False) -> Classifier:
    """The recipe's model. Trained (``skip`` false): its head is fitted to ``classes``;
    used as it is: its own classes (``model.classes``, the checkpoint's or the config's).

    ``trust_code``: code the model's files name runs only when this is True, or the name of
    the factory a recipe the caller gave names (``check_code_trusted``)."""
    check_code_trusted(m, trust_code)
    pre = recipe_preprocessing(m)
    own = list(m.classes) if m.classes else None
    kw = {"cam_layer": m.target_layer} if m.target_layer else {}
    if m.source == "torchvision":
        if skip:
            clf = Classifier.from_torchvision(m.name, m.weights, classes=own, seed=seed,
                                              preprocessing=pre, **kw)
        else:
            return Classifier.from_torchvision(m.name, m.weights, classes=classes, seed=seed,
                                               preprocessing=pre, **kw)
    elif m.source == "timm":
        clf = Classifier.from_timm(m.name, m.checkpoint, classes=own, pretrained=m.weights != "none",
                                   preprocessing=pre, model_args=m.args, **kw)
    elif m.source == "transformers":
        clf = Classifier.from_transformers(m.checkpoint or m.name, classes=own,
                                           preprocessing=pre, trust_code=trust_code is True, **kw)
    elif m.source == "checkpoint":
        clf = Classifier.from_checkpoint(m.checkpoint, arch=m.name, classes=own,
                                         preprocessing=pre, trust_code=trust_code, **kw)
    else:
        clf = _from_python(m, own or classes, pre, kw)
    if skip:
        return clf
    return with_head_for(clf, classes, seed)


def _from_python(m, classes: list[str], pre: Preprocessing, kw: dict) -> Classifier:
    from .classifier import build_python

    made = build_python(m.module, None, m.args)
    clf = made if isinstance(made, Classifier) else Classifier.from_module(
        made, classes, pre.mean, pre.std, pre.image_size, pre.resize_size, **kw)
    clf.source["module"] = m.module
    clf.source["model_args"] = dict(m.args or {})
    return clf


def with_head_for(clf: Classifier, classes: list[str], seed: int) -> Classifier:
    """The classifier with a new head for ``classes`` (kept when it already has them)."""
    from .weights import replace_head

    if clf.classes == list(classes):
        return clf
    if clf.head is None:
        raise ModelError(f"{type(clf.module).__name__}: no classification head known to fit to "
                         f"{len(classes)} classes; set the head or use train.skip: true")
    if len(clf.classes) != len(classes):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            replace_head(clf.module, clf.head, len(classes))
        config = getattr(getattr(clf.module, "model", None), "config", None)
        if config is not None and clf.source.get("source") == "transformers":
            config.num_labels = len(classes)
            config.id2label = dict(enumerate(classes))
            config.label2id = {c: i for i, c in enumerate(classes)}
            clf.source["config"] = config.to_dict()
    return dataclasses.replace(clf, classes=list(classes))
