"""Training: Adam + cross-entropy, best-on-validation checkpoint, seeded.

Frozen-backbone mode computes backbone features once and trains the head on the cached
features: epochs after the first never re-run the backbone. With augmentation on, a fixed
number of augmented views per image is cached and each epoch draws one view per image.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .data.base import Record
from .data.transforms import DecodedStore, Preprocessing, augment_batch, build_augment
from .models import Classifier, set_train_mode
from .progress import report_epoch

Progress = Callable[[str, int, int], None]  # (description, done, total)


def _noop(_desc: str, _done: int, _total: int) -> None:
    pass


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_val_accuracy: float | None = None
    seconds: float = 0.0
    feature_cache: bool = False
    backbone_passes: int = 0  # images through the backbone (the cost frozen mode saves)


class HeadInput(nn.Module):
    """Runs the model and returns what its head received: the backbone features."""

    def __init__(self, model: nn.Module, head: str):
        super().__init__()
        self.model = model
        self.head = model.get_submodule(head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        captured: list[torch.Tensor] = []
        handle = self.head.register_forward_hook(lambda _m, args, _out: captured.append(args[0]))
        try:
            self.model(x)
        finally:
            handle.remove()
        return captured[0]


@torch.inference_mode()
def extract_features(
    backbone: nn.Module,
    store: DecodedStore,
    records: list[Record],
    pre: Preprocessing,
    batch_size: int,
    device: torch.device,
    augment=None,
    generator: torch.Generator | None = None,
    progress: Progress = _noop,
    desc: str = "features",
    precision: str = "fp32",
) -> torch.Tensor:
    backbone.eval()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    out = []
    for start in range(0, len(records), batch_size):
        images = store.batch(records[start : start + batch_size])
        if augment is not None:
            images = augment_batch(augment, images, generator)
        x = pre.normalize(images).to(device).contiguous(memory_format=torch.channels_last)
        with autocast:
            out.append(backbone(x).float().flatten(1).cpu())
        progress(desc, min(start + batch_size, len(records)), len(records))
    return torch.cat(out) if out else torch.empty(0)


def _accuracy_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    loss = F.cross_entropy(logits, labels).item()
    acc = (logits.argmax(1) == labels).float().mean().item()
    return acc, loss


class BestKeeper:
    """Keeps the best-on-validation state (accuracy, then loss) and decides early stopping.

    Without a validation split every epoch counts as the best, so the last one is kept.
    """

    def __init__(self, module: nn.Module, patience: int | None):
        self.module, self.patience = module, patience
        self.score: tuple[float, float] | None = None
        self.state = copy.deepcopy(module.state_dict())
        self.epoch, self.stale = 0, 0

    def update(self, epoch: int, row: dict) -> bool:
        """Record an epoch's history row; True when training should stop."""
        has_val = row["val_acc"] is not None
        score = (row["val_acc"], row["val_loss"]) if has_val else (0.0, row["train_loss"])
        best = self.score
        if not has_val or best is None or score[0] > best[0] or (score[0] == best[0] and score[1] < best[1]):
            self.score, self.state, self.stale = score, copy.deepcopy(self.module.state_dict()), 0
            self.epoch = epoch
        else:
            self.stale += 1
        return self.patience is not None and self.stale > self.patience

    def restore(self, has_val: bool) -> float | None:
        """Load the best state back; return its validation accuracy (None without validation)."""
        self.module.load_state_dict(self.state)
        return self.score[0] if self.score is not None and has_val else None


class FeatureCache:
    """Cached backbone features of the train (K views) and val splits."""

    def __init__(self, train_views: list[torch.Tensor], train_labels, val, val_labels):
        self.train_views = train_views
        self.train_labels = train_labels
        self.val = val
        self.val_labels = val_labels


def build_feature_cache(
    clf: Classifier, store, train, val, pre, cfg, device, generator, progress=_noop
) -> FeatureCache:
    backbone = HeadInput(clf.module, clf.head).to(device)
    aug = build_augment(cfg.augment, pre.image_size)
    n_views = cfg.cached_views if aug is not None else 1
    views = [
        extract_features(
            backbone, store, train, pre, cfg.batch_size, device, aug, generator, progress,
            f"train features (view {v + 1}/{n_views})", cfg.precision,
        )
        for v in range(n_views)
    ]
    val_feats = extract_features(
        backbone, store, val, pre, cfg.batch_size, device, None, None, progress, "val features", cfg.precision
    )
    return FeatureCache(
        views,
        torch.tensor([r.label for r in train]),
        val_feats,
        torch.tensor([r.label for r in val]),
    )


def fit_head(
    head: nn.Module, cache: FeatureCache, cfg, generator: torch.Generator, labels=None, progress=_noop
) -> TrainResult:
    """Train ``head`` on cached features; keep the best-on-validation state."""
    result = TrainResult(feature_cache=True)
    labels = cache.train_labels if labels is None else labels
    opt = torch.optim.Adam(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = len(labels)
    keeper = BestKeeper(head, cfg.patience)
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        head.train()
        order = torch.randperm(n, generator=generator)
        view_of = torch.randint(0, len(cache.train_views), (n,), generator=generator)
        total_loss, correct = 0.0, 0
        for start in range(0, n, cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            feats = torch.stack([cache.train_views[int(v)][int(i)] for i, v in zip(idx, view_of[idx], strict=True)])
            logits = head(feats)
            loss = F.cross_entropy(logits, labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total_loss += loss.item() * len(idx)
            correct += int((logits.argmax(1) == labels[idx]).sum())
        head.eval()
        row = {"epoch": epoch, "train_loss": total_loss / n, "train_acc": correct / n}
        if len(cache.val_labels):
            with torch.no_grad():
                acc, loss = _accuracy_loss(head(cache.val), cache.val_labels)
            row.update(val_loss=loss, val_acc=acc)
        else:
            row.update(val_loss=None, val_acc=None)
        row["seconds"] = time.perf_counter() - t0
        result.history.append(row)
        progress("epochs", epoch, cfg.epochs)
        report_epoch(progress, row)
        if keeper.update(epoch, row):
            break
    result.best_epoch = keeper.epoch
    result.best_val_accuracy = keeper.restore(bool(len(cache.val_labels)))
    return result


def fit_full(
    clf: Classifier, trained: list[str], store, train, val, pre: Preprocessing, cfg, device, generator, progress=_noop
) -> TrainResult:
    """Train the trainable part of the model end to end on decoded images."""
    model = clf.module
    result = TrainResult()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    aug = build_augment(cfg.augment, pre.image_size)
    labels = torch.tensor([r.label for r in train])
    keeper = BestKeeper(model, cfg.patience)
    steps = (len(train) + cfg.batch_size - 1) // cfg.batch_size
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        set_train_mode(model, trained)
        order = torch.randperm(len(train), generator=generator)
        total_loss, correct = 0.0, 0
        for step, start in enumerate(range(0, len(train), cfg.batch_size)):
            idx = order[start : start + cfg.batch_size]
            images = store.batch([train[int(i)] for i in idx])
            if aug is not None:
                images = augment_batch(aug, images, generator)
            x = pre.normalize(images).to(device).contiguous(memory_format=torch.channels_last)
            y = labels[idx].to(device)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            result.backbone_passes += len(idx)
            total_loss += loss.item() * len(idx)
            correct += int((logits.argmax(1) == y).sum())
            progress(f"epoch {epoch}/{cfg.epochs}", step + 1, steps)
        model.eval()
        row = {"epoch": epoch, "train_loss": total_loss / len(train), "train_acc": correct / len(train)}
        if val:
            acc, loss = evaluate_split(model, store, val, pre, cfg.batch_size, device)
            row.update(val_loss=loss, val_acc=acc)
            result.backbone_passes += len(val)
        else:
            row.update(val_loss=None, val_acc=None)
        row["seconds"] = time.perf_counter() - t0
        result.history.append(row)
        report_epoch(progress, row)
        if keeper.update(epoch, row):
            break
    result.best_epoch = keeper.epoch
    result.best_val_accuracy = keeper.restore(bool(val))
    model.eval()
    return result


@torch.inference_mode()
def evaluate_split(model, store, records, pre, batch_size, device) -> tuple[float, float]:
    correct, total_loss = 0, 0.0
    for start in range(0, len(records), batch_size):
        batch = records[start : start + batch_size]
        x = pre.normalize(store.batch(batch)).to(device).contiguous(memory_format=torch.channels_last)
        y = torch.tensor([r.label for r in batch], device=device)
        logits = model(x).float()
        total_loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += int((logits.argmax(1) == y).sum())
    return correct / len(records), total_loss / len(records)


def train(
    clf: Classifier,
    trained: list[str],
    mode: str,
    store: DecodedStore,
    train_records: list[Record],
    val_records: list[Record],
    pre: Preprocessing,
    cfg,
    device: torch.device,
    generator: torch.Generator,
    progress: Progress = _noop,
) -> tuple[TrainResult, FeatureCache | None]:
    """Train per the recipe; the model ends in eval mode holding its best weights."""
    t0 = time.perf_counter()
    clf.module.to(device).to(memory_format=torch.channels_last)
    cache = None
    if mode == "frozen":
        cache = build_feature_cache(clf, store, train_records, val_records, pre, cfg, device, generator, progress)
        head = clf.module.get_submodule(clf.head)
        head.cpu()
        result = fit_head(head, cache, cfg, generator, progress=progress)
        head.to(device)
        result.backbone_passes = sum(len(v) for v in cache.train_views) + len(cache.val)
    else:
        result = fit_full(clf, trained, store, train_records, val_records, pre, cfg, device, generator, progress)
    # Trained in channels_last for speed; handed on in the ordinary layout, which every
    # library downstream (Captum's .view calls among them) expects.
    clf.module.to(memory_format=torch.contiguous_format).eval()
    result.seconds = time.perf_counter() - t0
    return result, cache
