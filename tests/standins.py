"""Stand-in datasets in the formats of the seed workflows, small enough for tests.

Each writer puts files on disk in the same layout as the real data a recipe in configs/
expects, and returns a ``StandIn``: the folder to point ``data.path`` at and, for every
image, the class xaudit must read from it (keyed by xaudit's record id), so a test can
check the labels end to end rather than trusting the loader.

- ``write_beans``: the Hugging Face ``beans`` schema (train / validation / test;
  ``image_file_path``, ``image``, ``labels`` as a ClassLabel in the real order
  angular_leaf_spot, bean_rust, healthy) saved with ``save_to_disk``; the images are
  synthetic bean leaves of the matching class.
- ``write_plantvillage``: one folder per class, the 38 PlantVillage ``Plant___Disease``
  names (spaces, commas and parentheses included), JPEG leaves.
- ``write_pets``: Oxford-IIIT Pets ``images/``: ``Breed_123.jpg`` with an upper-case first
  letter for cats, lower case for dogs, plus the stray ``.mat`` files, a grayscale and a CMYK
  JPEG that the real folder also holds.
- ``write_imagenet_photos``: scikit-image's bundled photos in ImageNet-category folders
  (``espresso/coffee.png``, ``missile/rocket.jpg``).
- ``write_smoking``: ``Training/``, ``Validation/``, ``Testing/`` split folders, each with
  ``smoking/`` and ``notsmoking/`` class folders.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

BEANS_CLASSES = ("angular_leaf_spot", "bean_rust", "healthy")  # the ClassLabel order on the hub
BEANS_SPLITS = {"train": "train", "validation": "val", "test": "test"}  # hub name -> xaudit split

PLANTVILLAGE_CLASSES = (
    "Apple___Apple_scab",
    "Apple___Black_rot",
    "Apple___Cedar_apple_rust",
    "Apple___healthy",
    "Blueberry___healthy",
    "Cherry_(including_sour)___Powdery_mildew",
    "Cherry_(including_sour)___healthy",
    "Corn_(maize)___Cercospora_leaf_spot Gray_leaf_spot",
    "Corn_(maize)___Common_rust_",
    "Corn_(maize)___Northern_Leaf_Blight",
    "Corn_(maize)___healthy",
    "Grape___Black_rot",
    "Grape___Esca_(Black_Measles)",
    "Grape___Leaf_blight_(Isariopsis_Leaf_Spot)",
    "Grape___healthy",
    "Orange___Haunglongbing_(Citrus_greening)",
    "Peach___Bacterial_spot",
    "Peach___healthy",
    "Pepper,_bell___Bacterial_spot",
    "Pepper,_bell___healthy",
    "Potato___Early_blight",
    "Potato___Late_blight",
    "Potato___healthy",
    "Raspberry___healthy",
    "Soybean___healthy",
    "Squash___Powdery_mildew",
    "Strawberry___Leaf_scorch",
    "Strawberry___healthy",
    "Tomato___Bacterial_spot",
    "Tomato___Early_blight",
    "Tomato___Late_blight",
    "Tomato___Leaf_Mold",
    "Tomato___Septoria_leaf_spot",
    "Tomato___Spider_mites Two-spotted_spider_mite",
    "Tomato___Target_Spot",
    "Tomato___Tomato_Yellow_Leaf_Curl_Virus",
    "Tomato___Tomato_mosaic_virus",
    "Tomato___healthy",
)

PET_CATS = ("Abyssinian", "Bengal", "British_Shorthair")
PET_DOGS = ("american_bulldog", "beagle", "scottish_terrier")

# scikit-image photo -> (ImageNet category folder, file name). ImageNet has no "rocket"
# category; "missile" is the nearest, and the model does not predict it for this photo.
IMAGENET_PHOTOS = {"coffee": ("espresso", "coffee.png"), "rocket": ("missile", "rocket.jpg")}

SMOKING_SPLITS = ("Training", "Validation", "Testing")
SMOKING_CLASSES = ("notsmoking", "smoking")


@dataclass
class StandIn:
    """A written stand-in: ``path`` for ``data.path``; ``labels``: record id -> class name."""

    path: Path
    labels: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # files xaudit must skip, relative paths


def _jpeg(array: np.ndarray, quality: int = 90, mode: str | None = None) -> bytes:
    img = Image.fromarray(array)
    if mode is not None:
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _leaf(seed: int, disease: str, size: int) -> np.ndarray:
    """A synthetic bean leaf: ``disease`` one of healthy, angular_leaf_spot, bean_rust."""
    from xaudit.data.synthetic import CLASSES, render_leaf

    return render_leaf(seed, CLASSES.index(disease), size).image


# --------------------------------------------------------------------------- beans


def write_beans(
    out: str | Path,
    per_class: dict[str, int] | None = None,
    size: int = 64,
    seed: int = 0,
) -> StandIn:
    """The ``beans`` schema as a local ``save_to_disk`` DatasetDict (JPEG bytes, as on the hub)."""
    import datasets

    per_class = per_class or {"train": 4, "validation": 2, "test": 2}
    features = datasets.Features(
        {
            "image_file_path": datasets.Value("string"),
            "image": datasets.Image(),
            "labels": datasets.ClassLabel(names=list(BEANS_CLASSES)),
        }
    )
    out = Path(out)
    labels: dict[str, str] = {}
    splits = {}
    for s_idx, (split, n) in enumerate(per_class.items()):
        rows: dict[str, list] = {"image_file_path": [], "image": [], "labels": []}
        for c_idx, cls in enumerate(BEANS_CLASSES):
            for i in range(n):
                image = _leaf(seed * 1_000_003 + s_idx * 10_007 + c_idx * 101 + i, cls, size)
                name = f"{split}/{cls}/{cls}_{split}.{i}.jpg"
                rows["image_file_path"].append(name)
                rows["image"].append({"bytes": _jpeg(image), "path": name})
                rows["labels"].append(c_idx)
                labels[f"{BEANS_SPLITS[split]}/{len(rows['labels']) - 1:06d}"] = cls
        splits[split] = datasets.Dataset.from_dict(rows, features=features)
    quiet = datasets.is_progress_bar_enabled()
    if quiet:
        datasets.disable_progress_bars()
    try:
        datasets.DatasetDict(splits).save_to_disk(str(out))
    finally:
        if quiet:
            datasets.enable_progress_bars()
    return StandIn(out, labels)


# --------------------------------------------------------------------------- PlantVillage


def write_plantvillage(
    out: str | Path, per_class: int = 4, size: int = 64, seed: int = 0,
    classes: tuple[str, ...] = PLANTVILLAGE_CLASSES,
) -> StandIn:
    """``<Plant___Disease>/<uuid-like>.JPG`` per class, as in PlantVillage's ``color/`` folder."""
    out = Path(out)
    labels: dict[str, str] = {}
    for c_idx, cls in enumerate(classes):
        disease = "healthy" if cls.endswith("healthy") else ("angular_leaf_spot", "bean_rust")[c_idx % 2]
        hue_shift = (c_idx * 7) % 40  # a class-specific tint, so the classes differ a little
        for i in range(per_class):
            image = _leaf(seed * 1_000_003 + c_idx * 101 + i, disease, size).astype(np.int16)
            image[..., 0] = np.clip(image[..., 0] + hue_shift, 0, 255)
            rel = f"{cls}/{c_idx:02d}{i:02d}a1f0-leaf___RS_{i}.JPG"
            _write(out / rel, _jpeg(image.astype(np.uint8)))
            labels[rel] = cls
    return StandIn(out, labels)


# --------------------------------------------------------------------------- Oxford-IIIT Pets


def _pet(rng: np.random.Generator, cat: bool, height: int, width: int) -> np.ndarray:
    """Noisy fur-coloured background with a bright ellipse ("face"); cats get pointed ears."""
    base = np.array([150, 110, 70] if cat else [90, 70, 50], np.int16)
    img = base + rng.integers(-40, 40, (height, width, 3))
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    cx, cy, r = width // 2, height // 2, min(height, width) // 4
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(220, 200, 170))
    if cat:
        for sx in (-1, 1):
            draw.polygon([(cx + sx * r, cy - r // 2), (cx + sx * r // 3, cy - r), (cx + sx * r, cy - 2 * r)],
                         fill=(60, 40, 30))
    return np.asarray(pil)


def write_pets(out: str | Path, per_breed: int = 3, size: int = 64, seed: int = 0) -> StandIn:
    """Oxford-IIIT Pets ``images/`` layout: label from the file name's first letter."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    labels: dict[str, str] = {}
    for breeds, cat in ((PET_CATS, True), (PET_DOGS, False)):
        for breed in breeds:
            for i in range(1, per_breed + 1):
                h, w = size + int(rng.integers(0, size // 2)), size + int(rng.integers(0, size // 2))
                name = f"{breed}_{i}.jpg"
                _write(out / name, _jpeg(_pet(rng, cat, h, w)))
                labels[name] = "cat" if cat else "dog"
    # The real folder also holds grayscale and CMYK JPEGs, and a few MATLAB files.
    extra = {f"{PET_CATS[0]}_{per_breed + 1}.jpg": "L", f"{PET_DOGS[0]}_{per_breed + 1}.jpg": "CMYK"}
    for name, mode in extra.items():
        cat = name[0].isupper()
        _write(out / name, _jpeg(_pet(rng, cat, size, size), mode=mode))
        labels[name] = "cat" if cat else "dog"
    mat = f"{PET_CATS[0]}_100.mat"
    _write(out / mat, b"MATLAB 5.0 MAT-file, stand-in\n")
    return StandIn(out, labels, skipped=[mat])


# --------------------------------------------------------------------------- ImageNet photos


def write_imagenet_photos(out: str | Path) -> StandIn:
    """scikit-image's bundled photos, in ImageNet-category class folders."""
    import skimage.data

    out = Path(out)
    labels: dict[str, str] = {}
    for photo, (category, name) in IMAGENET_PHOTOS.items():
        array = getattr(skimage.data, photo)()
        buf = io.BytesIO()
        Image.fromarray(array).save(buf, "PNG" if name.endswith(".png") else "JPEG", quality=95)
        _write(out / category / name, buf.getvalue())
        labels[f"{category}/{name}"] = category
    return StandIn(out, labels)


# --------------------------------------------------------------------------- smoking


def _person(rng: np.random.Generator, smoking: bool, height: int, width: int) -> np.ndarray:
    """A head-and-shoulders blob; smokers hold a white stick with an orange tip near the mouth."""
    img = np.clip(rng.normal(120, 30, (height, width, 3)), 0, 255).astype(np.uint8)
    pil = Image.fromarray(img)
    draw = ImageDraw.Draw(pil)
    cx, cy, r = width // 2, height // 3, min(height, width) // 5
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(210, 170, 140))
    draw.rectangle((cx - 2 * r, cy + r, cx + 2 * r, height), fill=(40, 60, 110))
    if smoking:
        y = cy + r // 2
        draw.rectangle((cx + r // 3, y - 1, cx + 2 * r, y + 1), fill=(250, 250, 250))
        draw.rectangle((cx + 2 * r, y - 1, cx + 2 * r + 2, y + 1), fill=(255, 120, 0))
    return np.asarray(pil)


def write_smoking(
    out: str | Path, per_class: dict[str, int] | None = None, size: int = 64, seed: int = 0
) -> StandIn:
    """``Training|Validation|Testing/<smoking|notsmoking>/<class>_NNNN.jpg``."""
    out = Path(out)
    per_class = per_class or {"Training": 6, "Validation": 2, "Testing": 2}
    rng = np.random.default_rng(seed)
    labels: dict[str, str] = {}
    for split, n in per_class.items():
        for cls in SMOKING_CLASSES:
            for i in range(n):
                rel = f"{split}/{cls}/{cls}_{i:04d}.jpg"
                _write(out / rel, _jpeg(_person(rng, cls == "smoking", size + size // 4, size)))
                labels[rel] = cls
    return StandIn(out, labels)


WRITERS = {
    "beans": write_beans,
    "plantvillage": write_plantvillage,
    "pets": write_pets,
    "imagenet-photos": write_imagenet_photos,
    "smoking": write_smoking,
}


def tiny_demo(n_test: int, *more: str) -> list[str]:
    """``--set`` overrides that shrink the demo recipe to an untrained 32-px model on a few
    synthetic leaves per class (``n_test`` test images each), for tests of the stages' plumbing."""
    return [
        "data.synthetic.n_train=4", "data.synthetic.n_val=2", f"data.synthetic.n_test={n_test}",
        "data.synthetic.image_size=32", "model.image_size=32", "model.resize_size=32",
        "model.weights=none", "train.epochs=1", "train.batch_size=8", *more,
    ]
