"""Model and label randomization: blocks per family, seeded re-init on a copy, known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn
from torchvision import models

from tests.helpers.audit_toys import GradientExplainer, TinyNet, audit_input, images_for
from xaudit.audit.excess import DELTA, pair_levels
from xaudit.audit.randomization import (
    find_blocks,
    label_randomization,
    model_randomization,
    pick_steps,
    randomized_copy,
)
from xaudit.explain import build_explainer


def trained(inp, label):
    """The trained maps an audit read, from the shared cache (N×H×W)."""
    return torch.stack([v.maps[0] for k, v in inp.cache.items()
                        if k[0] == "maps" and k[1] == label])


def test_blocks_of_resnet_from_the_logits_down():
    blocks = find_blocks(models.resnet18(weights=None))
    assert [b[0] for b in blocks] == ["fc", "layer4", "layer3", "layer2", "layer1", "conv1"]
    assert blocks[-1][1] == ["conv1", "bn1"]


def test_blocks_of_mobilenet_and_wrapped_models():
    net = models.mobilenet_v2(weights=None)
    blocks = find_blocks(net)
    assert blocks[0][0] == "classifier"
    assert [b[0] for b in blocks[1:3]] == ["features.18", "features.17"]
    assert blocks[-1][0] == "features.0"
    wrapped = nn.Sequential()
    wrapped.add_module("net", net)
    assert find_blocks(wrapped)[0] == ("net.classifier", ["net.classifier"])


def test_blocks_of_vgg_group_convs_between_poolings():
    blocks = find_blocks(models.vgg11(weights=None))
    assert blocks[0][0] == "classifier"
    groups = [b[1] for b in blocks[1:]]
    assert groups[-1] == ["features.0"] and groups[0] == ["features.16", "features.18"]
    assert len(groups) == 5


def test_generic_fallback_uses_parameterised_children_in_reverse():
    assert [b[0] for b in find_blocks(TinyNet())] == ["fc", "conv2", "conv1"]


def test_randomized_copy_is_seeded_and_leaves_the_model_alone():
    model = TinyNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    blocks = find_blocks(model)[:1]
    a = randomized_copy(model, blocks, [5])
    b = randomized_copy(model, blocks, [5])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(a.fc.weight, b.fc.weight)
    assert not torch.equal(a.fc.weight, model.fc.weight)
    assert torch.equal(a.conv1.weight, model.conv1.weight)  # only the named block changed


def test_pick_steps_keeps_first_and_full():
    assert pick_steps(3, 6) == [0, 1, 2]
    steps = pick_steps(20, 5)
    assert steps[0] == 0 and steps[-1] == 19 and len(steps) == 5


def test_full_cascade_falls_to_the_random_pair_line(tmp_path):
    torch.manual_seed(0)
    model = TinyNet()
    images = images_for(model, n=6, size=16)
    inp = audit_input(model, [build_explainer({"name": "integrated_gradients", "n_steps": 8})], images)
    result = model_randomization(inp, tmp_path, independent=True)
    cell = next(c for c in result.cells if c.metric == "cascade_final_spearman_abs")
    line = result.summary["integrated_gradients"]["random_pair"]["spearman_abs"]
    cascade = result.summary["integrated_gradients"]["cascade"]["spearman_abs"]
    # The cell holds the excess per image: the final similarity minus the image's level.
    assert (cell.check, cell.threshold, cell.higher_is_better) == ("noninferior", 0.0, False)
    assert cell.ids == images.ids
    assert np.nanmean(cell.values) == pytest.approx(cascade[-1] - line, abs=1e-9)
    assert np.nanmean(cell.values) < DELTA and cell.passed is True
    assert line < 0.8 and len(cascade) == 3  # a real yardstick, one point per block
    assert {r["mode"] for r in result.rows} == {"cascading", "independent", "random_pair"}
    assert (tmp_path / result.figures[0]).is_file()


def test_identity_explainer_fails_the_randomization_test(tmp_path):
    """A map that ignores the model (here: the image itself) cannot change: it must fail."""
    from tests.helpers.audit_toys import FunctionExplainer

    model = TinyNet()
    images = images_for(model, n=4, size=16)
    inp = audit_input(model, [FunctionExplainer(lambda x, t: x, label="image")], images)
    result = model_randomization(inp, tmp_path, independent=False)
    cell = next(c for c in result.cells if c.metric == "cascade_final_spearman_abs")
    # Unchanged (similarity 1): the excess is 1 minus the image's random-pair level.
    maps = trained(inp, "image").numpy()
    level = [np.mean([spearmanr(np.abs(maps[i]).ravel(), np.abs(maps[j]).ravel())[0]
                      for j in range(4) if j != i]) for i in range(4)]
    assert cell.values == pytest.approx(1.0 - np.array(level), abs=1e-9)
    assert cell.passed is False and cell.forced is None


def test_cam_layers_are_remapped_into_the_randomized_copy(tmp_path):
    model = TinyNet()
    images = images_for(model, n=4, size=16)
    inp = audit_input(model, [build_explainer("grad_cam")], images)
    inp.ctx.target_layer = model.conv2
    inp.ctx.layers = dict(model.named_modules())
    result = model_randomization(inp, tmp_path, independent=False)
    cascade = result.summary["grad_cam"]["cascade"]["spearman_abs"]
    assert not np.allclose(cascade, 1.0)  # hooks fired on the copies, not on the trained model


def test_label_randomization_uses_the_shuffled_model(tmp_path):
    model = TinyNet()
    images = images_for(model, n=4, size=16)
    seeds = []

    def retrain(seed: int) -> nn.Module:
        seeds.append(seed)
        torch.manual_seed(seed)
        return TinyNet()

    inp = audit_input(model, [GradientExplainer()], images, retrain_shuffled=retrain)
    result = label_randomization(inp, tmp_path)
    assert len(seeds) == 1
    cell = result.cells[0]
    assert cell.metric == "spearman_abs_vs_shuffled" and cell.values.shape == (4,)
    assert (cell.check, cell.threshold, cell.ids) == ("noninferior", 0.0, images.ids)
    same = audit_input(model, [GradientExplainer()], images, retrain_shuffled=lambda s: model)
    unchanged = label_randomization(same, tmp_path).cells[0]
    # The same model: similarity 1, so the excess is 1 minus the random-pair level.
    levels = pair_levels(trained(same, "toy_gradient"))
    assert unchanged.values == pytest.approx(1.0 - levels) and unchanged.passed is False
    skipped = label_randomization(audit_input(model, [GradientExplainer()], images), tmp_path)
    assert skipped.summary["skipped"] is True


def test_costly_methods_are_skipped_with_a_stated_reason(tmp_path):
    model = TinyNet()
    images = images_for(model, n=3, size=16)
    inp = audit_input(model, [GradientExplainer()], images)
    result = model_randomization(inp, tmp_path, max_method_evals=0)
    # Left out, and in the scorecard as "not tested": never counted in its favour.
    assert [(c.method, c.forced) for c in result.cells] == [("toy_gradient", "not tested")]
    assert "max_method_evals" in result.cells[0].note
    assert "max_method_evals" in result.summary["skipped_methods"]["toy_gradient"]
    assert "too costly" in result.text
