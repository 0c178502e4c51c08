"""RISE, LIME, KernelSHAP, feature ablation, LRP, deconvolution and DeepLiftShap through the
explain engine and through the audits, on a tiny model."""

from __future__ import annotations

import json

import pytest
import torch

from tests.helpers.audit_toys import TinyNet, audit_input, images_for, plain_ctx
from xaudit.audit import run_audits
from xaudit.data.base import Record
from xaudit.explain import build_explainer
from xaudit.explain.engine import MapStore, explain_records
from xaudit.explain.fastpath import FastPath
from xaudit.run import RunDir

SPECS = {
    "rise": {"name": "rise", "n_masks": 48},
    # a tiny alpha: the Lasso's default (0.01) zeroes every coefficient of this near-constant
    # random network, and all-zero maps carry nothing for the audits to score
    "lime": {"name": "lime", "n_samples": 24, "n_segments": 8, "alpha": 1e-4},
    "kernel_shap": {"name": "kernel_shap", "n_samples": 24, "n_segments": 8},
    "feature_ablation": {"name": "feature_ablation", "n_segments": 8},
    "lrp": {"name": "lrp"},
    "deconvolution": {"name": "deconvolution"},
    "deeplift_shap": {"name": "deeplift_shap", "baselines": ["black", "blur"]},
}
# model evaluations per image the method must cost (None: depends on the superpixels)
EVALS = {"rise": 48, "lime": 24, "kernel_shap": 24}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_engine_stores_the_direct_maps(tmp_path, name):
    torch.manual_seed(0)
    model = TinyNet(n_classes=3).eval()
    x = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    records = [Record(id=f"r{i}", label=0, image=None) for i in range(5)]
    pos = {r.id: i for i, r in enumerate(records)}
    targets = [i % 3 for i in range(5)]
    explainer = build_explainer(SPECS[name])
    store = MapStore(tmp_path, explainer.label)
    given = explainer.params()
    seen: list[dict] = []  # the explainer's parameters while the engine runs it
    hook = model.register_forward_hook(lambda *_: seen.append(explainer.params()))
    # a small memory budget: the engine must split the samples into several passes
    try:
        stats = explain_records(model, explainer, records, targets,
                                lambda rs: x[[pos[r.id] for r in rs]],
                                plain_ctx(torch.Generator().manual_seed(0)), store, 2, 3,
                                torch.device("cpu"), fast=FastPath(memory_budget_mb=1))
    finally:
        hook.remove()
    direct = build_explainer(SPECS[name]).attribute(model, x, torch.tensor(targets),
                                                    plain_ctx(torch.Generator().manual_seed(0)))
    torch.testing.assert_close(store.load()["maps"], direct.sum(1), atol=1e-5, rtol=1e-4)
    assert stats["n_new"] == 5
    if name in EVALS:
        assert stats["model_evals"] == 5 * EVALS[name]
    # the pass size reached the method as an argument: its parameters never changed
    assert seen and all(p == given for p in seen)


def audit_all(tmp_path, specs: list[dict], n_images: int) -> tuple[dict, set[str]]:
    torch.manual_seed(0)
    model = TinyNet()
    images = images_for(model, n=4, size=16)
    explainers = [build_explainer(spec) for spec in SPECS.values()]
    summary = run_audits(audit_input(model, explainers, images), specs,
                         RunDir(tmp_path / "run").create(), n_images=n_images)
    json.dumps(summary, allow_nan=False)
    return summary, {e.label for e in explainers}


def test_every_new_method_goes_through_the_audits(tmp_path):
    specs = [{"name": "model_randomization", "max_steps": 2, "independent": False},
             {"name": "localization"}, {"name": "correctness"}]
    summary, labels = audit_all(tmp_path, specs, n_images=4)
    for label in labels:
        assert summary["localization"][label]["score"] is not None, label
        pair = summary["model_randomization"][label]["random_pair"]
        assert pair["spearman_abs"] is not None, label
    assert set(summary["correctness"]["methods"]) >= labels


@pytest.mark.slow  # faithfulness over seven methods: about a minute on two cores
def test_every_new_method_gets_a_faithfulness_score(tmp_path):
    specs = [{"name": "faithfulness", "steps": 4, "road_percentages": [0.5],
              "infidelity_samples": 2, "sensitivity_samples": 0}]
    summary, labels = audit_all(tmp_path, specs, n_images=2)
    for label in labels:
        assert summary["faithfulness"][label]["score"] is not None, label


def test_vision_transformer_mask_methods_run_and_rule_methods_refuse():
    from torchvision.models import VisionTransformer

    from xaudit.errors import XauditError

    torch.manual_seed(0)
    vit = VisionTransformer(image_size=16, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16,
                            mlp_dim=16, num_classes=3).eval()
    torch.nn.init.normal_(vit.heads.head.weight)  # torchvision starts the head at zero
    x, t = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 2])
    ctx = plain_ctx(torch.Generator().manual_seed(0))
    for name in ("rise", "lime", "kernel_shap", "feature_ablation"):
        both = build_explainer(SPECS[name]).attribute(vit, x, t, ctx)
        one = build_explainer(SPECS[name]).attribute(vit, x[1:], t[1:], ctx)
        assert torch.isfinite(both).all() and both.abs().sum() > 0, name
        torch.testing.assert_close(both[1:], one, atol=1e-5, rtol=1e-4)
    for name, word in (("lrp", "GELU"), ("deeplift_shap", "MultiheadAttention"), ("deconvolution", "GELU")):
        with pytest.raises(XauditError, match=word):
            build_explainer(SPECS[name]).attribute(vit, x, t, ctx)
