"""Weight files read safely: safetensors, or state dicts through ``torch.load(weights_only=True)``.

Nothing is unpickled beyond tensors and plain containers: a file that needs arbitrary
objects (a whole pickled model, or one crafted to run code) is refused with the way to
re-save it. xaudit's own model folders are safetensors plus a JSON of classes and
preprocessing.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import ModelError
from ..run import atomic_path, atomic_write_text, file_sha256

RESAVE = (
    "xaudit reads weights only: re-save it with torch.save(model.state_dict(), 'model.pth') or "
    "safetensors.torch.save_file(model.state_dict(), 'model.safetensors')"
)
_NESTED = ("state_dict", "model_state_dict", "model", "state_dict_ema", "module")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file; common nestings (``{"state_dict": ...}``, DataParallel's
    ``module.`` prefix) unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        try:
            state = load_file(str(path))
        except Exception as err:
            raise ModelError(f"{path}: not a readable safetensors file ({type(err).__name__})") from None
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            first = str(err).strip().splitlines()[0][:160] if str(err).strip() else ""
            raise ModelError(
                f"{path}: refused, it needs unpickling of arbitrary objects ({first}). {RESAVE}"
            ) from None
        except (RuntimeError, EOFError, OSError, ValueError) as err:
            raise ModelError(f"{path}: not a readable PyTorch weights file ({type(err).__name__}: "
                             f"{str(err)[:120]})") from None
    for key in _NESTED:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not state:
        raise ModelError(f"{path}: holds no state dict (a mapping of names to tensors). {RESAVE}")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelError(f"{path}: entry {str(bad[0])[:60]!r} is not a tensor. {RESAVE}")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_weights(module: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """``load_state_dict`` with a message that names the keys and shapes that do not fit."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            k = shapes[0]
            parts.append(f"{len(shapes)} of another shape (e.g. {k}: {tuple(state[k].shape)} in the "
                         f"file, {tuple(own[k].shape)} in the model)")
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        raise ModelError(
            f"{source}: the weights do not fit the architecture: {'; '.join(parts)}. Check the "
            "architecture name and the number of classes"
        )
    module.load_state_dict(state)


def save_model_folder(module: nn.Module, folder: Path, meta: dict) -> None:
    """safetensors weights plus a JSON of class names and preprocessing; both atomic."""
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    # safetensors refuses tensors that share memory (tied weights): store copies
    seen: set[int] = set()
    for k, v in state.items():
        ptr = v.untyped_storage().data_ptr()
        if ptr in seen:
            state[k] = v.clone()
        seen.add(ptr)
    with atomic_path(folder / "model.safetensors") as tmp:
        save_file(state, str(tmp))
    atomic_write_text(folder / "model.json", json.dumps(meta, indent=2) + "\n")


def read_folder_meta(folder: Path) -> dict:
    """model.json of a model folder holding its weights too, validated (``stored.read_model_meta``
    reads one model.json file)."""
    from ..stored import read_model_meta as validated

    meta_path, weights_path = folder / "model.json", folder / "model.safetensors"
    if not meta_path.is_file() or not weights_path.is_file():
        raise ModelError(f"no trained model in {folder}: run the train stage first")
    return validated(meta_path, need_preprocessing=True, need_classes=True)


def content_digest(path: str | Path) -> str:
    """sha256 of a weights file, or of a model folder's files (names and contents): what a
    recipe's ``model.checkpoint`` stands for, so that replacing the file re-runs the stages."""
    import hashlib

    path = Path(path)
    files = [path] if path.is_file() else sorted(
        p for p in (path.rglob("*") if path.is_dir() else []) if p.is_file())
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(path).as_posix().encode() if f != path else b"")
        file_sha256(f, into=h)
    return h.hexdigest() if files else ""
