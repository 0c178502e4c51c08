"""timm and Hugging Face transformers models, with the preprocessing their configs state.

Both keep their real hub code paths (``pretrained=True``, a hub id) for machines that reach
the hubs; offline they load a local checkpoint or ``save_pretrained`` folder. A download that
fails is an error that says what to pass instead, never random weights.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.transforms import Preprocessing
from ..errors import ModelError, echo
from ..registry import did_you_mean
from .checkpoints import load_weights, read_state_dict

# PIL's resample numbers, as image processor configs store them
_PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}


def _require(package: str):
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError:
        raise ModelError(f"this model needs the {package} package: pip install {package}") from None


# ---------------------------------------------------------------- timm


def timm_module(name: str, num_classes: int | None, checkpoint: str | Path | None,
                pretrained: bool, model_args: dict | None = None) -> nn.Module:
    """A timm model: weights from ``checkpoint``, the hub (``pretrained``), or random on purpose."""
    timm = _require("timm")
    if not timm.is_model(name):
        raise ModelError(f"timm has no model {name!r}.{did_you_mean(name, timm.list_models())}")
    state = read_state_dict(checkpoint) if checkpoint is not None else None
    if state is not None and num_classes is None:
        head = timm.get_pretrained_cfg(name).to_dict().get("classifier", "head")
        head = head[0] if isinstance(head, (list, tuple)) else head
        weight = state.get(f"{head}.weight")
        num_classes = int(weight.shape[0]) if weight is not None else None
    kwargs: dict[str, Any] = dict(model_args or {})
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    try:
        model = timm.create_model(name, pretrained=pretrained and state is None, **kwargs)
    except TypeError as err:
        raise ModelError(f"timm {name}: {str(err)[:160]} (check model.args)") from None
    except Exception as err:  # the hub download: URLError, OSError, LocalEntryNotFoundError, ...
        raise ModelError(
            f"timm could not create {name} with pretrained weights ({type(err).__name__}: "
            f"{' '.join(str(err).split())[:100]}); give a local checkpoint (checkpoint=..., "
            "model.checkpoint) or pretrained=False for random weights on purpose"
        ) from None
    if state is not None:
        load_weights(model, state, checkpoint)
    return model.eval()


def timm_preprocessing(model: nn.Module, model_args: dict | None = None) -> Preprocessing:
    """From timm's ``resolve_data_config``: the evaluation transform timm itself would build
    (its input size that of ``img_size`` when the model was built with one)."""
    timm = _require("timm")
    return _timm_pre(timm.data.resolve_data_config({}, model=model), type(model).__name__, model_args)


def timm_preprocessing_cfg(name: str, model_args: dict | None = None) -> Preprocessing:
    """The same from the model's pretrained config alone (nothing is built or downloaded)."""
    timm = _require("timm")
    if not timm.is_model(name):
        raise ModelError(f"timm has no model {name!r}.{did_you_mean(name, timm.list_models())}")
    cfg = timm.get_pretrained_cfg(name).to_dict()
    return _timm_pre(timm.data.resolve_data_config({}, pretrained_cfg=cfg), name, model_args)


def _timm_pre(cfg: dict, what: str, model_args: dict | None) -> Preprocessing:
    size = (model_args or {}).get("img_size")
    if isinstance(size, int):  # built for another input size than its pretrained config says
        cfg = {**cfg, "input_size": (3, size, size)}
    _, h, w = cfg["input_size"]
    if h != w:
        raise ModelError(f"{what}: non-square input size {h}×{w} is not supported")
    mode = cfg.get("crop_mode", "center")
    if mode not in ("center", "squash"):
        raise ModelError(f"timm crop_mode {mode!r} is not supported (center, squash)")
    crop_pct = float(cfg.get("crop_pct") or 1.0)
    return Preprocessing(
        image_size=h,
        resize_size=math.floor(h / crop_pct),
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
        interpolation=cfg.get("interpolation", "bilinear"),
        resize="shorter" if mode == "center" else "square",
    )


# ---------------------------------------------------------------- transformers


class LogitsOf(nn.Module):
    """A transformers image classifier as a module that maps N×3×H×W to N×K logits."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).logits


def transformers_module(model_or_folder: Any, trust_code: bool = False) -> tuple[nn.Module, Path | None]:
    """(the model, its local folder or None) from a model object, a folder or a hub id.

    A config naming custom code (``auto_map``) is refused unless ``trust_code`` is True: that
    code comes with the folder, and transformers would otherwise ask on the terminal."""
    if isinstance(model_or_folder, nn.Module):
        return model_or_folder.eval(), None
    transformers = _require("transformers")
    path = Path(model_or_folder)
    local = path.is_dir()
    if not local and path.exists():
        raise ModelError(f"{path}: expected a save_pretrained folder (with config.json)")
    if local and trust_code is not True:
        refuse_custom_code(_folder_config(path), path / "config.json")
    try:
        model = transformers.AutoModelForImageClassification.from_pretrained(
            str(path) if local else str(model_or_folder), local_files_only=local,
            trust_remote_code=trust_code is True)
    except (OSError, ValueError) as err:
        where = f"folder {path}" if local else f"hub id {str(model_or_folder)[:80]!r}"
        if "trust_remote_code" in str(err):  # a hub model whose config names custom code
            raise ModelError(f"transformers model {where} needs the custom code its config "
                             f"names; {_TRUST_HINT}") from None
        raise ModelError(
            f"transformers could not load an image classifier from {where} ({type(err).__name__}: "
            f"{' '.join(str(err).split())[:120]}); give a local save_pretrained folder"
        ) from None
    return model.eval(), (path if local else None)


_TRUST_HINT = ("if you trust where it comes from, pass trust_code=True (xaudit: --trust-code) "
               "to run that code")


def _folder_config(folder: Path) -> dict:
    from ..run import read_json

    file = folder / "config.json"
    if not file.is_file():
        return {}  # transformers says what is missing
    cfg = read_json(file, folder, ModelError)
    return cfg if isinstance(cfg, dict) else {}


def refuse_custom_code(config: dict, where: Path | str) -> None:
    """A transformers config whose ``auto_map`` names Python classes to import from the
    folder or the hub: refused, naming them (the caller decides on trust)."""
    auto_map = config.get("auto_map")
    if auto_map:
        named = sorted({str(v) for v in (auto_map.values() if isinstance(auto_map, dict) else [auto_map])})
        raise ModelError(f"{where}: auto_map names custom model code ({echo(named)}) that "
                         f"loading this model would run; {_TRUST_HINT}")


def id2label_classes(config: Any) -> list[str]:
    labels = getattr(config, "id2label", None) or {}
    return [str(labels[i]) for i in sorted(labels, key=int)]


def processor_preprocessing(processor: Any) -> Preprocessing:
    """From an image processor (object, its folder, or its dict): resize, crop, mean and std."""
    if isinstance(processor, (str, Path)):
        file = Path(processor) / "preprocessor_config.json"
        if not file.is_file():
            raise ModelError(
                f"{processor}: no preprocessor_config.json; save the image processor beside the "
                "model (processor.save_pretrained(folder)) or give mean, std and image_size"
            )
        cfg = json.loads(file.read_text(encoding="utf-8"))
    elif isinstance(processor, dict):
        cfg = processor
    else:
        cfg = processor.to_dict()
    size = cfg.get("size") or {}
    crop = cfg.get("crop_size") or {}
    resample = _PIL_RESAMPLE.get(cfg.get("resample", 2), "bilinear")
    mean = tuple(float(v) for v in cfg.get("image_mean", (0.5, 0.5, 0.5)))
    std = tuple(float(v) for v in cfg.get("image_std", (0.5, 0.5, 0.5)))
    if not cfg.get("do_normalize", True):
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if "shortest_edge" in size:  # ConvNeXt-style: shorter side / crop_pct, then the crop
        edge = int(size["shortest_edge"])
        pct = cfg.get("crop_pct")
        if pct and edge < 384:
            return Preprocessing(edge, int(edge / pct), mean, std, resample, "shorter")
        return Preprocessing(edge, edge, mean, std, resample, "square")
    if "height" in size:
        if size["height"] != size.get("width", size["height"]):
            raise ModelError(f"non-square processor size {size} is not supported")
        side = int(size["height"])
        if cfg.get("do_center_crop") and crop:
            return Preprocessing(int(crop["height"]), side, mean, std, resample, "square")
        return Preprocessing(side, side, mean, std, resample, "square")
    raise ModelError(f"image processor size {str(size)[:80]} is not understood; give image_size")


def transformers_config_model(config: dict, trust_code: bool = False,
                               where: Path | str = "config") -> nn.Module:
    """An image classifier rebuilt from its saved config (random weights, loaded next)."""
    transformers = _require("transformers")
    if trust_code is not True:
        refuse_custom_code(config, where)
    cfg = transformers.AutoConfig.for_model(**config)
    return transformers.AutoModelForImageClassification.from_config(
        cfg, trust_remote_code=trust_code is True).eval()
