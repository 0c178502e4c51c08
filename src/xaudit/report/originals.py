"""The explained images themselves, as the model saw them (resized, cropped), with masks.

The run folder keeps maps, not pixels, so the report decodes the explained test images
again from the recipe's data source with the run's preprocessing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import XauditError
from ..run import RunDir, read_json


@dataclass
class Original:
    pixels: np.ndarray  # H×W×3 uint8
    mask: np.ndarray | None  # H×W bool evidence mask (e.g. lesions)


def _preprocessing(run: RunDir, summary: dict):
    from ..data.transforms import Preprocessing

    meta_path = run.model_dir / "model.json"
    try:
        p = read_json(meta_path)["preprocessing"] if meta_path.is_file() else summary.get("model") or {}
        return Preprocessing(int(p["image_size"]), int(p["resize_size"]), tuple(p["mean"]),
                             tuple(p["std"]))
    except (KeyError, TypeError, ValueError):
        raise XauditError(f"{run.root}: no preprocessing in model/model.json or summary.json; "
                          "run `xaudit train` first") from None


def load_originals(run: RunDir, summary: dict, ids: list[str]) -> dict[str, Original]:
    """``{id: Original}`` for the test images ``ids``; raises when they cannot be read."""
    from ..config import load_recipe
    from ..data import load_dataset
    from ..data.transforms import DecodedStore

    recipe = load_recipe(run.recipe_path)
    bundle = load_dataset(recipe.data, recipe.seed)
    by_id = {r.id: r for r in bundle.splits.get("test") or []}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise XauditError(f"{len(missing)} explained images are no longer in the data source, "
                          f"e.g. {missing[0][:80]!r}")
    store = DecodedStore(_preprocessing(run, summary), recipe.data.max_image_pixels)
    records = [by_id[i] for i in ids]
    good, bad = store.prepare(records)
    if bad:
        raise XauditError(f"explained image {bad[0]['file'][:80]} cannot be decoded: {bad[0]['reason']}")
    out = {}
    for rec in good:
        item = store.get(rec)
        mask = item.mask.numpy() if item.mask is not None else None
        out[rec.id] = Original(item.image.permute(1, 2, 0).numpy(), mask)
    return out
