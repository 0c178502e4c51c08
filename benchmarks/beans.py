"""The bean-leaf seed workflow: xaudit's stages against a plain re-implementation of the seed.

Both sides: synthetic leaves with the beans dataset's split sizes, stored as JPEG bytes (as
the Hugging Face dataset stores them), a frozen random-init ResNet-18 at 128 px (ImageNet
weights are not available offline), 3 epochs of head training with flips and rotations,
test evaluation, an IG n_steps sweep [8, 16, 24, 48] and a cascading randomization
(fc, layer4, layer3, layer2, layer1, conv1) with 24-step IG, on the same explained images.
"""

from __future__ import annotations

import copy
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import IntegratedGradients
from PIL import Image
from torch import nn
from torchvision import transforms

from xaudit.config import AugmentConfig, TrainConfig
from xaudit.data.base import Record
from xaudit.data.synthetic import render_leaf
from xaudit.data.transforms import DecodedStore, Preprocessing
from xaudit.evaluate import predict
from xaudit.explain import ExplainContext, build_explainer
from xaudit.explain.engine import MapStore, explain_dataset
from xaudit.explain.fastpath import FastPath, ForwardCache
from xaudit.models import Classifier
from xaudit.train import train

from .common import Results

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SWEEP = [8, 16, 24, 48]
CASCADE = ["fc", "layer4", "layer3", "layer2", "layer1", "conv1"]


def make_data(sizes: tuple[int, int, int], render: int = 160) -> dict[str, list[tuple[bytes, int]]]:
    out = {}
    for s, (split, n) in enumerate(zip(("train", "val", "test"), sizes, strict=True)):
        items = []
        for i in range(n):
            leaf = render_leaf(10_000 * s + i, i % 3, size=render)
            buf = io.BytesIO()
            Image.fromarray(leaf.image).save(buf, format="JPEG", quality=90)
            items.append((buf.getvalue(), i % 3))
        out[split] = items
    return out


def frozen_resnet18() -> nn.Module:
    import torchvision

    torch.manual_seed(479)
    model = torchvision.models.resnet18()
    model.fc = nn.Linear(512, 3)
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith("fc.")
    return model.eval()


def reset(module: nn.Module, seed: int) -> None:
    torch.manual_seed(seed)
    for child in module.modules():
        if hasattr(child, "reset_parameters"):
            child.reset_parameters()


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra, rb = a.flatten().argsort().argsort().double(), b.flatten().argsort().argsort().double()
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


# ---------------------------------------------------------------- the plain version (seed)


class Plain(torch.utils.data.Dataset):
    def __init__(self, items, transform):
        self.items, self.transform = items, transform

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        data, label = self.items[i]
        return self.transform(Image.open(io.BytesIO(data)).convert("RGB")), label


def plain_workflow(data, n_explain: int, size: int = 128) -> dict:
    norm = transforms.Normalize(MEAN, STD)
    train_t = transforms.Compose([transforms.Resize((size, size)), transforms.RandomHorizontalFlip(),
                                  transforms.RandomRotation(10), transforms.ToTensor(), norm])
    eval_t = transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor(), norm])
    loader = lambda items, t, bs, sh: torch.utils.data.DataLoader(Plain(items, t), bs, shuffle=sh)  # noqa: E731
    train_l = loader(data["train"], train_t, 16, True)
    val_l, test_l = loader(data["val"], eval_t, 32, False), loader(data["test"], eval_t, 32, False)
    model = frozen_resnet18()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    for _epoch in range(3):
        model.train()
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        for x, y in train_l:
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        model.eval()
        with torch.inference_mode():
            for x, y in val_l:
                F.cross_entropy(model(x), y)
    model.eval()
    correct = 0
    with torch.inference_mode():
        for x, y in test_l:
            correct += int((model(x).argmax(1) == y).sum())
    test_ds = Plain(data["test"], eval_t)
    black = ((torch.zeros(3) - torch.tensor(MEAN)) / torch.tensor(STD)).view(3, 1, 1)

    def ig(m, image, target, steps):
        x = image.unsqueeze(0).requires_grad_(True)
        return IntegratedGradients(m).attribute(x, baselines=black.expand_as(image).unsqueeze(0),
                                                target=target, n_steps=steps).detach()[0]

    sweep, cascade = [], []
    for idx in range(n_explain):
        image, _ = test_ds[idx]
        with torch.inference_mode():
            pred = int(model(image.unsqueeze(0)).argmax())
        attrs = {s: ig(model, image, pred, s) for s in SWEEP}
        sweep.append([spearman(attrs[s].abs().mean(0), attrs[48].abs().mean(0)) for s in SWEEP])
        original = ig(model, image, pred, 24)
        rnd = copy.deepcopy(model)
        row = []
        for step, name in enumerate(CASCADE, start=1):
            reset(rnd.get_submodule(name), 479 + step)
            row.append(spearman(ig(rnd, image, pred, 24).mean(0), original.mean(0)))
        cascade.append(row)
    return {"accuracy": correct / len(data["test"]), "sweep": sweep, "cascade": cascade}


# ---------------------------------------------------------------- xaudit's stages


def xaudit_workflow(data, n_explain: int, size: int = 128) -> dict:
    pre = Preprocessing(size, size, MEAN, STD)
    splits = {s: [Record(id=f"{s}/{i}", label=lab, image=b) for i, (b, lab) in enumerate(items)]
              for s, items in data.items()}
    store = DecodedStore(pre)
    for records in splits.values():
        store.prepare(records, workers=2)
    model = frozen_resnet18()
    built = Classifier.from_module(model, [str(i) for i in range(model.fc.out_features)], MEAN, STD, size)
    cfg = TrainConfig(epochs=3, lr=1e-3, batch_size=16, cached_views=1, precision="bf16",
                      augment=AugmentConfig(hflip=True, rotation=10))
    train(built, ["fc"], "frozen", store, splits["train"], splits["val"], pre, cfg,
          torch.device("cpu"), torch.Generator().manual_seed(479))
    probs = predict(model, store, splits["test"], pre, 64, torch.device("cpu"))
    labels = torch.tensor([r.label for r in splits["test"]])
    accuracy = float((probs.argmax(1) == labels).float().mean())
    chosen = splits["test"][:n_explain]
    targets = probs[:n_explain].argmax(1).tolist()
    batch_fn = lambda recs: pre.normalize(store.batch(recs))  # noqa: E731
    ctx = ExplainContext(mean=torch.tensor(MEAN), std=torch.tensor(STD),
                         generator=torch.Generator().manual_seed(0))
    fast = FastPath(precision="bf16")
    forwards = ForwardCache()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # n_steps sweep: one stream of batches, every step count on each batch; fp32, since
        # the sweep measures the quadrature error that bf16 rounding would blur
        sweep_methods = [build_explainer({"name": "integrated_gradients", "n_steps": s}) for s in SWEEP]
        stores = [MapStore(root / f"s{s}", e.label) for s, e in zip(SWEEP, sweep_methods, strict=True)]
        explain_dataset(model, sweep_methods, chosen, targets, batch_fn, ctx, stores, 16, 64,
                        torch.device("cpu"), fast=FastPath(), forwards=forwards)
        maps = {s: st.load()["maps"] for s, st in zip(SWEEP, stores, strict=True)}
        ig24 = build_explainer({"name": "integrated_gradients", "n_steps": 24})
        original = MapStore(root / "c0", ig24.label)
        explain_dataset(model, [ig24], chosen, targets, batch_fn, ctx, [original], 16, 64,
                        torch.device("cpu"), fast=fast, forwards=forwards)
        ref = original.load()["maps"]
        rnd = copy.deepcopy(model)
        cascade_maps = []
        for step, name in enumerate(CASCADE, start=1):
            reset(rnd.get_submodule(name), 479 + step)
            st = MapStore(root / f"c{step}", ig24.label)
            explain_dataset(rnd, [ig24], chosen, targets, batch_fn, ctx, [st], 16, 64,
                            torch.device("cpu"), fast=fast)
            cascade_maps.append(st.load()["maps"])
    sweep = [[spearman(maps[s][i].abs(), maps[48][i].abs()) for s in SWEEP] for i in range(n_explain)]
    cascade = [[spearman(m[i], ref[i]) for m in cascade_maps] for i in range(n_explain)]
    return {"accuracy": accuracy, "sweep": sweep, "cascade": cascade}


def bench_beans(res: Results, sizes: tuple[int, int, int], n_explain: int) -> None:
    print(f"Bean workflow: synthetic leaves {sizes[0]}/{sizes[1]}/{sizes[2]}, frozen ResNet-18 "
          f"(random init) at 128 px, 3 epochs, IG sweep {SWEEP} and cascade on {n_explain} "
          f"test image(s)", flush=True)
    data = make_data(sizes)
    t0 = time.perf_counter()
    plain = plain_workflow(data, n_explain)
    t_plain = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = xaudit_workflow(data, n_explain)
    t_ours = time.perf_counter() - t0
    print(f"  seconds: plain {t_plain:.1f}, xaudit {t_ours:.1f}; test accuracy plain "
          f"{plain['accuracy']:.3f}, xaudit {ours['accuracy']:.3f}", flush=True)
    print(f"  IG sweep Spearman vs 48 steps (image 0): plain "
          f"{np.round(plain['sweep'][0], 3).tolist()}, xaudit {np.round(ours['sweep'][0], 3).tolist()}",
          flush=True)
    print(f"  cascade Spearman (image 0): plain {np.round(plain['cascade'][0], 2).tolist()}, "
          f"xaudit {np.round(ours['cascade'][0], 2).tolist()}", flush=True)
    res.add("Bean workflow: plain seconds / xaudit seconds", t_plain / t_ours, 3.0)
