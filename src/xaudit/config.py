"""The recipe: dataclasses loaded from YAML, validated on load, saved resolved into the run.

Every key is checked: unknown keys and wrong types are rejected with the key's dotted
path and the allowed names or type. Explainer and audit parameters are validated against
the registered classes' signatures (see ``explain.base`` and ``audit.base``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import stat
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ConfigError, echo, shown
from .registry import did_you_mean
from .safety import is_control
from .yaml_safe import load_yaml

# --------------------------------------------------------------------------- ranges

MAX_SIDE = 4096  # pixels; a 100000-pixel side would need 30 GB per decoded image
MAX_EPOCHS = 10_000  # an epoch a second would still take three hours: more is a typo, not a plan
MAX_SEED = 2**32 - 1  # numpy's limit; torch takes more, but one range for every library


def ranged(default: Any = dataclasses.MISSING, *, ge: float | None = None, gt: float | None = None,
           le: float | None = None, lt: float | None = None, length: int | None = None,
           default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field whose value (or each number of a list value) ``check_ranges`` bounds."""
    limits = {k: v for k, v in {"ge": ge, "gt": gt, "le": le, "lt": lt, "length": length}.items() if v is not None}
    return field(default=default, default_factory=default_factory, metadata=limits)

# --------------------------------------------------------------------------- sections


@dataclass
class SyntheticConfig:
    """Procedural bean-leaf images (see data.synthetic)."""

    n_train: int = ranged(120, ge=0, le=100_000)  # images per class
    n_val: int = ranged(30, ge=0, le=100_000)
    n_test: int = ranged(40, ge=0, le=100_000)
    image_size: int = ranged(224, ge=8, le=MAX_SIDE)
    shortcut: bool = False  # plant a class-correlated corner sticker in the training split only
    shortcut_strength: float = ranged(1.0, ge=0, le=1)  # fraction of training images of a class that carry its tag
    shortcut_size: float = ranged(0.1, gt=0, le=0.3)  # tag side as a fraction of the image side
    lesion_strength: float = ranged(1.0, gt=0, le=1)  # fades lesions towards the leaf colour (0.3 = faint)


@dataclass
class DataConfig:
    source: str = "synthetic"  # registry: folder | hub | filename | synthetic
    path: str | None = None  # folder root, local hub files, or the image folder for `filename`
    hub_name: str | None = None  # e.g. "beans" (needs the hub to be reachable)
    masks: str | None = None  # a folder mirroring the images with one mask per image
    splits: dict[str, float] = ranged(default_factory=lambda: {"train": 0.7, "val": 0.15, "test": 0.15}, ge=0, le=1)
    label_regex: str | None = None  # `filename`: a regex with one group, matched on the file name
    label_map: dict[str, str] | None = None  # `filename`: group value -> class name
    image_column: str | None = None  # `hub`: detected when not given
    label_column: str | None = None  # `hub`: "labels" or "label" when not given
    classes: list[str] | None = None  # keep these classes, in this order
    max_per_class: int | None = ranged(None, ge=1)  # cap images per class and split (quick runs)
    on_bad_image: Literal["skip", "fail"] = "skip"
    on_empty_class: Literal["fail", "drop"] = "fail"  # a class left without usable training images
    follow_symlinks: bool = False  # folder sources: follow links to files outside data.path
    allow_paths: bool = False  # hub source: read image cells that hold only a path (under data.path)
    max_image_pixels: int = ranged(178_956_970, ge=1)  # decompression-bomb guard (PIL's default)
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
    n_blocks: int = ranged(1, ge=1)  # with mode last_n: how many final blocks are trained
    image_size: int | None = ranged(None, ge=8, le=MAX_SIDE)  # crop size; default from the weights' metadata
    resize_size: int | None = ranged(None, ge=8, le=MAX_SIDE)  # resize before the crop; default from the weights
    mean: list[float] | None = ranged(None, ge=0, le=1, length=3)  # per RGB channel, of images in [0, 1]
    std: list[float] | None = ranged(None, gt=0, le=1, length=3)
    target_layer: str | None = None  # CAM layer; found automatically for torchvision families


@dataclass
class AugmentConfig:
    hflip: bool = False
    vflip: bool = False
    rotation: float = ranged(0.0, ge=0, le=180)  # degrees, uniform in [-r, r]
    color_jitter: float = ranged(0.0, ge=0, le=1)  # brightness/contrast/saturation strength
    random_resized_crop: bool = False
    crop_scale_min: float = ranged(0.8, gt=0, le=1)


@dataclass
class TrainConfig:
    epochs: int = ranged(5, ge=1, le=MAX_EPOCHS)
    lr: float = ranged(1e-3, gt=0)
    batch_size: int = ranged(32, ge=1)
    weight_decay: float = ranged(0.0, ge=0)
    patience: int | None = ranged(None, ge=1)  # early stopping on validation loss; None = off
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    cached_views: int = ranged(4, ge=1, le=1000)  # frozen mode with augmentation: augmented views cached per image
    num_workers: int = ranged(0, ge=0, le=256)
    skip: bool = False  # no training: the model is used as it is, with its own classes
    precision: Literal["fp32", "bf16"] = "fp32"  # frozen mode: backbone feature pass under bf16 autocast


@dataclass
class EvaluateConfig:
    top_losses: int = ranged(8, ge=0)
    batch_size: int = ranged(64, ge=1)


@dataclass
class SelectConfig:
    """Which test images are explained."""

    per_class: int = ranged(2, ge=0)
    correct: Literal["any", "correct", "incorrect", "both"] = "both"
    top_losses: int = ranged(0, ge=0)
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
    batch_size: int = ranged(16, ge=1)
    chunk_size: int = ranged(64, ge=1)  # images per stored chunk of maps
    precision: Literal["fp32", "bf16"] = "fp32"
    tolerance: float = ranged(0.05, gt=0)  # completeness tolerance for path methods, relative
    adaptive_steps: bool = False  # path methods: n_steps/4, /2, then all, each for failing images
    memory_budget_mb: int | None = ranged(None, ge=1)  # per forward/backward pass; None = from free memory
    top_losses_method: str | None = None  # the top-losses figure's map; None = grad_cam if listed, else the first


@dataclass
class AuditConfig:
    enabled: bool = False
    n_images: int = ranged(12, ge=1)  # images per audit round, shared by all audits
    max_rounds: int = ranged(4, ge=1, le=1000)  # rounds of n_images until every verdict is decided
    budget_minutes: float | None = ranged(None, gt=0)  # no new round that would overrun it
    alpha: float = ranged(0.05, gt=0, lt=0.5)  # error rate of each trust / do-not-trust decision
    min_effect: float = ranged(0.5, gt=0, le=5)  # smallest difference that matters, in SDs (Cohen's d_z)
    audits: list[dict[str, Any]] = field(default_factory=list)  # empty = the preset's audits
    preset: Literal["full", "quick"] = "full"  # with audits empty: every audit, or the cheap ones
    controls: bool = True  # negative controls (noise, edges, centre, constant) as scorecard rows
    blocks: list[str] | None = None  # model-randomization blocks, output side first; else automatic
    regions: dict[str, list[float]] | None = ranged(None, ge=0, le=1, length=4)  # shortcut screening: name -> [x0, y0, x1, y1] fractions


@dataclass
class ReportConfig:
    max_figures: int = ranged(24, ge=0)  # explained images drawn per method


@dataclass
class Recipe:
    name: str = "run"
    seed: int = ranged(0, ge=0, le=MAX_SEED)
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
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {echo(value)}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{key}: expected null, got {echo(value)}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value in allowed:
            return value
        raise ConfigError(
            f"{key}: {echo(value)} is not allowed. Allowed: {', '.join(map(str, allowed))}."
            + did_you_mean(shown(value), [str(a) for a in allowed])
        )
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {echo(value)}")
        (item,) = typing.get_args(tp)
        return [coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {echo(value)}")
        kt, vt = typing.get_args(tp)
        return {coerce(k, kt, key): coerce(v, vt, f"{key}.{shown(k)}") for k, v in value.items()}
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
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {echo(value)} ({type(value).__name__})")


def from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys by their dotted path."""
    where = prefix or "recipe"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {echo(data)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}.{shown(key)}" if prefix else shown(key)
        if key not in names:
            raise ConfigError(
                f"unknown key {dotted!r}. Allowed keys{' in ' + prefix if prefix else ''}: "
                f"{', '.join(names)}.{did_you_mean(shown(key), names)}"
            )
        kwargs[key] = coerce(value, hints[key], dotted)
    return cls(**kwargs)


def _num(x: float) -> str:
    return str(int(x)) if isinstance(x, float) and x.is_integer() and abs(x) < 1e15 else str(x)


def range_text(limits: dict[str, float]) -> str:
    """The allowed range in words: ``must be at least 1``, ``must be in (0, 1]``."""
    lo = ("[", limits["ge"]) if "ge" in limits else ("(", limits["gt"]) if "gt" in limits else None
    hi = ("]", limits["le"]) if "le" in limits else (")", limits["lt"]) if "lt" in limits else None
    if lo and hi:
        return f"must be in {lo[0]}{_num(lo[1])}, {_num(hi[1])}{hi[0]}"
    if lo:
        if lo[0] == "(":
            return f"must be greater than {_num(lo[1])}"
        return "must be 0 or more" if lo[1] == 0 else f"must be at least {_num(lo[1])}"
    if hi:
        return f"must be at most {_num(hi[1])}" if hi[0] == "]" else f"must be less than {_num(hi[1])}"
    return "must be a finite number"


def _in_range(x: float, limits: dict[str, float]) -> bool:
    if isinstance(x, float) and not math.isfinite(x):
        return False
    return (("ge" not in limits or x >= limits["ge"]) and ("gt" not in limits or x > limits["gt"])
            and ("le" not in limits or x <= limits["le"]) and ("lt" not in limits or x < limits["lt"]))


def check_value(value: Any, limits: dict[str, Any], key: str) -> None:
    """Refuse ``value`` (a number, a list of numbers or a mapping of such lists) out of ``limits``."""
    if value is None or isinstance(value, (bool, str)):
        return
    if isinstance(value, dict):
        for k, v in value.items():
            check_value(v, limits, f"{key}.{shown(k)}")
        return
    bounds = {k: v for k, v in limits.items() if k != "length"}
    if isinstance(value, list):
        if "length" in limits and len(value) != limits["length"]:
            raise ConfigError(f"{key}: must hold {limits['length']} numbers, got {len(value)}")
        for i, v in enumerate(value):
            check_value(v, bounds, f"{key}[{i}]")
        return
    if isinstance(value, (int, float)) and not _in_range(value, bounds):
        raise ConfigError(f"{key}: {range_text(bounds)}, got {echo(value)}")


def check_ranges(section: Any, prefix: str = "") -> None:
    """Check every field of a recipe section (and its sub-sections) against its ``ranged`` limits."""
    for f in dataclasses.fields(section):
        key = f"{prefix}.{f.name}" if prefix else f.name
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            check_ranges(value, key)
        else:
            check_value(value, dict(f.metadata), key)


def _check_special(recipe: Recipe) -> None:
    """Rules that tie several values together or are not numeric ranges."""
    splits = recipe.data.splits
    allowed = {"train", "val", "test"}
    if set(splits) != allowed:
        raise ConfigError(f"data.splits: needs exactly the keys train, val, test; got {echo(sorted(splits))}")
    if any(not 0 <= v <= 1 for v in splits.values()) or abs(sum(splits.values()) - 1) > 1e-6:
        raise ConfigError(f"data.splits: fractions must be 0 or more and add up to 1, got {echo(splits)}")
    for name, (x0, y0, x1, y1) in (recipe.audit.regions or {}).items():
        if not (x0 < x1 and y0 < y1):
            raise ConfigError(f"audit.regions.{shown(name)}: needs x0 < x1 and y0 < y1, got {echo([x0, y0, x1, y1])}")
    # a control character in a folder name garbles every console line and path shown
    if (not recipe.name or any(c in recipe.name for c in "/\\\0") or recipe.name in {".", ".."}
            or len(recipe.name) > 200 or any(is_control(c) for c in recipe.name)):
        raise ConfigError(f"name: {echo(recipe.name)} cannot name a run folder (no '/', '\\', '.' or '..', "
                          "no control or bidirectional-control characters; at most 200 characters)")
    if recipe.device not in {"cpu", "cuda", "auto"}:
        raise ConfigError(f"device: {echo(recipe.device)} is not allowed. Allowed: cpu, cuda, auto.")


def _check_range(recipe: Recipe) -> None:
    check_ranges(recipe)
    _check_special(recipe)


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
        raise ConfigError(f"--set {echo(text)}: expected KEY=VALUE, e.g. --set train.epochs=3")
    key, raw = text.split("=", 1)
    value = load_yaml(raw, f"--set {echo(text)}: the value") if raw.strip() else ""
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
                raise ConfigError(f"--set {echo(text)}: {echo(part)} is not a section")
            node = child
        node[path[-1]] = value
    return data


def load_recipe(path: str | Path | None = None, overrides: list[str] | None = None, **data: Any) -> Recipe:
    """Load a YAML recipe (or keyword sections), apply ``--set`` overrides, validate."""
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(_not_a_recipe_file(path))
        raw = load_yaml(_read_recipe_text(path), str(path)) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: a recipe must be a mapping of sections, got {type(raw).__name__}")
    raw.update(data)
    raw = apply_overrides(raw, overrides or [])
    return validate(from_dict(Recipe, raw))


def _not_a_recipe_file(path: Path) -> str:
    """What ``path`` is instead of a readable recipe file, in words."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return f"recipe file not found: {echo(str(path))}"
    except OSError as err:  # a link loop, no permission on a folder above it
        return f"recipe {echo(str(path))}: cannot read ({err.strerror or type(err).__name__})"
    what = ("a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a special file")
    return f"recipe {echo(str(path))}: not a regular file ({what}); a recipe is a YAML file"


def _read_recipe_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason}); save the recipe as UTF-8") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the recipe ({err.strerror or type(err).__name__})") from None


def to_dict(recipe: Recipe) -> dict:
    return dataclasses.asdict(recipe)


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(to_dict(recipe), sort_keys=False, allow_unicode=True)
