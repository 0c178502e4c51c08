import numpy as np
import pytest
from PIL import Image

from tests.conftest import class_image, write_png
from xaudit.config import DataConfig
from xaudit.data import load_dataset
from xaudit.data.base import readable_class_name
from xaudit.data.folder import stratified_split
from xaudit.data.io import load_rgb
from xaudit.errors import ConfigError, DataError


def cfg(**kw) -> DataConfig:
    return DataConfig(**kw)


def test_folder_auto_split_is_stratified_seeded_and_complete(folder_dataset):
    a = load_dataset(cfg(source="folder", path=str(folder_dataset)), seed=1)
    b = load_dataset(cfg(source="folder", path=str(folder_dataset)), seed=1)
    c = load_dataset(cfg(source="folder", path=str(folder_dataset)), seed=2)
    assert a.classes == ["blue", "green", "red"]
    counts = a.counts()
    # 10 per class: round(1.5) = 2 val, 2 test, 6 train per class
    assert counts["train"] == {"blue": 6, "green": 6, "red": 6}
    assert counts["val"] == {"blue": 2, "green": 2, "red": 2}
    assert counts["test"] == {"blue": 2, "green": 2, "red": 2}
    ids = lambda bundle: {s: [r.id for r in rs] for s, rs in bundle.splits.items()}  # noqa: E731
    assert ids(a) == ids(b) and ids(a) != ids(c)
    all_ids = [i for rs in ids(a).values() for i in rs]
    assert len(all_ids) == len(set(all_ids)) == 30
    assert a.splits["train"][0].id.count("/") == 1  # "<class>/<file>"


def test_folder_masks_mirror_the_tree(folder_dataset):
    bundle = load_dataset(cfg(source="folder", path=str(folder_dataset), masks=str(folder_dataset.parent / "masks")), 0)
    assert bundle.has_masks
    rec = bundle.splits["test"][0]
    assert rec.mask.name == rec.image.name and rec.mask.parent.name == rec.image.parent.name


def test_folder_split_layout_and_carving(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("test", 3)):
        for label, cls in enumerate(["a", "b"]):
            for i in range(n):
                write_png(tmp_path / split / cls / f"{i}.png", class_image(label, rng, 8))
    bundle = load_dataset(cfg(source="folder", path=str(tmp_path)), 0)
    sizes = bundle.sizes()
    assert sizes["test"] == 6  # kept as given
    assert sizes["val"] > 0 and sizes["train"] + sizes["val"] == 16  # val carved from train
    assert all(r.id.startswith("test/") for r in bundle.splits["test"])


def test_folder_errors_are_one_clear_line(tmp_path, folder_dataset):
    with pytest.raises(DataError, match="folder not found"):
        load_dataset(cfg(source="folder", path=str(tmp_path / "nope")), 0)
    (folder_dataset / "empty_class").mkdir()
    with pytest.raises(DataError, match="class 'empty_class' has no images"):
        load_dataset(cfg(source="folder", path=str(folder_dataset)), 0)
    one = tmp_path / "one"
    write_png(one / "only" / "x.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DataError, match="at least 2 classes"):
        load_dataset(cfg(source="folder", path=str(one)), 0)
    with pytest.raises(ConfigError, match="a folder is required"):
        load_dataset(cfg(source="folder"), 0)


def test_folder_lists_non_image_files_as_skipped(folder_dataset):
    (folder_dataset / "red" / "notes.txt").write_text("hello")
    (folder_dataset / "red" / ".DS_Store").write_text("x")
    bundle = load_dataset(cfg(source="folder", path=str(folder_dataset)), 0)
    reasons = {s["file"].rsplit("/", 1)[-1]: s["reason"] for s in bundle.skipped}
    assert reasons == {"notes.txt": "extension '.txt' is not an image type"}


def test_class_subset_and_cap(folder_dataset):
    bundle = load_dataset(cfg(source="folder", path=str(folder_dataset), classes=["red", "blue"], max_per_class=3), 0)
    assert bundle.classes == ["red", "blue"]
    assert all(n <= 3 for per in bundle.counts().values() for n in per.values())
    with pytest.raises(ConfigError, match="not found. Classes present"):
        load_dataset(cfg(source="folder", path=str(folder_dataset), classes=["purple", "red"]), 0)


def test_filename_labels_pets_style(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(6):
        write_png(tmp_path / f"Abyssinian_{i}.jpg".replace(".jpg", ".png"), class_image(0, rng, 8))
        write_png(tmp_path / f"beagle_{i}.png", class_image(1, rng, 8))
    write_png(tmp_path / "123.png", class_image(1, rng, 8))
    bundle = load_dataset(
        cfg(source="filename", path=str(tmp_path), label_map={"^[A-Z]": "cat", "^[a-z]": "dog"}), 0
    )
    assert bundle.classes == ["cat", "dog"]
    assert sum(bundle.sizes().values()) == 12
    cats = [r for rs in bundle.splits.values() for r in rs if r.label == 0]
    assert all(r.id[0].isupper() for r in cats)
    assert bundle.skipped == [{"file": str(tmp_path / "123.png"), "reason": "file name matches no label rule"}]
    breeds = load_dataset(cfg(source="filename", path=str(tmp_path), label_regex=r"^([A-Za-z]+)_\d+"), 0)
    assert breeds.classes == ["Abyssinian", "beagle"]
    with pytest.raises(ConfigError, match="capturing group"):
        load_dataset(cfg(source="filename", path=str(tmp_path), label_regex="^[a-z]"), 0)


def test_stratified_split_fractions_sum():
    labels = [0] * 50 + [1] * 30
    parts = stratified_split(labels, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=3)
    assert sorted(i for v in parts.values() for i in v) == list(range(80))
    assert len(parts["test"]) == 10 + 6 and len(parts["val"]) == 10 + 6


def test_readable_plantvillage_names():
    assert readable_class_name("Tomato___Early_blight") == "Tomato: Early blight"
    assert readable_class_name("healthy") == "healthy"


# ---------------------------------------------------------------- Hugging Face format
datasets = pytest.importorskip("datasets")


def _hf_dataset(n_per_class=4, label_name="labels"):
    rng = np.random.default_rng(0)
    features = datasets.Features(
        {"image": datasets.Image(), label_name: datasets.ClassLabel(names=["healthy", "angular_leaf_spot", "bean_rust"])}
    )
    rows = {"image": [], label_name: []}
    for label in range(3):
        for _ in range(n_per_class):
            rows["image"].append(Image.fromarray(class_image(label, rng, 16)))
            rows[label_name].append(label)
    return datasets.Dataset.from_dict(rows, features=features)


def test_hub_local_save_to_disk_beans_schema(tmp_path):
    dd = datasets.DatasetDict({"train": _hf_dataset(6), "validation": _hf_dataset(2), "test": _hf_dataset(3)})
    dd.save_to_disk(str(tmp_path / "beans"))
    bundle = load_dataset(cfg(source="hub", path=str(tmp_path / "beans")), 0)
    assert bundle.classes == ["healthy", "angular_leaf_spot", "bean_rust"]
    assert bundle.sizes() == {"train": 18, "val": 6, "test": 9}
    assert bundle.info["label_column"] == "labels"
    img = load_rgb(bundle.splits["test"][0].image)  # bytes, decoded by xaudit's own decoder
    assert img.size == (16, 16)


def test_hub_local_parquet_with_label_column_and_auto_split(tmp_path):
    ds = _hf_dataset(10, label_name="label")
    ds.to_parquet(str(tmp_path / "train-00000.parquet"))
    bundle = load_dataset(cfg(source="hub", path=str(tmp_path)), 0)
    assert bundle.info["label_column"] == "label"
    assert sum(bundle.sizes().values()) == 30 and bundle.sizes()["test"] > 0


def test_hub_errors(tmp_path):
    ds = datasets.Dataset.from_dict({"image": [Image.new("RGB", (4, 4))] * 2, "kind": [0, 1]},
                                    features=datasets.Features({"image": datasets.Image(), "kind": datasets.Value("int64")}))
    ds.save_to_disk(str(tmp_path / "nolabel"))
    with pytest.raises(DataError, match="no label column found.*image, kind"):
        load_dataset(cfg(source="hub", path=str(tmp_path / "nolabel")), 0)
    with pytest.raises(DataError, match="not found"):
        load_dataset(cfg(source="hub", path=str(tmp_path / "missing")), 0)
    with pytest.raises(ConfigError, match="hub_name"):
        load_dataset(cfg(source="hub"), 0)


def _denied(monkeypatch, *folders):
    """Listing ``folders`` fails as for a folder without read permission (root ignores the
    permission bits, so the refusal is simulated where Python lists folders)."""
    import os

    real_scandir, real_listdir = os.scandir, os.listdir
    denied = {str(f) for f in folders}

    def check(path):
        if str(path) in denied:
            raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(os, "scandir", lambda p=".": (check(p), real_scandir(p))[1])
    monkeypatch.setattr(os, "listdir", lambda p=".": (check(p), real_listdir(p))[1])


def test_a_folder_that_cannot_be_listed_is_a_skipped_row_not_a_silent_gap(folder_dataset, monkeypatch):
    sub = folder_dataset / "red" / "more"
    write_png(sub / "extra.png", class_image(0, np.random.default_rng(0), 32))
    _denied(monkeypatch, sub)
    bundle = load_dataset(cfg(source="folder", path=str(folder_dataset)), seed=0)
    assert {"file": str(sub), "reason": "cannot list folder (PermissionError)"} in bundle.skipped
    assert sum(bundle.counts()[s]["red"] for s in ("train", "val", "test")) == 10  # the rest kept


def test_a_dataset_root_that_cannot_be_listed_is_one_clear_error(folder_dataset, monkeypatch):
    _denied(monkeypatch, folder_dataset)
    for source in ("folder", "filename"):
        with pytest.raises(DataError, match=rf"^data\.path: cannot list {folder_dataset} \(Permission "
                                            r"denied\); xaudit needs a folder it can read$"):
            load_dataset(cfg(source=source, path=str(folder_dataset), label_regex=r"^(\w+)_"), seed=0)


def test_link_loops_and_dangling_links_get_their_own_reasons(tmp_path):
    from xaudit.data.folder import _scan_files

    root = tmp_path / "data"
    write_png(root / "a" / "0.png", class_image(0, np.random.default_rng(0)))
    (root / "a" / "loop.png").symlink_to(root / "a" / "loop.png")
    (root / "a" / "dangling.png").symlink_to(tmp_path / "missing.png")
    images, skipped = _scan_files(root)
    assert [p.name for p in images] == ["0.png"]
    assert {r["file"].rsplit("/", 1)[-1]: r["reason"] for r in skipped} == {
        "loop.png": "symbolic link loop (the link leads back to itself)",
        "dangling.png": "broken symbolic link (its target does not exist)",
    }
