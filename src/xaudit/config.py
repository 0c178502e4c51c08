"""The recipe: dataclasses loaded from YAML, validated on load, saved resolved into the run.

Every key is checked: unknown keys and wrong types are rejected with the key's dotted
path and the allowed names or type. Explainer and audit parameters are validated against
the registered classes' signatures (see ``explain.base`` and ``audit.base``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ConfigError
from .registry import did_you_mean

# --------------------------------------------------------------------------- sections


@dataclass
class SyntheticConfig:
    """Procedural bean-leaf images (see data.synthetic)."""

    n_train: int = 120  # images per class
    n_val: int = 30
    n_test: int = 40
    image_size: int = 224
    shortcut: bool = False  # plant a class-correlated corner sticker in the training split only
    shortcut_strength: float = 1.0  # fraction of training images of a class that carry its tag
    shortcut_size: float = 0.1  # tag side as a fraction of the image side
    lesion_strength: float = 1.0  # (0, 1]: fades lesions towards the leaf colour (0.3 = faint)


@dataclass
class DataConfig:
    source: str = "synthetic"  # registry: folder | hub | filename | synthetic
    path: str | None = None  # folder root, local hub files, or the image folder for `filename`
    hub_name: str | None = None  # e.g. "beans" (needs the hub to be reachable)
    masks: str | None = None  # a folder mirroring the images with one mask per image
    splits: dict[str, float] = field(default_factory=lambda: {"train": 0.7, "val": 0.15, "test": 0.15})
    label_regex: str | None = None  # `filename`: a regex with one group, matched on the file name
    label_map: dict[str, str] | None = None  # `filename`: group value -> class name
    image_column: str | None = None  # `hub`: detected when not given
    label_column: str | None = None  # `hub`: "labels" or "label" when not given
    classes: list[str] | None = None  # keep these classes, in this order
    max_per_class: int | None = None  # cap images per class and split (quick runs)
    on_bad_image: Literal["skip", "fail"] = "skip"
    max_image_pixels: int = 178_956_970  # decompression-bomb guard (PIL's default)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class ModelConfig:
    # torchvision | timm | transformers | checkpoint (a weights file or a run folder) |
    # python (model.module: package.module:factory returning an nn.Module or a Classifier)
    source: Literal["torchvision", "timm", "transformers", "checkpoint", "python"] = "torchvision"
    name: str = "mobilenet_v2"  # torchvision or timm name; checkpoint: the architecture
    # imagenet (torchvision DEFAULT; timm: the hub's pretrained) | none | a weights name, e.g. IMAGENET1K_V1
    weights: str = "imagenet"
    checkpoint: str | None = None  # weights file (safetensors / state dict), transformers folder, run folder
    module: str | None = None  # source python: "package.module:factory"
    args: dict[str, Any] | None = None  # keyword arguments for timm.create_model or the factory
    classes: list[str] | None = None  # the model's own class names, when nothing else states them
    mode: Literal["frozen", "finetune", "last_n"] = "frozen"
    n_blocks: int = 1  # with mode last_n: how many final blocks are trained
    image_size: int | None = None  # crop size; default from the weights' metadata
    resize_size: int | None = None  # resize before the crop; default from the weights
    mean: list[float] | None = None
    std: list[float] | None = None
    target_layer: str | None = None  # CAM layer; found automatically for torchvision families


@dataclass
class AugmentConfig:
    hflip: bool = False
    vflip: bool = False
    rotation: float = 0.0  # degrees, uniform in [-r, r]
    color_jitter: float = 0.0  # brightness/contrast/saturation strength
    random_resized_crop: bool = False
    crop_scale_min: float = 0.8


@dataclass
class TrainConfig:
    epochs: int = 5
    lr: float = 1e-3
    batch_size: int = 32
    weight_decay: float = 0.0
    patience: int | None = None  # early stopping on validation loss; None = off
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    cached_views: int = 4  # frozen mode with augmentation: augmented views cached per image
    num_workers: int = 0
    skip: bool = False  # no training: the model is used as it is, with its own classes
    precision: Literal["fp32", "bf16"] = "fp32"  # frozen mode: backbone feature pass under bf16 autocast


@dataclass
class EvaluateConfig:
    top_losses: int = 8
    batch_size: int = 64


@dataclass
class SelectConfig:
    """Which test images are explained."""

    per_class: int = 2
    correct: Literal["any", "correct", "incorrect", "both"] = "both"
    top_losses: int = 0
    ids: list[str] = field(default_factory=list)
    all: bool = False


@dataclass
class ExplainConfig:
    methods: list[dict[str, Any]] = field(
        default_factory=lambda: [
            {"name": "integrated_gradients", "n_steps": 32},
            {"name": "grad_cam"},
        ]
    )
    target: str = "predicted"  # predicted | true | a class name
    select: SelectConfig = field(default_factory=SelectConfig)
    batch_size: int = 16
    chunk_size: int = 64  # images per stored chunk of maps
    precision: Literal["fp32", "bf16"] = "fp32"
    tolerance: float = 0.05  # completeness tolerance for path methods, relative
    adaptive_steps: bool = False  # path methods: n_steps/4, /2, then all, each for failing images
    memory_budget_mb: int | None = None  # per forward/backward pass; None = from free memory


@dataclass
class AuditConfig:
    enabled: bool = False
    n_images: int = 12  # images per audit, shared by all audits
    audits: list[dict[str, Any]] = field(default_factory=list)  # empty = every registered audit
    blocks: list[str] | None = None  # model-randomization blocks, output side first; else automatic
    regions: dict[str, list[float]] | None = None  # shortcut screening: name -> [x0, y0, x1, y1] fractions


@dataclass
class ReportConfig:
    max_figures: int = 24  # explained images drawn per method


@dataclass
class Recipe:
    name: str = "run"
    seed: int = 0
    output_dir: str = "runs"
    device: str = "cpu"  # cpu | cuda | auto
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    explain: ExplainConfig = field(default_factory=ExplainConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


# --------------------------------------------------------------------------- validation


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(tp))
        return f"{origin.__name__}[{args}]"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints widened to float)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            try:
                return coerce(value, arg, key)
            except ConfigError as err:
                errors.append(err)
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{key}: expected null, got {value!r}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value in allowed:
            return value
        raise ConfigError(
            f"{key}: {value!r} is not allowed. Allowed: {', '.join(map(str, allowed))}."
            + did_you_mean(str(value), [str(a) for a in allowed])
        )
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        kt, vt = typing.get_args(tp)
        return {coerce(k, kt, key): coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"unsupported annotation {tp!r} for {key}")
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys by their dotted path."""
    where = prefix or "recipe"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(
                f"unknown key {dotted!r}. Allowed keys{' in ' + prefix if prefix else ''}: "
                f"{', '.join(names)}.{did_you_mean(str(key), names)}"
            )
        kwargs[key] = coerce(value, hints[key], dotted)
    return cls(**kwargs)


def _check_range(recipe: Recipe) -> None:
    positive = {
        "train.epochs": recipe.train.epochs,
        "train.batch_size": recipe.train.batch_size,
        "train.cached_views": recipe.train.cached_views,
        "evaluate.batch_size": recipe.evaluate.batch_size,
        "explain.batch_size": recipe.explain.batch_size,
        "explain.chunk_size": recipe.explain.chunk_size,
        "data.synthetic.image_size": recipe.data.synthetic.image_size,
        "data.max_image_pixels": recipe.data.max_image_pixels,
        "model.n_blocks": recipe.model.n_blocks,
    }
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{key}: must be at least 1, got {value}")
    non_negative = {
        "train.weight_decay": recipe.train.weight_decay,
        "train.num_workers": recipe.train.num_workers,
        "train.augment.rotation": recipe.train.augment.rotation,
        "train.augment.color_jitter": recipe.train.augment.color_jitter,
        "explain.select.per_class": recipe.explain.select.per_class,
        "explain.select.top_losses": recipe.explain.select.top_losses,
        "evaluate.top_losses": recipe.evaluate.top_losses,
        "data.synthetic.n_train": recipe.data.synthetic.n_train,
        "data.synthetic.n_val": recipe.data.synthetic.n_val,
        "data.synthetic.n_test": recipe.data.synthetic.n_test,
    }
    for key, value in non_negative.items():
        if value < 0:
            raise ConfigError(f"{key}: must be 0 or more, got {value}")
    if not recipe.train.lr > 0:
        raise ConfigError(f"train.lr: must be greater than 0, got {recipe.train.lr}")
    if not 0 < recipe.train.augment.crop_scale_min <= 1:
        raise ConfigError(
            f"train.augment.crop_scale_min: must be in (0, 1], got {recipe.train.augment.crop_scale_min}"
        )
    if not 0 <= recipe.data.synthetic.shortcut_strength <= 1:
        raise ConfigError(
            "data.synthetic.shortcut_strength: must be in [0, 1], got "
            f"{recipe.data.synthetic.shortcut_strength}"
        )
    if not 0 < recipe.data.synthetic.shortcut_size <= 0.3:
        raise ConfigError(
            f"data.synthetic.shortcut_size: must be in (0, 0.3], got {recipe.data.synthetic.shortcut_size}"
        )
    if not 0 < recipe.data.synthetic.lesion_strength <= 1:
        raise ConfigError(
            f"data.synthetic.lesion_strength: must be in (0, 1], got {recipe.data.synthetic.lesion_strength}"
        )
    splits = recipe.data.splits
    allowed = {"train", "val", "test"}
    if set(splits) != allowed:
        raise ConfigError(f"data.splits: needs exactly the keys train, val, test; got {sorted(splits)}")
    if any(v < 0 for v in splits.values()) or abs(sum(splits.values()) - 1) > 1e-6:
        raise ConfigError(f"data.splits: fractions must be 0 or more and add up to 1, got {splits}")
    if recipe.data.max_per_class is not None and recipe.data.max_per_class < 1:
        raise ConfigError(f"data.max_per_class: must be at least 1, got {recipe.data.max_per_class}")
    if not recipe.name or any(c in recipe.name for c in "/\\\0") or recipe.name in {".", ".."}:
        raise ConfigError(f"name: {recipe.name!r} cannot name a run folder (no '/', '\\', '.' or '..')")
    if recipe.device not in {"cpu", "cuda", "auto"}:
        raise ConfigError(f"device: {recipe.device!r} is not allowed. Allowed: cpu, cuda, auto.")


def validate(recipe: Recipe) -> Recipe:
    """Range checks plus registry checks of every named thing in the recipe."""
    _check_range(recipe)
    # Imported here: the registries import torch-heavy modules.
    from .data import SOURCES
    from .explain import validate_method_specs
    from .models.sources import check_model_recipe

    SOURCES.get(recipe.data.source)
    check_model_recipe(recipe.model, recipe.train.skip)
    validate_method_specs(recipe.explain.methods)
    if recipe.audit.enabled or recipe.audit.audits:
        from .audit import validate_audit_specs

        validate_audit_specs(recipe.audit.audits)
    return recipe


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], YAML-parsed value)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set train.epochs=3")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML ({err})") from None
    return key.strip().split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {text!r}: {part!r} is not a section")
            node = child
        node[path[-1]] = value
    return data


def load_recipe(path: str | Path | None = None, overrides: list[str] | None = None, **data: Any) -> Recipe:
    """Load a YAML recipe (or keyword sections), apply ``--set`` overrides, validate."""
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"recipe file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({err})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: a recipe must be a mapping of sections, got {type(raw).__name__}")
    raw.update(data)
    raw = apply_overrides(raw, overrides or [])
    return validate(from_dict(Recipe, raw))


def to_dict(recipe: Recipe) -> dict:
    return dataclasses.asdict(recipe)


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(to_dict(recipe), sort_keys=False, allow_unicode=True)
