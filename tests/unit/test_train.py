import torch

from xaudit.config import AugmentConfig, TrainConfig
from xaudit.data.base import Record
from xaudit.data.transforms import DecodedStore, Preprocessing
from xaudit.models import Classifier, configure_trainable
from xaudit.train import HeadInput, extract_features, train


def _records(n=12, size=32):
    gen = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        label = i % 2
        img = (torch.rand(size, size, 3, generator=gen) * 80).to(torch.uint8)
        img[..., label] += 150
        out.append(Record(id=f"r{i}", label=label, image=img.numpy()))
    return out


def test_frozen_training_runs_the_backbone_once_per_view_and_is_seeded():
    pre = Preprocessing(32, 32)
    records = _records()
    store = DecodedStore(pre)
    store.prepare(records, workers=1)
    cfg = TrainConfig(epochs=4, batch_size=4, cached_views=2, augment=AugmentConfig(hflip=True))
    results = []
    for _ in range(2):
        built = Classifier.from_torchvision("resnet18", "none", num_classes=2, seed=0)
        trained = configure_trainable(built, "frozen")
        res, cache = train(built, trained, "frozen", store, records[:8], records[8:], pre, cfg,
                           torch.device("cpu"), torch.Generator().manual_seed(1))
        results.append((res, built.module.fc.weight.detach().clone()))
        assert res.backbone_passes == 2 * 8 + 4 and len(res.history) == 4
        assert len(cache.train_views) == 2 and cache.train_views[0].shape == (8, 512)
    assert torch.equal(results[0][1], results[1][1])
    assert [r["train_loss"] for r in results[0][0].history] == [r["train_loss"] for r in results[1][0].history]


def test_bf16_feature_pass_stays_close_to_fp32():
    pre = Preprocessing(32, 32)
    records = _records()
    store = DecodedStore(pre)
    store.prepare(records, workers=1)
    built = Classifier.from_torchvision("resnet18", "none", num_classes=2, seed=0)
    backbone = HeadInput(built.module, built.head)
    args = (backbone, store, records, pre, 4, torch.device("cpu"))
    fp32 = extract_features(*args)
    bf16 = extract_features(*args, precision="bf16")
    assert fp32.dtype == bf16.dtype == torch.float32
    rel = (bf16 - fp32).norm() / fp32.norm()
    assert 0 < rel < 0.05


def test_best_keeper_keeps_best_accuracy_then_loss_and_stops_on_patience():
    from torch import nn

    from xaudit.train import BestKeeper

    layer = nn.Linear(1, 1, bias=False)
    keeper = BestKeeper(layer, patience=1)
    history = [(0.5, 1.0), (0.8, 0.9), (0.8, 0.7), (0.7, 0.5), (0.6, 0.4)]
    stops = []
    for epoch, (acc, loss) in enumerate(history, start=1):
        layer.weight.data.fill_(epoch)
        stops.append(keeper.update(epoch, {"val_acc": acc, "val_loss": loss, "train_loss": 0.0}))
    assert stops == [False, False, False, False, True]  # two epochs without improvement
    assert keeper.epoch == 3  # tie on accuracy broken by the lower loss
    assert keeper.restore(True) == 0.8 and layer.weight.item() == 3.0
