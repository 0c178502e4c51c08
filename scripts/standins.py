"""Write offline stand-ins for the seed-workflow recipes and print how to run each one.

    python scripts/standins.py OUT [--size 128] [--per-class 8] [--only beans ...]

Each stand-in has the format of the real data its recipe expects (see docs/recipes.md):
beans as a Hugging Face save_to_disk folder, PlantVillage as 38 class folders, Oxford pets
as one folder with labels in the file names, two ImageNet photos in category folders, and
smoking as split folders. The images are synthetic (scikit-image's photos for ImageNet), so
the runs show that every stage works, not how well a model can do.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the writers live with the tests that use them

from tests import standins  # noqa: E402

# Only MobileNetV2's ImageNet weights are packaged for offline use: the other recipes train
# from random initialisation offline (model.weights=none), at the stand-ins' image size.
NO_WEIGHTS = ["model.weights=none"]


def _sized(size: int) -> list[str]:
    return [f"model.image_size={size}", f"model.resize_size={size}"]


def write(name: str, out: Path, size: int, per_class: int) -> tuple[Path, list[str]]:
    """Write one stand-in; return its data.path and the recipe overrides that go with it."""
    folder = out / name
    if name == "beans":
        s = standins.write_beans(
            folder, {"train": per_class, "validation": max(1, per_class // 4),
                     "test": max(1, per_class // 4)}, size=size,
        )
        return s.path, ["data.hub_name=null", *NO_WEIGHTS, *_sized(size)]
    if name == "plantvillage":
        s = standins.write_plantvillage(folder, per_class=max(4, per_class), size=size)
        return s.path, [*NO_WEIGHTS, *_sized(size), "data.splits={train: 0.5, val: 0.25, test: 0.25}"]
    if name == "pets":
        s = standins.write_pets(folder, per_breed=max(3, per_class), size=size)
        return s.path, [*NO_WEIGHTS, *_sized(size)]
    if name == "imagenet-photos":
        s = standins.write_imagenet_photos(folder)
        return s.path, []  # the packaged MobileNetV2 weights, at their own 224 px
    if name == "smoking":
        s = standins.write_smoking(
            folder, {"Training": per_class, "Validation": max(1, per_class // 4),
                     "Testing": max(1, per_class // 4)}, size=size,
        )
        return s.path, [*NO_WEIGHTS, *_sized(size)]
    raise SystemExit(f"unknown stand-in {name!r}. Allowed: {', '.join(standins.WRITERS)}")


RECIPE_OF = {
    "beans": "beans",
    "plantvillage": "plantvillage",
    "pets": "pets",
    "imagenet-photos": "imagenet-correct-vs-wrong",
    "smoking": "smoking-vgg19",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write the stand-ins into")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    parser.add_argument("--per-class", type=int, default=8,
                        help="training images per class (default 8; a few more where needed)")
    parser.add_argument("--only", nargs="+", choices=list(standins.WRITERS), default=None)
    args = parser.parse_args(argv)
    if args.size < 32 or args.per_class < 1:
        parser.error(f"--size must be at least 32 and --per-class at least 1, got {args.size}, "
                     f"{args.per_class}")
    for name in args.only or list(standins.WRITERS):
        path, overrides = write(name, args.out, args.size, args.per_class)
        sets = " ".join(f"--set {shlex.quote(o)}" for o in [f"data.path={path}", *overrides])
        print(f"{name}: {path}\n  xaudit run configs/{RECIPE_OF[name]}.yaml {sets}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
