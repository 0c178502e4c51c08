"""The CAM layer audit on models whose faithful layer is known by construction."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from tests.helpers.audit_toys import audit_input
from xaudit.audit import AuditImages
from xaudit.audit.cam_layers import cam_layers, candidate_layers
from xaudit.explain import build_explainer
from xaudit.explain.base import context_for

SIZE = 16


class Scramble(nn.Module):
    """The same activations at fixed, permuted positions: a layer whose CAM points elsewhere."""

    def __init__(self, scramble: bool):
        super().__init__()
        perm = torch.randperm(SIZE * SIZE, generator=torch.Generator().manual_seed(0))
        self.register_buffer("perm", perm if scramble else torch.arange(SIZE * SIZE))

    def forward(self, x):
        n, c, h, w = x.shape
        return x.flatten(2)[:, :, self.perm].view(n, c, h, w)


class RedPatch(nn.Module):
    """logit(red) = 5 × mean over pixels of ReLU(r − (g + b)/2): a detector of red pixels; the
    pooling ignores where they are, so permuting the map after it changes nothing."""

    def __init__(self, scramble: bool):
        super().__init__()
        self.early = nn.Sequential(nn.Conv2d(3, 1, 1), nn.ReLU())
        self.late = Scramble(scramble)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(1, 2)
        with torch.no_grad():
            self.early[0].weight.copy_(torch.tensor([1.0, -0.5, -0.5]).view(1, 3, 1, 1))
            self.early[0].bias.zero_()
            self.head.weight.copy_(torch.tensor([[-5.0], [5.0]]))
            self.head.bias.zero_()

    def forward(self, x):
        return self.head(self.pool(self.late(self.early(x))).flatten(1))


def red_patches(n: int = 8) -> AuditImages:
    g = torch.Generator().manual_seed(3)
    pixels = 0.3 * torch.rand(n, 3, SIZE, SIZE, generator=g)
    for i in range(n):
        y, x = torch.randint(0, SIZE - 5, (2,), generator=g).tolist()
        pixels[i, 0, y:y + 5, x:x + 5] = 1.0
    labels = torch.ones(n, dtype=torch.long)
    return AuditImages(x=pixels.clone(), pixels=pixels, labels=labels, preds=labels.clone(),
                       targets=labels.clone(), ids=[f"img{i}" for i in range(n)])


def run(scramble: bool, figures):
    model = RedPatch(scramble).eval()
    images = red_patches()
    inp = audit_input(model, [build_explainer("grad_cam")], images)
    inp = dataclasses.replace(inp, ctx=dataclasses.replace(inp.ctx, target_layer=model.late))
    return cam_layers(inp, figures, layers=2)


def test_candidates_are_the_default_and_the_blocks_below_it():
    model = RedPatch(True)
    names = [name for name, _ in candidate_layers(model, model.late, 4)]
    assert names == ["late", "early"]  # the head is the output block; `late` has no weights


def test_a_layer_that_scrambles_positions_loses_to_the_layer_below(tmp_path):
    result = run(scramble=True, figures=tmp_path)
    assert result.figures == ["audit_cam_layers.png"] and (tmp_path / result.figures[0]).is_file()
    s = result.summary["methods"]["grad_cam"]
    default, early = s["layers"]
    assert (default["layer"], early["layer"]) == ("late", "early")
    assert early["shown_better"] and s["recommended"] == "early"
    assert early["difference"] > 0 and early["difference_ci"][0] > 0
    assert s["advice"].startswith("early is more faithful than the default layer late")
    assert "grad_cam: early is more faithful" in result.text
    assert early["agreement"] < 0.5  # a scrambled map hardly ranks pixels alike


def test_the_default_stands_when_no_layer_is_shown_better(tmp_path):
    result = run(scramble=False, figures=tmp_path)  # `late` passes the activations through unchanged
    s = result.summary["methods"]["grad_cam"]
    assert s["recommended"] == "late" and not any(c["shown_better"] for c in s["layers"])
    assert s["layers"][1]["agreement"] == pytest.approx(1.0)
    assert s["advice"].startswith("the default layer late stands")


def test_a_vision_transformer_gets_its_token_layers_as_candidates(tmp_path):
    from tests.helpers.audit_toys import images_for
    from xaudit.models.classifier import Classifier

    torch.manual_seed(0)
    clf = Classifier.from_timm("vit_tiny_patch16_224", pretrained=False, classes=["a", "b"],
                               model_args={"img_size": 32, "patch_size": 8, "depth": 3})
    model, ctx = clf.module.eval(), context_for(clf)
    names = [name for name, _ in candidate_layers(model, ctx.target_layer, 4)]
    assert names[0] == "blocks.2.norm1" and len(names) == 4
    inp = dataclasses.replace(audit_input(model, [build_explainer("grad_cam")],
                                          images_for(model, n=6, size=32)), ctx=ctx)
    s = cam_layers(inp, tmp_path).summary["methods"]["grad_cam"]
    assert [c["layer"] for c in s["layers"]] == names  # every token layer took the reshape
    assert all(0 <= c["deletion_auc"] <= 1 and c["n"] == 6 for c in s["layers"])
