"""The one table of per-architecture knowledge: head, CAM layer and its grid, blocks.

Every piece of code that needs to know where a model's classification head is, which layer
CAM methods read and how its output becomes a spatial grid, or which blocks cascading
randomization (and ``last_n`` training) walk, asks ``describe(model)``. Adding a model family
is one ``Family`` entry in ``FAMILIES``.

Paths are dotted module names with three extras: ``-1`` is a container's last child,
``a.*`` stands for every parameterised child of ``a`` (input to output), ``x|y`` takes the
first alternative the model has, and ``x+y`` groups modules into one block named after ``x``.
An attention path ``a.*.b`` names module ``b`` of every child of ``a``, input to output.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

Block = tuple[str, list[str]]  # (label, module names)
Layout = str  # "nchw" | "nhwc" | "tokens"


@dataclass(frozen=True)
class Family:
    name: str
    classes: tuple[str, ...]  # class names of the model's root module
    package: str  # the root module's package: torchvision | timm | transformers
    head: str  # the classification nn.Linear (replaced for new classes, trained when frozen)
    cam: str | Callable[[nn.Module], str] | None  # the layer CAM methods read
    layout: Layout = "nchw"
    prefix_tokens: int | str = 0  # leading non-spatial tokens, or the attribute that counts them
    # Randomization blocks from the logits down; the first is the output block. ``last_n``
    # training takes the others from the input side up. A callable builds them itself.
    blocks: tuple[str, ...] | Callable[[nn.Module], list[Block]] = ()
    stem: str | None = None  # randomized last, never trained by last_n
    note: str = ""
    # Attention methods (rollout, Chefer): each block's self-attention module, input to output,
    # and the tokens the head reads (indices, "avg": the mean of the patch tokens, or a
    # callable of the root module); ``no_attention`` says why a family has no such reading.
    attention: str | None = None
    readout: tuple[int, ...] | str | Callable[[nn.Module], tuple[int, ...] | str] = (0,)
    no_attention: str = ""
    # The model's own output layers (final norm, pooling, head) on any block's tokens: the
    # class scores LeGrad reads at each block (root module, N×L×C tokens -> N×K logits)
    score: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None


def _vgg_blocks(model: nn.Module) -> list[Block]:
    """VGG: the convolutions between two poolings form one block."""
    groups, current = [], []
    for name, child in model.features.named_children():
        if isinstance(child, nn.Conv2d):
            current.append(f"features.{name}")
        elif isinstance(child, nn.MaxPool2d) and current:
            groups.append(current)
            current = []
    if current:
        groups.append(current)
    blocks = [("classifier", ["classifier"])]
    for g in reversed(groups):
        blocks.append((g[0] if len(g) == 1 else f"{g[0]}..{g[-1].rsplit('.', 1)[-1]}", g))
    return blocks


def _timm_readout(model: nn.Module) -> tuple[int, ...] | str:
    """timm: the class token, both class and distillation tokens (their heads are averaged),
    or the mean of the patch tokens; any other pooling is named so the method can refuse it."""
    if getattr(model, "head_dist", None) is not None:
        return (0, 1)
    pool = getattr(model, "global_pool", "token")
    if getattr(model, "attn_pool", None) is not None:
        return "attention pooling (global_pool='map')"
    if pool == "token":
        return (0,)
    if pool == "avg" and not getattr(model, "pool_include_prefix", False):
        return "avg"
    return f"global_pool={pool!r}"


def _hf_deit_score(m: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    t = m.deit.layernorm(tokens)
    if hasattr(m, "distillation_classifier"):  # with teacher: both heads averaged, as its forward
        return (m.cls_classifier(t[:, 0]) + m.distillation_classifier(t[:, 1])) / 2
    return m.classifier(t[:, 0])


_SWIN_ATTENTION = ("Swin attends within shifted windows and merges patches between stages: "
                   "attention rollout and Chefer et al.'s relevance are defined for global "
                   "self-attention over one token sequence, not for windows")


def _vgg_cam(model: nn.Module) -> str:
    last = [n for n, m in model.features.named_children() if isinstance(m, (nn.ReLU, nn.Conv2d))]
    return f"features.{last[-1]}"


_TV, _TIMM, _HF = "torchvision", "timm", "transformers"
_FEATURES = ("classifier", "features.*")

FAMILIES: tuple[Family, ...] = (
    # torchvision
    Family("resnet", ("ResNet",), _TV, "fc", "layer4",
           blocks=("fc", "layer4", "layer3", "layer2", "layer1"), stem="conv1+bn1"),
    Family("vgg", ("VGG",), _TV, "classifier.6", _vgg_cam, blocks=_vgg_blocks),
    Family("mobilenet", ("MobileNetV2", "MobileNetV3"), _TV, "classifier.-1", "features.-1",
           blocks=_FEATURES),
    Family("efficientnet", ("EfficientNet",), _TV, "classifier.-1", "features.-1", blocks=_FEATURES),
    Family("convnext", ("ConvNeXt",), _TV, "classifier.-1", "features.-1", blocks=_FEATURES),
    Family("densenet", ("DenseNet",), _TV, "classifier", "features", blocks=_FEATURES),
    Family("regnet", ("RegNet",), _TV, "fc", "trunk_output", blocks=("fc", "trunk_output.*"),
           stem="stem"),
    Family("vit", ("VisionTransformer",), _TV, "heads.-1", "encoder.layers.-1.ln_1", "tokens", 1,
           blocks=("heads", "encoder.ln", "encoder.layers.*"), stem="conv_proj",
           note="CAM reads the last block's first LayerNorm: the class token is pooled, so the "
                "patch tokens after the last block no longer reach the logits",
           attention="encoder.layers.*.self_attention",
           score=lambda m, t: m.heads(m.encoder.ln(t)[:, 0])),
    Family("swin", ("SwinTransformer",), _TV, "head", "features.-1", "nhwc",
           blocks=("head", "norm", "features.*"), no_attention=_SWIN_ATTENTION),
    Family("maxvit", ("MaxVit",), _TV, "classifier.-1", "blocks.-1",
           blocks=("classifier", "blocks.*"), stem="stem"),
    # timm
    Family("timm-resnet", ("ResNet",), _TIMM, "fc", "layer4",
           blocks=("fc", "layer4", "layer3", "layer2", "layer1"), stem="conv1+bn1"),
    Family("timm-vit", ("VisionTransformer", "VisionTransformerDistilled"), _TIMM, "head",
           "blocks.-1.norm1", "tokens", "num_prefix_tokens",
           blocks=("head+head_dist", "norm", "blocks.*"), stem="patch_embed",
           note="CAM reads the last block's norm1 (see vit)",
           attention="blocks.*.attn", readout=_timm_readout,
           score=lambda m, t: m.forward_head(m.norm(t))),
    Family("timm-swin", ("SwinTransformer",), _TIMM, "head.fc", "layers.-1", "nhwc",
           blocks=("head", "norm", "layers.*"), stem="patch_embed", no_attention=_SWIN_ATTENTION),
    Family("timm-convnext", ("ConvNeXt",), _TIMM, "head.fc", "stages.-1",
           blocks=("head", "norm_pre", "stages.*"), stem="stem"),
    Family("timm-maxvit", ("MaxxVit",), _TIMM, "head.fc", "stages.-1",
           blocks=("head", "norm", "stages.*"), stem="stem"),
    Family("timm-efficientnet", ("EfficientNet",), _TIMM, "classifier", "bn2",
           blocks=("classifier", "conv_head+bn2", "blocks.*"), stem="conv_stem+bn1"),
    Family("timm-regnet", ("RegNet",), _TIMM, "head.fc", "s4",
           blocks=("head", "final_conv", "s4", "s3", "s2", "s1"), stem="stem"),
    # transformers (the root is the *ForImageClassification model)
    Family("hf-vit", ("ViTForImageClassification",), _HF, "classifier",
           "vit.layers.-1.layernorm_before|vit.encoder.layer.-1.layernorm_before", "tokens", 1,
           blocks=("classifier", "vit.layernorm", "vit.layers.*|vit.encoder.layer.*"),
           stem="vit.embeddings",
           attention="vit.layers.*.attention|vit.encoder.layer.*.attention.attention",
           score=lambda m, t: m.classifier(m.vit.layernorm(t)[:, 0])),
    Family("hf-deit", ("DeiTForImageClassification", "DeiTForImageClassificationWithTeacher"), _HF,
           "classifier", "deit.layers.-1.layernorm_before|deit.encoder.layer.-1.layernorm_before",
           "tokens", 2, blocks=("classifier+distillation_classifier", "deit.layernorm",
                                "deit.layers.*|deit.encoder.layer.*"), stem="deit.embeddings",
           attention="deit.layers.*.attention|deit.encoder.layer.*.attention.attention",
           readout=lambda m: (0, 1) if hasattr(m, "distillation_classifier") else (0,),
           score=_hf_deit_score),
    Family("hf-swin", ("SwinForImageClassification",), _HF, "classifier", "swin.layernorm", "tokens",
           0, blocks=("classifier", "swin.layernorm", "swin.encoder.layers.*"),
           stem="swin.embeddings", no_attention=_SWIN_ATTENTION),
    Family("hf-convnext", ("ConvNextForImageClassification",), _HF, "classifier",
           "convnext.encoder.stages.-1",
           blocks=("classifier", "convnext.layernorm", "convnext.encoder.stages.*"),
           stem="convnext.embeddings"),
)


def find_family(model: nn.Module) -> tuple[Family | None, str]:
    """The first module (root first) that a family describes, and its dotted prefix."""
    for prefix, module in model.named_modules():
        cls = type(module)
        for fam in FAMILIES:
            if cls.__name__ in fam.classes and cls.__module__.split(".")[0] == fam.package:
                return fam, f"{prefix}." if prefix else ""
    return None, ""


# ---------------------------------------------------------------- path resolution


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def resolve(model: nn.Module, path: str) -> str | None:
    """A path of the table (``-1`` components, ``|`` alternatives) -> a module name, or None."""
    for alt in path.split("|"):
        name, module, ok = [], model, True
        for part in alt.split("."):
            if part == "-1":
                children = list(module.named_children())
                if not children:
                    ok = False
                    break
                part, module = children[-1]
            else:
                child = getattr(module, "_modules", {}).get(part)
                if child is None:
                    ok = False
                    break
                module = child
            name.append(part)
        if ok:
            return ".".join(name)
    return None


def expand_blocks(model: nn.Module, specs: tuple[str, ...], prefix: str = "") -> list[Block]:
    """Block specs (output side first) -> (label, module names); parts the model lacks are dropped."""
    root = model.get_submodule(prefix[:-1]) if prefix else model
    out: list[Block] = []
    for spec in specs:
        if spec.endswith(".*"):
            container = resolve(root, spec[:-2].replace(".*|", "|"))
            if container is None:
                continue
            children = [(f"{container}.{n}", c) for n, c in root.get_submodule(container).named_children()]
            for name, child in reversed(children):
                if _has_params(child):
                    out.append((prefix + name, [prefix + name]))
            continue
        names = [resolve(root, part) for part in spec.split("+")]
        names = [n for n in names if n is not None and _has_params(root.get_submodule(n))]
        if names:
            out.append((prefix + names[0], [prefix + n for n in names]))
    return out


def expand_each(model: nn.Module, path: str) -> list[str]:
    """``a.*.b`` (alternatives with ``|``) -> module ``b`` of every child of ``a`` that has one."""
    for alt in path.split("|"):
        container, _, rest = alt.partition(".*.")
        name = resolve(model, container)
        if name is None:
            continue
        found = [f"{name}.{child}.{rest}" for child, _ in model.get_submodule(name).named_children()]
        found = [n for n in found if resolve(model, n) is not None]
        if found:
            return found
    return []


# ---------------------------------------------------------------- what a model is


@dataclass
class Anatomy:
    """What the table says of one model, every field overridable by the user."""

    family: str  # a family name, or "generic"
    head: str | None
    cam_layer: str | None
    layout: Layout = "nchw"
    prefix_tokens: int = 0
    blocks: list[Block] = field(default_factory=list)  # output side first (randomization)
    stem: list[str] = field(default_factory=list)
    note: str = ""
    attention: list[str] = field(default_factory=list)  # self-attention modules, input to output
    readout: tuple[int, ...] | str = (0,)  # the tokens the head reads (see Family.readout)
    no_attention: str = ""  # why attention methods have no reading of this model
    score: Callable[[torch.Tensor], torch.Tensor] | None = None  # a block's tokens -> logits

    @property
    def randomization_blocks(self) -> list[Block]:
        return self.blocks + ([(self.stem[0], list(self.stem))] if self.stem else [])

    @property
    def trainable_blocks(self) -> list[Block]:
        """``last_n`` blocks from the input side up: every block but the output one and the stem."""
        return list(reversed(self.blocks[1:]))


def describe(model: nn.Module) -> Anatomy:
    """The table's entry for ``model``; a model of no known family gets the generic reading."""
    fam, prefix = find_family(model)
    if fam is None:
        return Anatomy("generic", head=_last_linear(model), cam_layer=None,
                       blocks=_generic_blocks(model))
    root = model.get_submodule(prefix[:-1]) if prefix else model
    head = resolve(root, fam.head)
    cam = fam.cam(root) if callable(fam.cam) else (resolve(root, fam.cam) if fam.cam else None)
    blocks = fam.blocks(root) if callable(fam.blocks) else expand_blocks(model, fam.blocks, prefix)
    if callable(fam.blocks) and prefix:
        blocks = [(prefix + label, [prefix + n for n in names]) for label, names in blocks]
    stem = []
    if fam.stem:
        stem = [prefix + n for n in (resolve(root, p) for p in fam.stem.split("+")) if n is not None]
    tokens = fam.prefix_tokens
    if isinstance(tokens, str):
        tokens = int(getattr(root, tokens, 1))
    attention = [prefix + n for n in expand_each(root, fam.attention)] if fam.attention else []
    return Anatomy(
        family=fam.name,
        head=prefix + head if head else _last_linear(model),
        cam_layer=prefix + cam if cam else None,
        layout=fam.layout,
        prefix_tokens=int(tokens),
        blocks=blocks,
        stem=stem,
        note=fam.note,
        attention=attention,
        readout=fam.readout(root) if callable(fam.readout) else fam.readout,
        no_attention=fam.no_attention,
        score=functools.partial(fam.score, root) if fam.score else None,
    )


def _last_linear(model: nn.Module) -> str | None:
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def _generic_blocks(model: nn.Module) -> list[Block]:
    """Top-level parameterised children from the output side: the generic cascade."""
    return [(n, [n]) for n, c in reversed(list(model.named_children())) if _has_params(c)]


# ---------------------------------------------------------------- activations to a grid


def to_grid(layout: Layout, prefix_tokens: int = 0) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """A function turning the CAM layer's output into N×C×h×w (None: it already is)."""
    if layout == "nchw":
        return None
    if layout == "nhwc":
        return _nhwc_to_grid
    if layout == "tokens":
        return TokenGrid(prefix_tokens)
    raise ValueError(f"layout must be nchw, nhwc or tokens, got {layout!r}")


def _nhwc_to_grid(t: torch.Tensor) -> torch.Tensor:
    if t.dim() != 4:
        raise ValueError(f"expected an N×H×W×C activation, got shape {tuple(t.shape)}")
    return t.permute(0, 3, 1, 2)


@dataclass(frozen=True)
class TokenGrid:
    """N×L×C tokens -> N×C×h×w: the leading class/register tokens dropped, the rest a square."""

    prefix_tokens: int = 0

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        if t.dim() != 3:
            raise ValueError(f"expected N×tokens×C activations, got shape {tuple(t.shape)}")
        n, length, c = t.shape
        patches = length - self.prefix_tokens
        side = math.isqrt(max(patches, 0))
        if patches <= 0 or side * side != patches:
            raise ValueError(
                f"{length} tokens less {self.prefix_tokens} prefix tokens do not form a square "
                "grid; give the layer's layout and prefix tokens explicitly"
            )
        return t[:, self.prefix_tokens :].reshape(n, side, side, c).permute(0, 3, 1, 2)
