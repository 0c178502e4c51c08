"""Which parameters training updates: the head (frozen), the last n blocks, or everything."""

from __future__ import annotations

from torch import nn

from ..errors import ModelError
from .classifier import Classifier


def configure_trainable(clf: Classifier, mode: str, n_blocks: int = 1) -> list[str]:
    """Set requires_grad for the training mode; return the names of trained modules."""
    model = clf.module
    for p in model.parameters():
        p.requires_grad_(False)
    if mode == "finetune":
        for p in model.parameters():
            p.requires_grad_(True)
        return ["(all)"]
    if clf.head is None:
        raise ModelError(f"{type(model).__name__}: no classification head (nn.Linear) known; "
                         "set head='...' or train with model.mode: finetune")
    trained = [clf.head]
    if mode == "last_n":
        blocks = clf.anatomy.trainable_blocks
        if n_blocks > len(blocks):
            raise ModelError(
                f"model.n_blocks: {n_blocks} exceeds the {len(blocks)} blocks of "
                f"{clf.source.get('name', clf.family)} ({', '.join(b[0] for b in blocks)})"
            )
        trained = [n for _, names in blocks[-n_blocks:] for n in names] + trained
    for name in trained:
        for p in model.get_submodule(name).parameters():
            p.requires_grad_(True)
    return trained


def set_train_mode(model: nn.Module, trained: list[str]) -> None:
    """Train mode only for trained modules: frozen BatchNorm statistics stay fixed."""
    if trained == ["(all)"]:
        model.train()
        return
    model.eval()
    for name in trained:
        model.get_submodule(name).train()


def count_params(model: nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total
