"""Rebuild a saved model's architecture from its model.json, then load its safetensors."""

from __future__ import annotations

import importlib
from pathlib import Path

from safetensors.torch import load_file
from torch import nn

from ..errors import ModelError, echo
from ..run import MAX_WEIGHTS_BYTES, checked_file
from .checkpoints import load_weights, read_model_meta


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

    from .classifier import Classifier

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
    meta = read_model_meta(folder)
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
