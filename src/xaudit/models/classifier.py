"""``xaudit.Classifier``: a model with everything explaining and auditing it needs.

The module (N×3×H×W normalised images -> N×K logits), the class names, the preprocessing,
and what the families table says of its anatomy: the head, the CAM layer and how its
output becomes a grid, the blocks cascading randomization walks. Every field the table
fills can be set by hand (``cam_layer=``, ``layout=``, ``prefix_tokens=``, ``blocks=``, ``head=``).
A saved model is rebuilt here too, from its model.json, then its safetensors.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, preprocessing_from
from ..errors import ModelError, echo
from ..registry import did_you_mean
from ..run import MAX_WEIGHTS_BYTES, checked_file
from .checkpoints import load_weights, read_folder_meta
from .families import Anatomy, describe, to_grid

_OVERRIDES = ("head", "cam_layer", "layout", "prefix_tokens", "blocks")


@dataclass
class Classifier:
    module: nn.Module
    classes: list[str]
    preprocessing: Preprocessing
    anatomy: Anatomy
    source: dict[str, Any] = field(default_factory=dict)  # how to rebuild it (model.json)

    # ------------------------------------------------------------ what downstream reads
    @property
    def family(self) -> str:
        return self.anatomy.family

    @property
    def head(self) -> str | None:
        return self.anatomy.head

    @property
    def cam_layer(self) -> str | None:
        return self.anatomy.cam_layer

    @property
    def reshape(self):
        """The CAM layer's output -> N×C×h×w (None when it already is)."""
        return to_grid(self.anatomy.layout, self.anatomy.prefix_tokens)

    @property
    def device(self) -> torch.device:
        p = next(self.module.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)

    def to(self, device: torch.device | str) -> Classifier:
        self.module.to(device)
        return self

    def eval(self) -> Classifier:
        self.module.eval()
        return self

    def describe(self) -> dict[str, Any]:
        """What xaudit knows of this model, for summaries and ``print``."""
        a = self.anatomy
        return {"family": a.family, "classes": len(self.classes), "head": a.head,
                "cam_layer": a.cam_layer, "layout": a.layout, "prefix_tokens": a.prefix_tokens,
                "blocks": [b[0] for b in a.randomization_blocks], **self.source}

    def with_overrides(self, **kw: Any) -> Classifier:
        """A copy of the anatomy with the user's settings (checked against the module)."""
        return dataclasses.replace(self, anatomy=_override(self.module, self.anatomy, kw))

    def save(self, folder: str | Path, **extra: Any) -> None:
        """safetensors weights + model.json (classes, preprocessing, how to rebuild it)."""
        from .checkpoints import save_model_folder

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {**self.source, "num_classes": len(self.classes), "classes": list(self.classes),
                "head": self.head, "preprocessing": self.preprocessing.to_dict(),
                "anatomy": _saved_overrides(self), **extra}
        save_model_folder(self.module, folder, meta)

    # ------------------------------------------------------------ constructors
    @classmethod
    def from_torchvision(cls, name: str, weights: str = "imagenet", num_classes: int | None = None,
                         classes: Sequence[str] | None = None, seed: int = 0,
                         preprocessing: Preprocessing | None = None, **overrides: Any) -> Classifier:
        """A torchvision classifier; ``weights``: imagenet (DEFAULT), none, or a weights name.
        ``classes`` (or ``num_classes``) replaces the head; otherwise ImageNet's categories."""
        from .weights import build_torchvision

        n = _class_count(classes, num_classes)
        module, w = build_torchvision(name, n, weights, seed)
        if classes is None:
            classes = _numbered(n) if n is not None else _imagenet_categories(name)
        pre = preprocessing or preprocessing_from(w.transforms() if w is not None else None)
        source = {"source": "torchvision", "name": name, "weights": w.name if w is not None else "none"}
        return cls._make(module.eval(), classes, pre, source, overrides)

    @classmethod
    def from_timm(cls, name: str, checkpoint: str | Path | None = None,
                  classes: Sequence[str] | None = None, num_classes: int | None = None,
                  pretrained: bool = True, preprocessing: Preprocessing | None = None,
                  model_args: dict | None = None, **overrides: Any) -> Classifier:
        """A timm model: weights from ``checkpoint`` (safetensors or a state dict), else from the
        hub when ``pretrained``; preprocessing from timm's data config. ``model_args`` go to
        ``timm.create_model`` (e.g. ``img_size``), as they went when the checkpoint was made."""
        from .hubs import timm_module, timm_preprocessing

        module = timm_module(name, _class_count(classes, num_classes), checkpoint, pretrained,
                             model_args)
        k = _output_count(module)
        classes = list(classes) if classes is not None else _numbered(k)
        source = {"source": "timm", "name": name, "model_args": dict(model_args or {})}
        pre = preprocessing or timm_preprocessing(module, model_args)
        return cls._make(module, classes, pre, source, overrides)

    @classmethod
    def from_transformers(cls, model: Any, classes: Sequence[str] | None = None,
                          processor: Any = None, preprocessing: Preprocessing | None = None,
                          trust_code: bool = False, **overrides: Any) -> Classifier:
        """An ``AutoModelForImageClassification`` object, a local ``save_pretrained`` folder or a
        hub id. Classes from ``config.id2label``; preprocessing from the image processor's
        config (``processor``: an image processor or its folder; default: the model's folder).
        A config naming custom code (``auto_map``) loads only with ``trust_code=True``."""
        from .hubs import LogitsOf, id2label_classes, processor_preprocessing, transformers_module

        hf, folder = transformers_module(model, trust_code)
        if preprocessing is None:
            where = processor if processor is not None else folder
            if where is None:
                raise ModelError(
                    "from_transformers: a model object carries no preprocessing; pass processor= "
                    "(its image processor or folder) or preprocessing=Preprocessing(...)"
                )
            preprocessing = processor_preprocessing(where)
        classes = list(classes) if classes is not None else id2label_classes(hf.config)
        source = {"source": "transformers", "name": type(hf).__name__,
                  "config": hf.config.to_dict()}
        return cls._make(LogitsOf(hf), classes, preprocessing, source, overrides)

    @classmethod
    def from_checkpoint(cls, path: str | Path, arch: str | None = None,
                        classes: Sequence[str] | None = None, num_classes: int | None = None,
                        preprocessing: Preprocessing | None = None, trust_code: bool | str = False,
                        **overrides: Any) -> Classifier:
        """A weights file for a torchvision architecture (``arch``; ``timm:NAME`` for timm),
        or one of xaudit's model folders (a run folder or its ``model/``; ``trust_code`` as
        in ``from_run``)."""
        from .checkpoints import read_state_dict
        from .weights import build_torchvision

        path = Path(path)
        if path.is_dir():
            return cls.from_run(path, trust_code=trust_code, **overrides)
        if arch is None:
            raise ModelError(f"{path}: a weights file needs its architecture: arch='resnet18' "
                             "(torchvision) or arch='timm:vit_small_patch16_224'")
        if arch.startswith("timm:"):
            return cls.from_timm(arch[5:], path, classes, num_classes, pretrained=False,
                                 preprocessing=preprocessing, **overrides)
        state = read_state_dict(path)
        n = _class_count(classes, num_classes)
        module, _ = build_torchvision(arch, None, "none")
        head = describe(module).head
        if n is None and head is not None and f"{head}.weight" in state:
            n = int(state[f"{head}.weight"].shape[0])
        if n is not None and n != _output_count(module):
            module, _ = build_torchvision(arch, n, "none")
        load_weights(module, state, path)
        classes = list(classes) if classes is not None else _numbered(_output_count(module))
        pre = preprocessing or preprocessing_from(_default_transforms(arch))
        source = {"source": "torchvision", "name": arch, "weights": f"checkpoint {path.name}"}
        return cls._make(module.eval(), classes, pre, source, overrides)

    @classmethod
    def from_module(cls, module: nn.Module, classes: Sequence[str], mean: Sequence[float] = IMAGENET_MEAN,
                    std: Sequence[float] = IMAGENET_STD, image_size: int = 224,
                    resize_size: int | None = None, **overrides: Any) -> Classifier:
        """Any ``nn.Module`` mapping normalised N×3×H×W images to N×K logits."""
        if not isinstance(module, nn.Module):
            raise ModelError(f"from_module needs a torch.nn.Module, got {type(module).__name__}")
        pre = Preprocessing(image_size, resize_size or image_size, tuple(mean), tuple(std))
        source = {"source": "python", "name": type(module).__name__}
        return cls._make(module.eval(), list(classes), pre, source, overrides)

    @classmethod
    def from_run(cls, folder: str | Path, trust_code: bool | str = False, **overrides: Any) -> Classifier:
        """A model xaudit saved: a run folder or its ``model/`` (safetensors + model.json).

        ``trust_code``: a model built by a Python factory (``source: python``) is rebuilt by
        calling the factory model.json names, so only when this is True or that factory's
        ``package.module:factory`` name; a transformers config naming custom code
        (``auto_map``) only when True."""
        folder = Path(folder)
        if (folder / "model" / "model.json").is_file():
            folder = folder / "model"
        module, meta = rebuild(folder, trust_code)
        saved = {k: v for k, v in (meta.get("anatomy") or {}).items() if k in _OVERRIDES}
        pre = Preprocessing.from_dict(meta["preprocessing"])
        source = {k: v for k, v in meta.items() if k in ("source", "name", "weights", "config",
                                                         "module", "model_args")}
        source.setdefault("source", "torchvision")
        return cls._make(module, list(meta["classes"]), pre, source, {**saved, **overrides})

    @classmethod
    def _make(cls, module: nn.Module, classes: Sequence[str], pre: Preprocessing, source: dict,
              overrides: dict) -> Classifier:
        classes = [str(c) for c in classes]
        if not classes or len(set(classes)) != len(classes):
            raise ModelError(f"classes must be distinct names, got {len(classes)} "
                             f"({', '.join(classes[:5])[:120]})")
        k = _output_count(module, pre.image_size)
        if k is not None and k != len(classes):
            raise ModelError(f"the model has {k} outputs but {len(classes)} classes were given")
        anatomy = _override(module, describe(module), overrides)
        return cls(module, classes, pre, anatomy, source)


# ---------------------------------------------------------------- rebuilding a saved model
# Here, not in a module of its own: a Python factory may return a Classifier, and
# Classifier.from_run rebuilds through these, so the two cannot be separated without a cycle.


def import_factory(spec: str):
    """``package.module:factory`` -> the callable (``model.source: python``)."""
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise ModelError(f"model.module: expected 'package.module:factory', got {str(spec)[:80]!r}")
    mod_name, attr = spec.split(":")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as err:
        raise ModelError(f"model.module: cannot import {mod_name[:80]!r} ({err.msg[:100]})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ModelError(f"model.module: {mod_name[:80]} has no callable {attr[:40]!r}")
    return factory


def build_python(spec: str, num_classes: int | None, args: dict | None = None):
    """Call the user's factory (with ``num_classes`` when it takes it): an nn.Module or a
    Classifier."""
    import inspect

    factory = import_factory(spec)
    kwargs = dict(args or {})
    if num_classes is not None and "num_classes" in inspect.signature(factory).parameters:
        kwargs["num_classes"] = num_classes
    try:
        module = factory(**kwargs)
    except TypeError as err:
        raise ModelError(f"model.module: {spec[:80]}(...) failed: {str(err)[:120]}") from None
    if isinstance(module, Classifier):
        return module
    if not isinstance(module, nn.Module):
        raise ModelError(f"model.module: {spec[:80]} returned {type(module).__name__}, not an nn.Module")
    return module


def architecture(meta: dict, trust_code: bool | str = False, path: Path | str = "model.json") -> nn.Module:
    """The saved model's architecture with random weights, as model.json (validated by
    ``stored.read_model_meta``) describes it.

    A ``python`` model is rebuilt by calling the factory the file names: code a shared folder
    could choose. It runs only when ``trust_code`` is True or that factory's own name (from a
    recipe the caller gave); a transformers config's custom code (``auto_map``) only when True.
    """
    source = meta.get("source", "torchvision")
    n = meta.get("num_classes")
    if source == "torchvision":
        from .weights import build_torchvision

        return build_torchvision(meta["name"], n, "none")[0]
    if source == "timm":
        from .hubs import timm_module

        return timm_module(meta["name"], n, None, pretrained=False, model_args=meta.get("model_args"))
    if source == "transformers":
        from .hubs import LogitsOf, transformers_config_model

        return LogitsOf(transformers_config_model(meta["config"], trust_code is True, path))
    if source == "python":
        if trust_code is not True and trust_code != meta["module"]:
            raise ModelError(
                f"{path}: rebuilding this model calls the Python factory the file names "
                f"(module: {echo(meta['module'])}); if you trust this folder, pass "
                "trust_code=True (xaudit: --trust-code), or name the same factory in the "
                "model.module of a recipe of your own")
        made = build_python(meta["module"], n, meta.get("model_args"))
        return made.module if not isinstance(made, nn.Module) else made
    raise ModelError(f"{path}: unknown source {echo(source)} (torchvision, timm, transformers, python)")


def rebuild(folder: Path, trust_code: bool | str = False) -> tuple[nn.Module, dict]:
    meta = read_folder_meta(folder)
    try:
        module = architecture(meta, trust_code, folder / "model.json")
    except ModelError as err:  # e.g. an unknown architecture name: say which file named it
        if str(err).startswith(str(folder)):
            raise
        raise ModelError(f"{folder / 'model.json'}: {err}") from None
    weights = folder / "model.safetensors"
    real = checked_file(weights, folder, MAX_WEIGHTS_BYTES, ModelError)
    try:
        state = load_file(str(real))
    except Exception as err:
        raise ModelError(f"{weights}: cannot load ({type(err).__name__}: {str(err)[:100]})") from None
    load_weights(module, state, weights)
    return module.eval(), meta


# ---------------------------------------------------------------- helpers


def _class_count(classes: Sequence[str] | None, num_classes: int | None) -> int | None:
    if classes is not None and num_classes is not None and len(classes) != num_classes:
        raise ModelError(f"num_classes={num_classes} but {len(classes)} classes were given")
    return len(classes) if classes is not None else num_classes


def _numbered(n: int | None) -> list[str]:
    if n is None:
        raise ModelError("the number of classes is unknown: give classes=[...]")
    return [str(i) for i in range(n)]


def _imagenet_categories(name: str) -> list[str]:
    import torchvision

    return list(torchvision.models.get_model_weights(name).DEFAULT.meta["categories"])


def _default_transforms(arch: str):
    import torchvision

    try:
        return torchvision.models.get_model_weights(arch).DEFAULT.transforms()
    except (ValueError, KeyError):
        return None


def _output_count(module: nn.Module, image_size: int | None = None) -> int | None:
    """Number of logits: the head's out_features, or one forward of a blank image."""
    if image_size is None:
        head = describe(module).head
        layer = module.get_submodule(head) if head else None
        return int(layer.out_features) if isinstance(layer, nn.Linear) else None
    p = next(module.parameters(), None)
    x = torch.zeros(1, 3, image_size, image_size, device=p.device if p is not None else "cpu")
    was = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = module(x)
    except Exception as err:
        raise ModelError(f"{type(module).__name__} fails on a 1×3×{image_size}×{image_size} input "
                         f"({type(err).__name__}: {str(err)[:120]})") from None
    finally:
        module.train(was)
    if hasattr(out, "logits"):
        raise ModelError(f"{type(module).__name__} returns {type(out).__name__}, not a logits "
                         "tensor: use Classifier.from_transformers, or wrap it to return .logits")
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(f"{type(module).__name__} must return N×K logits, got {shape}")
    return int(out.shape[1])


def _override(module: nn.Module, anatomy: Anatomy, kw: dict[str, Any]) -> Anatomy:
    unknown = [k for k in kw if k not in _OVERRIDES]
    if unknown:
        raise ModelError(f"unknown Classifier setting {unknown[0][:40]!r}. Allowed: "
                         f"{', '.join(_OVERRIDES)}.{did_you_mean(unknown[0], list(_OVERRIDES))}")
    names = dict(module.named_modules())
    changes: dict[str, Any] = {}
    for key in ("head", "cam_layer"):
        value = kw.get(key)
        if value is None:
            continue
        if value not in names:
            raise ModelError(f"{key}: {str(value)[:80]!r} is not a layer of the model."
                             f"{did_you_mean(str(value), [n for n in names if n])}")
        changes[key] = value
    if kw.get("layout") is not None:
        to_grid(kw["layout"], 0)  # raises on an unknown layout
        changes["layout"] = kw["layout"]
    if kw.get("prefix_tokens") is not None:
        changes["prefix_tokens"] = int(kw["prefix_tokens"])
    if kw.get("blocks") is not None:
        missing = [b for b in kw["blocks"] if b not in names]
        if missing:
            raise ModelError(f"blocks: {str(missing[0])[:80]!r} is not a layer of the model."
                             f"{did_you_mean(str(missing[0]), [n for n in names if n])}")
        changes["blocks"] = [(b, [b]) for b in kw["blocks"]]
        changes["stem"] = []
    return dataclasses.replace(anatomy, **changes)


def _saved_overrides(clf: Classifier) -> dict[str, Any]:
    default = describe(clf.module)
    out: dict[str, Any] = {}
    for key in ("head", "cam_layer", "layout", "prefix_tokens"):
        if getattr(clf.anatomy, key) != getattr(default, key):
            out[key] = getattr(clf.anatomy, key)
    if clf.anatomy.blocks != default.blocks:
        out["blocks"] = [b[0] for b in clf.anatomy.blocks]
    return out
