"""The images an audit runs on, from a classifier and decoded pixels."""

from __future__ import annotations

import torch

from .base import AuditImages


@torch.no_grad()
def audit_images(clf, pixels: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None,
                 ids: list[str], masks: torch.Tensor | None,
                 object_masks: torch.Tensor | None,
                 mask_missing: torch.Tensor | None = None) -> AuditImages:
    """uint8 pixels in the classifier's geometry -> normalised inputs, predictions, targets
    (``None``: the predicted classes)."""
    x = clf.preprocessing.normalize(pixels)
    device = clf.device
    preds = torch.cat([clf(x[i : i + 32].to(device)).argmax(1).cpu() for i in range(0, len(x), 32)])
    return AuditImages(
        x=x,
        pixels=pixels.float() / 255.0,
        labels=labels,
        preds=preds,
        targets=targets if targets is not None else preds.clone(),
        ids=list(ids),
        masks=masks,
        mask_missing=mask_missing,
        object_masks=object_masks,
    )
