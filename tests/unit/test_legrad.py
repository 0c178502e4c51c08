"""LeGrad against torchcam 0.5's LeGrad (the oracle) on a torchvision ViT, and the families
table's output layers: on the last block's tokens they give the model's own logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.helpers.tiny_vits import MODELS, explain, images, torchvision_vit
from xaudit.errors import ConfigError
from xaudit.explain import build_explainer
from xaudit.explain.base import context_for
from xaudit.models.families import describe

pytest.importorskip("timm")  # the timm families of MODELS
torchcam = pytest.importorskip("torchcam.methods")


@pytest.mark.parametrize("layers", [None, 1])
def test_legrad_equals_torchcam(layers):
    clf = torchvision_vit()
    tv = clf.module
    x, t = images(), torch.tensor([0, 2, 1])
    ours = build_explainer({"name": "legrad", "layers": layers}).attribute(
        tv, x, t, context_for(clf))
    blocks = list(tv.encoder.layers)[-(layers or len(tv.encoder.layers)) :]
    # torchcam's own default scores the mean of all tokens; the model (and xaudit) reads the
    # class token, so the oracle is given the model's projection
    with torchcam.LeGrad(tv, blocks, prefix_tokens=1,
                         score_projection=lambda z: tv.heads(tv.encoder.ln(z)[:, 0])) as cam:
        theirs = cam(t.tolist(), tv(x), normalized=False)[0]
    expected = F.interpolate(theirs[:, None], size=(32, 32), mode="bilinear", align_corners=False)
    assert float(expected.abs().max()) > 0
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("model", MODELS)
def test_the_tables_output_layers_on_the_last_block_give_the_logits(model):
    clf = MODELS[model]()
    anatomy = describe(clf.module)
    last = clf.module.get_submodule(anatomy.attention[-1].rsplit(".", 1)[0])
    kept = []
    handle = last.register_forward_hook(lambda _m, _a, out: kept.append(out))
    with torch.no_grad():
        logits = clf.module(images())
        handle.remove()
        torch.testing.assert_close(anatomy.score(kept[0]), logits, rtol=1e-5, atol=1e-6)


def test_layers_is_checked():
    with pytest.raises(ConfigError, match="layers must be an integer >= 1"):
        build_explainer({"name": "legrad", "layers": 0})


def test_fewer_layers_change_the_map():
    clf, x, t = MODELS["timm-vit"](), images(1), torch.tensor([1])
    assert not torch.allclose(explain(clf, "legrad", x, t),
                              build_explainer({"name": "legrad", "layers": 1}).attribute(
                                  clf.module, x, t, context_for(clf)))
