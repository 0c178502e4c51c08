"""The hub source hands image bytes to xaudit's decoder and never follows paths it should not."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.conftest import class_image, write_png
from xaudit.config import DataConfig
from xaudit.data import load_dataset
from xaudit.data.io import BadImageError, load_rgb

datasets = pytest.importorskip("datasets")


def png_bytes(label: int, size: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(class_image(label, np.random.default_rng(label), size)).save(buf, format="PNG")
    return buf.getvalue()


def write_parquet(folder, cells: list) -> None:
    # Stored as plain structs, then typed as Image: no encoding step opens the paths or URLs.
    raw = datasets.Features({"image": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")},
                             "label": datasets.ClassLabel(names=["a", "b"])})
    labels = [i % 2 for i in range(len(cells))]
    ds = datasets.Dataset.from_dict({"image": cells, "label": labels}, features=raw)
    ds = ds.cast_column("image", datasets.Image())
    folder.mkdir(parents=True, exist_ok=True)
    import pyarrow.parquet as pq

    # datasets' own to_parquet sizes path cells by opening them; write the table as it is.
    pq.write_table(ds.data.table, str(folder / "train-00000.parquet"))


def records(folder, **kw):
    bundle = load_dataset(DataConfig(source="hub", path=str(folder), **kw), 0)
    return sorted((r for rs in bundle.splits.values() for r in rs), key=lambda r: r.id)


def reason(record) -> str:
    with pytest.raises(BadImageError) as err:
        load_rgb(record.image, name=record.source)
    return err.value.reason


def test_image_bytes_come_to_xaudits_decoder_and_its_size_guard(tmp_path):
    write_parquet(tmp_path / "ds", [{"bytes": png_bytes(i % 2), "path": None} for i in range(8)])
    recs = records(tmp_path / "ds")
    assert isinstance(recs[0].image(), bytes)
    assert load_rgb(recs[0].image).size == (16, 16)
    with pytest.raises(BadImageError, match="image too large: 16×16 = 256 pixels exceeds the limit of 100"):
        load_rgb(recs[0].image, max_pixels=100)


def test_path_only_cells_are_refused_unless_allowed_and_inside_the_dataset(tmp_path):
    outside = tmp_path / "outside.png"
    write_png(outside, class_image(0, np.random.default_rng(0), 16))
    inside = tmp_path / "ds" / "img" / "in.png"
    write_png(inside, class_image(1, np.random.default_rng(1), 16))
    cells = [{"bytes": None, "path": str(outside)}, {"bytes": None, "path": str(inside)},
             {"bytes": None, "path": "https://example.com/x.png"}, {"bytes": None, "path": "/etc/passwd"}] * 2
    write_parquet(tmp_path / "ds", cells)
    recs = records(tmp_path / "ds")
    by_path = {}
    for r in recs:
        idx = int(r.id.split("/")[1])
        by_path.setdefault(cells[idx]["path"], []).append(r)
    for rs in by_path.values():
        assert reason(rs[0]).startswith("image cell holds") or "URL" in reason(rs[0])
    assert reason(by_path[str(outside)][0]) == ("image cell holds only a path, no bytes (data.allow_paths: "
                                                "true reads paths under data.path)")
    assert "does not fetch images" in reason(by_path["https://example.com/x.png"][0])

    allowed = records(tmp_path / "ds", allow_paths=True)
    by_path = {}
    for r in allowed:
        by_path.setdefault(cells[int(r.id.split("/")[1])]["path"], []).append(r)
    assert load_rgb(by_path[str(inside)][0].image).size == (16, 16)
    assert reason(by_path[str(outside)][0]).endswith("lies outside the dataset folder")
    assert reason(by_path["/etc/passwd"][0]) == "image cell's path /etc/passwd lies outside the dataset folder"
    assert "does not fetch images" in reason(by_path["https://example.com/x.png"][0])
