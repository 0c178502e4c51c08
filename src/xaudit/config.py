"""The recipe's schema: one dataclass per section, each field with its default and range.

Loading, ``--set`` overrides and validation against the registries are in ``recipe``;
the type and range checks the fields declare are in ``typed``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .typed import MAX_SIDE, ranged

MAX_EPOCHS = 10_000  # an epoch a second would still take three hours: more is a typo, not a plan
MAX_SEED = 2**32 - 1  # numpy's limit; torch takes more, but one range for every library

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
