"""AttnLRP against lxt (the oracle, in a process of its own: it patches classes process-wide),
conservation where the answer is known, refusals, and every transformer family."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.helpers.tiny_vits import MODELS, images, torchvision_vit, transformers_vit
from xaudit.errors import ConfigError, MethodRefused
from xaudit.explain import build_explainer
from xaudit.explain.base import context_for

pytest.importorskip("timm")  # the timm families of MODELS
ROOT = Path(__file__).resolve().parents[2]
TARGETS = torch.tensor([0, 2, 1])


def attn_lrp(clf, x=None, t=TARGETS, variant="attnlrp"):
    x = images() if x is None else x
    return build_explainer({"name": "attn_lrp", "variant": variant}).attribute(
        clf.module, x, t, context_for(clf))


def plain_gradient_x_input(model: nn.Module) -> torch.Tensor:
    x = images().requires_grad_(True)
    model(x)[torch.arange(3), TARGETS].sum().backward()
    return (x.grad * x).detach()


def lxt_relevance(case: str, tmp_path: Path) -> torch.Tensor:
    pytest.importorskip("lxt")
    out = tmp_path / f"{case}.pt"
    subprocess.run([sys.executable, "-m", "tests.helpers.lxt_oracle", case, str(out)], cwd=ROOT,
                   check=True, capture_output=True, timeout=120)
    return torch.load(out)["relevance"]


@pytest.mark.parametrize("case, make, variant", [
    ("torchvision-cp", torchvision_vit, "cp"),  # lxt's own map for torchvision's ViT
    ("transformers-attnlrp", lambda: transformers_vit(implementation="eager"), "attnlrp"),
    ("transformers-attnlrp", transformers_vit, "attnlrp"),  # SDPA: the same relevance as eager
])
def test_equals_lxt(case, make, variant, tmp_path):
    theirs = lxt_relevance(case, tmp_path)
    clf = make()
    # the rules matter here: lxt's relevance is not plain gradient × input
    assert not torch.allclose(theirs, plain_gradient_x_input(clf.module), rtol=1e-3, atol=1e-6)
    torch.testing.assert_close(attn_lrp(clf, variant=variant), theirs, rtol=1e-4,
                               atol=1e-5 * float(theirs.abs().max()))


def without_additive_parameters(clf):
    with torch.no_grad():
        for name, p in clf.module.named_parameters():
            if name.endswith("bias") or name.rsplit(".", 1)[-1] in ("pos_embed", "cls_token"):
                p.zero_()
    return clf


def test_cp_lrp_conserves_the_logit():
    # no bias, embedding or token absorbs relevance and CP-LRP cuts the softmax: the input
    # relevance must sum to the explained logit (the known answer)
    clf = without_additive_parameters(MODELS["timm-vit"]())
    with torch.no_grad():
        logits = clf.module(images())[torch.arange(3), TARGETS]
    sums = attn_lrp(clf, variant="cp").sum(dim=(1, 2, 3))
    torch.testing.assert_close(sums, logits, rtol=1e-4, atol=1e-6)
    # AttnLRP passes relevance through the softmax with its bias term: not conserved
    assert not torch.allclose(attn_lrp(clf).sum(dim=(1, 2, 3)), logits, rtol=1e-2)


def test_fused_and_eager_timm_attention_give_the_same_map():
    clf = MODELS["timm-vit"]()
    fused = attn_lrp(clf)
    for m in clf.module.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False
    torch.testing.assert_close(attn_lrp(clf), fused, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("model", MODELS)
def test_every_transformer_family_gets_finite_varying_batch_free_maps(model):
    clf = MODELS[model]()
    before = {name: type(m).forward for name, m in clf.module.named_modules()}
    modes = [m.training for m in clf.module.modules()]
    rel = attn_lrp(clf)
    assert rel.shape == (3, 3, 32, 32) and torch.isfinite(rel).all()
    assert float(rel.sum(dim=1).flatten(1).std(dim=1).min()) > 0
    singles = torch.cat([attn_lrp(clf, images()[i : i + 1], TARGETS[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(rel, singles, rtol=1e-4, atol=1e-6 * float(rel.abs().max()))
    assert [m.training for m in clf.module.modules()] == modes
    assert all(p.grad is None for p in clf.module.parameters())
    # the rules are gone afterwards: no instance forward, no hook left behind
    for name, m in clf.module.named_modules():
        assert "forward" not in vars(m) and not m._forward_hooks and not m._forward_pre_hooks, name
        assert type(m).forward is before[name]


def test_swin_windows_are_explained():
    import xaudit

    torch.manual_seed(0)
    clf = xaudit.Classifier.from_timm(
        "swin_tiny_patch4_window7_224", pretrained=False, classes=["a", "b", "c"],
        model_args={"img_size": 32, "window_size": 4, "embed_dim": 16, "depths": (2, 2),
                    "num_heads": (2, 2)})
    rel = attn_lrp(clf)
    assert torch.isfinite(rel).all() and float(rel.std()) > 0


class FunctionalGelu(nn.Module):
    def forward(self, x):
        return nn.functional.gelu(x) * 1.0


def test_a_step_the_rules_cannot_see_is_refused():
    clf = MODELS["timm-vit"]()
    for block in clf.module.blocks:
        block.mlp.act = FunctionalGelu()
    with pytest.raises(MethodRefused, match="relevance sums to .* not the logit"):
        attn_lrp(clf)


def test_a_cnn_is_refused_with_the_reason():
    import xaudit

    cnn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 3))
    clf = xaudit.Classifier.from_module(cnn, ["a", "b", "c"], image_size=32)
    with pytest.raises(MethodRefused, match="no self-attention module.*Use lrp, integrated_gradients"):
        attn_lrp(clf)


def test_attention_computed_in_code_is_refused():
    from torchvision.models.swin_transformer import SwinTransformer

    import xaudit

    torch.manual_seed(0)
    swin = SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 2],
                           window_size=[4, 4], num_classes=3).eval()
    clf = xaudit.Classifier.from_module(swin, ["a", "b", "c"], image_size=32)
    with pytest.raises(MethodRefused, match="did not call their query/key/value projection"):
        attn_lrp(clf)


def test_variant_is_checked():
    with pytest.raises(ConfigError, match="variant"):
        build_explainer({"name": "attn_lrp", "variant": "gamma"})


@pytest.mark.parametrize("arch", ["vit_small_patch16_224", "deit_small_distilled_patch16_224"])
def test_full_depth_vit_small_and_deit_at_64_px(arch):
    import xaudit

    torch.manual_seed(0)
    clf = xaudit.Classifier.from_timm(arch, pretrained=False, classes=["a", "b", "c"],
                                      model_args={"img_size": 64})
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    rel = attn_lrp(clf, x, torch.tensor([0, 2])).sum(dim=1)
    assert torch.isfinite(rel).all() and (rel.flatten(1).std(1) > 0).all()
