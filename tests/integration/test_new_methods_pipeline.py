"""Through the pipeline: expected_gradients draws its baselines from the run's train split in
the explain and audit stages; the attention methods (AttnLRP too) refuse the demo's CNN with the reason."""

from __future__ import annotations

import json
from pathlib import Path

from tests.standins import tiny_demo
from xaudit.pipeline import Pipeline
from xaudit.recipe import load_recipe

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_expected_gradients_uses_the_train_split_and_attention_methods_refuse_a_cnn(tmp_path):
    recipe = load_recipe(CONFIGS / "demo.yaml", [
        "name=new-methods", f"output_dir={tmp_path}",
        *tiny_demo(2, "explain.select.per_class=1", "audit.audits=[{name: complexity}, {name: model_randomization, max_steps: 1}]",
                   "audit.n_images=2", "audit.controls=false"),
        "explain.methods=[{name: expected_gradients, n_samples: 3}, {name: attention_rollout}, "
        "{name: chefer}, {name: attn_lrp}]"])
    Pipeline(recipe).run_stages()
    summary = json.loads((recipe.run_dir / "summary.json").read_text(encoding="utf-8"))
    eg = summary["explanations"]["expected_gradients"]
    assert eg["maps_all_zero"] == 0 and eg["maps_non_finite"] == 0 and "mean_abs_delta" in eg
    refused = summary["explanations_refused"]
    assert set(refused) == {"attention_rollout", "chefer", "attn_lrp"}
    assert "no global self-attention" in refused["chefer"]
    assert "no self-attention module" in refused["attn_lrp"]
    cells = {(c["method"], c["audit"], c["status"]) for c in summary["audits"]["scorecard"]}
    # model randomization recomputes its maps on randomized models: the audit stage has them too
    assert {(m, a) for m, a, s in cells if s != "not tested"} >= {
        ("expected_gradients", "complexity"), ("expected_gradients", "model_randomization")}, cells
    assert ("chefer", "not tested") in {(m, s) for m, _, s in cells}


def test_the_mean_baseline_is_the_train_splits_mean_colour(tmp_path, monkeypatch):
    import torch

    from xaudit.stages import explain as explain_stage
    from xaudit.stages.references import train_mean_colour

    seen = []
    real = explain_stage.context_for

    def spy(*args, **kwargs):
        seen.append(kwargs.get("dataset_mean"))
        return real(*args, **kwargs)

    monkeypatch.setattr(explain_stage, "context_for", spy)
    recipe = load_recipe(CONFIGS / "demo.yaml", [
        "name=mean-colour", f"output_dir={tmp_path}", *tiny_demo(1, "explain.select.per_class=1"),
        "audit.enabled=false", "explain.methods=[{name: integrated_gradients, n_steps: 4, baseline: mean}]"])
    pipeline = Pipeline(recipe)
    pipeline.run_stages()
    train, store = pipeline.dataset().splits["train"], pipeline.store()
    expected = train_mean_colour(train, store, recipe.seed)
    # the leaves' mean colour: greener than the ImageNet normalisation mean it replaces
    assert seen and torch.equal(seen[0], expected) and expected.shape == (3,)
    assert not torch.allclose(expected, torch.tensor([0.485, 0.456, 0.406]), atol=0.02)
    # by hand: the draw's images, averaged
    by_hand = torch.stack([store.get(rec).image for rec in train]).float().mean(dim=(0, 2, 3)) / 255
    torch.testing.assert_close(expected, by_hand)  # the tiny split is smaller than the draw
