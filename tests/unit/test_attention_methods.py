"""Attention rollout and Chefer et al.'s relevance: against the papers' equations on tiny
ViTs (attention computed by hand, per image), a hand-computed answer, fused kernels equal to
the eager path, batches equal to single images, and refusals where attention is not global
(LeGrad too; its oracle, torchcam, is in test_legrad.py)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xaudit
from tests.helpers.tiny_vits import (
    MODELS,
    explain,
    images,
    timm_vit,
    torchvision_vit,
    transformers_vit,
)
from xaudit.errors import MethodRefused
from xaudit.explain import build_explainer
from xaudit.models.families import describe

timm = pytest.importorskip("timm")

METHODS = ("attention_rollout", "chefer", "legrad")


def up(grid: torch.Tensor, size: int = 32) -> torch.Tensor:
    return F.interpolate(grid[None, None], size=(size, size), mode="bilinear", align_corners=False)[0]


# ---------------------------------------------------------------- the papers' equations, per image


def timm_attention_by_hand(model: nn.Module, x1: torch.Tensor, target: int):
    """timm's forward for one image with each block's attention written out, softmax(q·kᵀ·s),
    so the probabilities and their gradients come from no hook."""
    tokens = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x1))))
    probs = []
    for blk in model.blocks:
        a = blk.attn
        h = blk.norm1(tokens)
        b, n, c = h.shape
        q, k, v = a.qkv(h).reshape(b, n, 3, a.num_heads, a.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = a.q_norm(q), a.k_norm(k)
        p = ((q * a.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        p.retain_grad()
        probs.append(p)
        out = a.proj(a.norm((p @ v).transpose(1, 2).reshape(b, n, c)))
        tokens = tokens + blk.ls1(out)
        tokens = tokens + blk.ls2(blk.mlp(blk.norm2(tokens)))
    logits = model.forward_head(model.norm(tokens))
    logits[0, target].backward()
    return [p[0].detach() for p in probs], [p.grad[0] for p in probs]


def rollout_by_hand(probs: list[torch.Tensor]) -> torch.Tensor:
    """Abnar & Zuidema: Ã_l = 0.5·mean_h A_l + 0.5·I, rows normalised; Ã_L ⋯ Ã_1."""
    joint = torch.eye(probs[0].shape[-1])
    for a in probs:
        aug = 0.5 * a.mean(0) + 0.5 * torch.eye(a.shape[-1])
        joint = (aug / aug.sum(-1, keepdim=True)) @ joint
    return joint


def chefer_by_hand(probs: list[torch.Tensor], grads: list[torch.Tensor]) -> torch.Tensor:
    """Chefer et al. 2021, eq. 5-6: R = I; R += E_h[(∇A ⊙ A)⁺] · R, block by block."""
    rel = torch.eye(probs[0].shape[-1])
    for a, g in zip(probs, grads, strict=True):
        rel = rel + (g * a).clamp(min=0).mean(0) @ rel
    return rel


def readout_map(rel: torch.Tensor, rows: list[int], prefix: int) -> torch.Tensor:
    values = rel[rows].mean(0)[prefix:]
    side = int(values.numel() ** 0.5)
    return up(values.reshape(side, side))


@pytest.mark.parametrize("variant, rows, prefix", [
    ({}, [0], 1),                                          # class token
    ({"reg_tokens": 2}, [0], 3),                           # class token + 2 registers
    ({"name": "deit_tiny_distilled_patch16_224"}, [0, 1], 2),  # class + distillation, averaged
])
def test_rollout_and_chefer_equal_the_papers_equations(variant, rows, prefix):
    variant = dict(variant)
    clf = timm_vit(variant.pop("name", "vit_small_patch16_224"), **variant)
    assert clf.module.blocks[0].attn.fused_attn  # the fused kernel, as shipped
    a = describe(clf.module)
    assert (a.prefix_tokens, a.readout) == (prefix, tuple(rows))
    x, t = images(2), torch.tensor([2, 0])
    rollout, chefer = explain(clf, "attention_rollout", x, t), explain(clf, "chefer", x, t)
    for i in range(len(x)):
        probs, grads = timm_attention_by_hand(clf.module, x[i : i + 1], int(t[i]))
        torch.testing.assert_close(rollout[i], readout_map(rollout_by_hand(probs), rows, prefix),
                                   rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(chefer[i], readout_map(chefer_by_hand(probs, grads), rows, prefix),
                                   rtol=1e-5, atol=1e-7)
    assert clf.module.blocks[0].attn.fused_attn  # switched back


def test_rollout_of_uniform_attention_is_known():
    # q = k = 0: every block attends uniformly, A = J/L. With U = J/L (U² = U), one block is
    # 0.5·U + 0.5·I and two are 0.75·U + 0.25·I: every patch gets 0.75/L from the class token
    clf = timm_vit()
    dim = clf.module.embed_dim
    with torch.no_grad():
        for blk in clf.module.blocks:
            blk.attn.qkv.weight[: 2 * dim] = 0
            blk.attn.qkv.bias[: 2 * dim] = 0
    maps = explain(clf, "attention_rollout", images(2), torch.tensor([0, 1]))
    torch.testing.assert_close(maps, torch.full_like(maps, 0.75 / 17), rtol=1e-6, atol=0)


# ---------------------------------------------------------------- fused kernels, other libraries


def test_fused_timm_attention_equals_the_eager_path():
    fused = timm_vit()
    eager = copy.deepcopy(fused)
    for blk in eager.module.blocks:
        blk.attn.fused_attn = False
    x, t = images(), torch.tensor([0, 1, 2])
    for name in METHODS:
        torch.testing.assert_close(explain(fused, name, x, t), explain(eager, name, x, t),
                                   rtol=0, atol=0)
    assert all(b.attn.fused_attn for b in fused.module.blocks)
    assert not any(b.attn.fused_attn for b in eager.module.blocks)


def test_transformers_vit_equals_its_own_attentions_output():
    # transformers' own output_attentions (eager) is the oracle for the probabilities
    sdpa = transformers_vit()
    hf = sdpa.module.model if hasattr(sdpa.module, "model") else next(sdpa.module.children())
    x, t = images(), torch.tensor([0, 1, 2])
    rollout, chefer = explain(sdpa, "attention_rollout", x, t), explain(sdpa, "chefer", x, t)
    assert hf.config._attn_implementation == "sdpa"  # switched back
    hf.config._attn_implementation = "eager"
    for i in range(len(x)):
        with torch.enable_grad():
            out = hf(pixel_values=x[i : i + 1], output_attentions=True)
            grads = torch.autograd.grad(out.logits[0, t[i]], out.attentions)
        probs = [a[0].detach() for a in out.attentions]
        torch.testing.assert_close(rollout[i], readout_map(rollout_by_hand(probs), [0], 1),
                                   rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(
            chefer[i], readout_map(chefer_by_hand(probs, [g[0] for g in grads]), [0], 1),
            rtol=1e-5, atol=1e-7)
    hf.config._attn_implementation = "sdpa"


def test_torchvision_vit_rollout_equals_attention_computed_by_hand():
    from torchvision.models import VisionTransformer

    torch.manual_seed(0)
    tv = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16,
                           mlp_dim=32, num_classes=3).eval()
    clf = xaudit.Classifier.from_module(tv, ["a", "b", "c"], image_size=32)
    x, t = images(), torch.tensor([0, 1, 2])
    inputs = []
    hooks = [layer.ln_1.register_forward_hook(lambda _m, _a, out: inputs.append(out))
             for layer in tv.encoder.layers]
    with torch.no_grad():
        tv(x)
    for h in hooks:
        h.remove()
    probs = []
    for layer, h in zip(tv.encoder.layers, inputs, strict=True):
        mha = layer.self_attention
        q, k, _ = F.linear(h, mha.in_proj_weight, mha.in_proj_bias).chunk(3, dim=-1)
        q, k = (z.reshape(*z.shape[:2], mha.num_heads, -1).transpose(1, 2) for z in (q, k))
        probs.append((q @ k.transpose(-2, -1) / mha.head_dim**0.5).softmax(-1))
    got = explain(clf, "attention_rollout", x, t)
    for i in range(len(x)):
        expected = readout_map(rollout_by_hand([p[i] for p in probs]), [0], 1)
        torch.testing.assert_close(got[i], expected, rtol=1e-5, atol=1e-6)
    assert all("forward" not in vars(layer.self_attention) for layer in tv.encoder.layers)


@pytest.mark.parametrize("make", ["timm", "torchvision", "transformers"])
def test_capturing_the_attention_leaves_the_logits_unchanged(make):
    from xaudit.explain.attention import AttentionCapture, attention_reading

    clf = {"timm": timm_vit, "torchvision": torchvision_vit, "transformers": transformers_vit}[make]()
    x = images()
    with torch.no_grad():
        plain = clf.module(x)
        with AttentionCapture(attention_reading(clf.module, "test")[0]) as cap:
            captured = clf.module(x)
        assert all(p is not None and p.shape[-1] == 17 for p in cap.probs)
        torch.testing.assert_close(captured, plain, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- every family: the contract


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("name", METHODS)
def test_maps_are_finite_informative_and_batch_free(model, name):
    clf = MODELS[model]()
    modes = [m.training for m in clf.module.modules()]
    x, t = images(), torch.tensor([0, 2, 1])
    batched = explain(clf, name, x, t)
    assert batched.shape == (3, 1, 32, 32) and torch.isfinite(batched).all()
    assert (batched.flatten(1).std(1) > 0).all()  # not a constant map
    singles = torch.cat([explain(clf, name, x[i : i + 1], t[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, singles, rtol=1e-4, atol=1e-6)
    assert [m.training for m in clf.module.modules()] == modes
    assert all(p.grad is None for p in clf.module.parameters())


def test_chefer_depends_on_the_target_and_rollout_does_not():
    clf, x = timm_vit(), images(1)
    maps = {c: {n: explain(clf, n, x, torch.tensor([c])) for n in METHODS} for c in (0, 1)}
    assert torch.equal(maps[0]["attention_rollout"], maps[1]["attention_rollout"])
    assert not torch.allclose(maps[0]["chefer"], maps[1]["chefer"])


# ---------------------------------------------------------------- refusals, with their reasons


@pytest.mark.parametrize("name", METHODS)
def test_a_cnn_is_refused_with_the_reason(name):
    clf = xaudit.Classifier.from_torchvision("resnet18", weights="none", num_classes=2)
    with pytest.raises(MethodRefused, match=rf"{name} cannot explain ResNet \(family resnet\)"):
        explain(clf, name, torch.randn(1, 3, 32, 32), torch.tensor([0]))


@pytest.mark.parametrize("name", METHODS)
def test_swin_is_refused_with_the_reason(name):
    torch.manual_seed(0)
    clf = xaudit.Classifier.from_timm(
        "swin_tiny_patch4_window7_224", pretrained=False, classes=["a", "b"],
        model_args={"img_size": 32, "window_size": 2, "depths": (1, 1, 1, 1), "embed_dim": 12,
                    "num_heads": (1, 1, 1, 1)})
    with pytest.raises(MethodRefused, match="shifted windows"):
        explain(clf, name, torch.randn(1, 3, 32, 32), torch.tensor([0]))


def test_a_pooling_without_a_token_reading_is_refused():
    clf = timm_vit(global_pool="max")
    with pytest.raises(MethodRefused, match="global_pool='max'"):
        explain(clf, "chefer", images(1), torch.tensor([0]))


def test_head_fusion_is_checked_and_labelled():
    with pytest.raises(xaudit.errors.ConfigError, match="head_fusion must be one of mean, max, min"):
        build_explainer({"name": "attention_rollout", "head_fusion": "median"})
    assert build_explainer({"name": "attention_rollout", "head_fusion": "max"}).label == \
        "attention_rollout_max"


@pytest.mark.parametrize("arch", ["vit_small_patch16_224", "deit_small_distilled_patch16_224"])
def test_full_depth_vit_small_and_deit_at_64_px(arch):
    # the shipped architectures (12 blocks, 6 heads, 16 px patches), random weights, 64 px input
    torch.manual_seed(0)
    clf = xaudit.Classifier.from_timm(arch, pretrained=False, classes=["a", "b", "c"],
                                      model_args={"img_size": 64})
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    for name in METHODS:
        maps = explain(clf, name, x, torch.tensor([0, 2]))
        assert maps.shape == (2, 1, 64, 64) and torch.isfinite(maps).all()
        assert (maps.flatten(1).std(1) > 0).all(), name
