"""Faithfulness: deletion/insertion orderings on a linear model, ROAD imputation, infidelity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers.audit_toys import (
    FunctionExplainer,
    GradientExplainer,
    LinearNet,
    TinyNet,
    audit_input,
    images_for,
    plain_ctx,
)
from xaudit.audit.faithfulness import (
    EDGE,
    RANDOM,
    auc,
    faithfulness,
    infidelity_scores,
    linear_impute,
    noisy_linear_impute,
    relevance_ranks,
    reveal_curve,
    sobel_map,
)
from xaudit.errors import ConfigError

SIZE = 12


@pytest.fixture
def linear():
    g = torch.Generator().manual_seed(0)
    weight = torch.stack([torch.rand(3, SIZE, SIZE, generator=g), -torch.rand(3, SIZE, SIZE, generator=g)])
    model = LinearNet(SIZE, weight).eval()
    x = torch.rand(3, 3, SIZE, SIZE, generator=g) + 0.2
    return model, weight, x


def deletion_auc(model, x, maps, targets, steps=20):
    fractions = np.linspace(0, 1, steps + 1)
    ranks = relevance_ranks(maps, torch.Generator().manual_seed(0))
    curves = reveal_curve(model, torch.zeros_like(x), x, ranks, targets, fractions, score="logit")
    return auc(curves, fractions)


def test_deletion_exact_ordering_beats_random_beats_reversed(linear):
    model, weight, x = linear
    targets = torch.zeros(len(x), dtype=torch.long)
    exact = (weight[0] * x).sum(1)  # exact attribution w ⊙ (x − 0), summed over channels
    rand = torch.rand(exact.shape, generator=torch.Generator().manual_seed(3))
    perfect = deletion_auc(model, x, exact, targets)
    random_ = deletion_auc(model, x, rand, targets)
    reversed_ = deletion_auc(model, x, -exact, targets)
    assert np.all(perfect < random_)
    assert np.all(random_ < reversed_)


def test_reveal_curve_ends_are_start_and_source(linear):
    model, _, x = linear
    targets = torch.zeros(len(x), dtype=torch.long)
    ranks = relevance_ranks(torch.rand(len(x), SIZE, SIZE), torch.Generator().manual_seed(0))
    curves = reveal_curve(model, torch.zeros_like(x), x, ranks, targets, np.array([0.0, 1.0]), score="logit")
    with torch.no_grad():
        full = model(x)[:, 0].numpy()
    assert curves[:, 0] == pytest.approx(full, rel=1e-5)
    assert curves[:, 1] == pytest.approx(np.zeros(len(x)), abs=1e-5)


def test_relevance_ranks_order_and_ties():
    maps = torch.tensor([[[3.0, 1.0], [2.0, 0.0]]])
    assert relevance_ranks(maps, torch.Generator()).tolist() == [[0, 2, 1, 3]]
    flat = torch.zeros(1, 4, 4)
    r1 = relevance_ranks(flat, torch.Generator().manual_seed(0))
    r2 = relevance_ranks(flat, torch.Generator().manual_seed(1))
    assert sorted(r1[0].tolist()) == list(range(16)) and not torch.equal(r1, r2)


def test_imputation_recovers_a_linear_ramp():
    """A plane is its own weighted neighbour mean (symmetric weights), so an interior hole is
    filled exactly."""
    ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    plane = torch.stack([xs / 15, ys / 15, 0.3 * xs / 15 + 0.5 * ys / 15]).unsqueeze(0)
    removed = torch.zeros(1, 16, 16, dtype=torch.bool)
    removed[0, 4:12, 5:11] = True
    removed[0, 2, 2] = True
    filled = noisy_linear_impute(plane, removed, torch.Generator(), noise=0.0)
    assert torch.allclose(filled, plane, atol=1e-6)
    noisy = noisy_linear_impute(plane, removed, torch.Generator().manual_seed(0), noise=0.05)
    assert torch.equal(noisy[:, :, ~removed[0]], plane[:, :, ~removed[0]])  # known pixels kept
    assert 0.02 < (noisy - filled)[:, :, removed[0]].std() < 0.08  # noise on the imputed ones


def test_imputed_pixel_is_the_weighted_mean_of_its_neighbours_at_the_border():
    """Out-of-image neighbours drop out and the remaining weights are renormalised."""
    img = np.arange(9, dtype=float).reshape(1, 3, 3)
    removed = np.zeros((3, 3), bool)
    removed[0, 0] = True  # corner: neighbours (0,1) 1/6, (1,0) 1/6, (1,1) 1/12
    expected = (img[0, 0, 1] / 6 + img[0, 1, 0] / 6 + img[0, 1, 1] / 12) / (1 / 6 + 1 / 6 + 1 / 12)
    assert linear_impute(img, removed)[0, 0, 0] == pytest.approx(expected, abs=1e-12)


def test_imputation_needs_a_known_pixel_and_the_audit_refuses_full_removal(tmp_path, linear):
    with pytest.raises(ValueError, match="every pixel"):
        linear_impute(np.zeros((3, 4, 4)), np.ones((4, 4), bool))
    model, _, _ = linear
    inp = audit_input(model, [GradientExplainer()], images_for(model, n=2, size=SIZE))
    with pytest.raises(ConfigError, match="road_percentages"):
        faithfulness(inp, tmp_path, road_percentages=[0.5, 1.0])
    with pytest.raises(ConfigError, match="steps"):
        faithfulness(inp, tmp_path, steps=0)


def test_sobel_finds_a_vertical_edge():
    pixels = torch.zeros(1, 3, 8, 8)
    pixels[..., 4:] = 1.0
    edges = sobel_map(pixels)[0]
    assert edges[:, 3:5].min() > 0 and edges[:, :2].abs().max() == 0


def test_infidelity_of_the_exact_gradient_on_a_linear_model_is_zero(linear):
    model, weight, x = linear
    targets = torch.zeros(len(x), dtype=torch.long)
    exact = weight[0].expand_as(x)  # gradient of the logit: perturbation · w = f(x) − f(x − I)
    scores = infidelity_scores(model, x, exact, targets, torch.Generator().manual_seed(0), 4, 0.1, 8)
    wrong = infidelity_scores(model, x, torch.rand_like(x), targets, torch.Generator().manual_seed(0), 4, 0.1, 8)
    assert scores == pytest.approx(np.zeros(len(x)), abs=1e-6)
    assert np.all(wrong > 1e-3)


def test_audit_compares_methods_with_references(tmp_path, linear):
    model, weight, x = linear
    images = images_for(model, n=4, size=SIZE)
    exact = FunctionExplainer(lambda xx, t: weight[t] * xx, label="exact")
    edges = FunctionExplainer(lambda xx, t: sobel_map(xx), label="edges_again")
    inp = audit_input(model, [exact, GradientExplainer(), edges], images)
    result = faithfulness(inp, tmp_path, steps=6, road_percentages=[0.5],
                          infidelity_samples=2, sensitivity_samples=1)
    methods = {c.method for c in result.cells}
    assert {"exact", "toy_gradient", "edges_again", RANDOM, EDGE} <= methods
    cell = next(c for c in result.cells if c.method == "exact" and c.metric == "deletion_auc")
    assert cell.values.shape == (4,) and cell.passed is True and not cell.higher_is_better
    assert cell.model_evals > 0
    # A method that is the edge detector does no better than the edge detector: flagged.
    assert "edges_again" in result.summary["flagged_no_better_than_edge"]
    assert len(result.rows) == 5 * 4
    assert all((tmp_path / f).is_file() for f in result.figures)
    assert result.model_evals > 0


@pytest.mark.parametrize("channels", [1, 3])
def test_max_sensitivity_of_a_constant_explainer_is_zero_and_of_the_input_is_its_noise(channels):
    """Known answers for Captum's max-sensitivity through our wrapper, for C = 1 and C = 3."""
    from xaudit.audit.faithfulness import _explain_fn

    x = torch.rand(2, 3, 8, 8) + 1.0
    targets = torch.zeros(2, dtype=torch.long)
    const = FunctionExplainer(lambda xx, t: torch.ones(len(xx), channels, 8, 8), "const")
    ident = FunctionExplainer(lambda xx, t: xx[:, :channels], "ident")
    model = TinyNet()
    zero = _run_sensitivity(_explain_fn(const, model, plain_ctx()), x, targets)
    assert zero == pytest.approx([0.0, 0.0])
    moved = _run_sensitivity(_explain_fn(ident, model, plain_ctx()), x, targets)
    # |noise| ≤ 0.02 per pixel, so the relative change is at most 0.02·√n / ‖x‖.
    bound = 0.02 * np.sqrt(channels * 64) / torch.linalg.norm(x[:, :channels].flatten(1), dim=1)
    assert np.all(moved > 0) and np.all(moved <= bound.numpy() + 1e-6)


def _run_sensitivity(fn, x, targets):
    from xaudit.audit.faithfulness import sensitivity_scores

    return sensitivity_scores(fn, x, targets, torch.Generator().manual_seed(0), 3, 0.02)


def test_max_sensitivity_reuses_the_stored_map_of_the_unperturbed_image():
    """Given the maps of x, only the perturbed copies are explained, with the same answer."""
    from xaudit.audit.faithfulness import _explain_fn, sensitivity_scores

    calls = []
    ident = FunctionExplainer(lambda xx, t: calls.append(len(xx)) or xx[:, :1], "ident")
    x = torch.rand(2, 3, 8, 8) + 1.0
    targets = torch.zeros(2, dtype=torch.long)
    fn = _explain_fn(ident, TinyNet(), plain_ctx())
    again = sensitivity_scores(fn, x, targets, torch.Generator().manual_seed(0), 3, 0.02)
    explained = sum(calls)
    calls.clear()
    reused = sensitivity_scores(fn, x, targets, torch.Generator().manual_seed(0), 3, 0.02, maps=x[:, :1])
    assert sum(calls) == explained - 2  # the two unperturbed images are not re-explained
    np.testing.assert_allclose(reused, again, rtol=1e-6)


def test_with_the_controls_on_they_are_the_references_and_no_map_is_scored_twice(tmp_path, linear):
    from xaudit.audit.controls import control_explainers
    from xaudit.audit.faithfulness import _cost_faithfulness
    from xaudit.audit.registry import audit_params

    model, weight, x = linear
    images = images_for(model, n=4, size=SIZE)
    exact = FunctionExplainer(lambda xx, t: weight[t] * xx, label="exact")
    controls = control_explainers()
    inp = audit_input(model, [exact, *controls], images)
    params = {"steps": 6, "road_percentages": [0.5], "infidelity_samples": 2, "sensitivity_samples": 0}
    result = faithfulness(inp, tmp_path, **params)
    assert result.summary["references"] == ["control: random", "control: edge"]
    assert {c.method for c in result.cells} == {"exact", *(c.label for c in controls)}
    assert len(result.rows) == 6 * 4
    # the controls are judged (and fail against themselves), never left as "reference: no rule"
    edge = next(c for c in result.cells if c.method == "control: edge" and c.metric == "deletion_auc")
    assert edge.passed is False
    # every cell names its images; the ruled ones, controls' too, are paired against the controls
    ruled = {"deletion_auc", "insertion_auc", "road_gap", "infidelity"}
    assert all(c.ids == images.ids for c in result.cells)
    assert all(c.check == ("controls" if c.metric in ruled else "") for c in result.cells)
    # the registered cost is what the audit spent
    per_map = {e.label: 0.0 for e in [exact, *controls]}
    want = _cost_faithfulness({**audit_params("faithfulness"), **params, "n": 4}, per_map, None)
    assert result.model_evals == want


# --------------------------------------------------------------------------- shared draws


def _twins(weight):
    """Two explainers with the same binary map (many ties, so tie breaks matter too)."""
    fn = lambda xx, t: (weight[t] * xx > 0.3).float()  # noqa: E731
    return FunctionExplainer(fn, label="twin_a"), FunctionExplainer(fn, label="twin_b")


def _values(result, method):
    return {c.metric: c.values for c in result.cells if c.method == method}


def test_two_equal_maps_score_alike_on_every_faithfulness_metric(tmp_path, linear):
    """Every map of an image sees the same tie breaks, imputation noise, infidelity noise and
    noisy copies: two equal maps get equal scores (with draws per map they differed)."""
    model, weight, _ = linear
    inp = audit_input(model, [*_twins(weight), GradientExplainer()], images_for(model, n=3, size=SIZE))
    result = faithfulness(inp, tmp_path, steps=8, road_percentages=[0.3, 0.6], infidelity_samples=3,
                          sensitivity_samples=2, score="logit")
    a, b = _values(result, "twin_a"), _values(result, "twin_b")
    assert set(a) == {"deletion_auc", "insertion_auc", "road_gap", "infidelity", "max_sensitivity"}
    for metric in a:
        assert np.isfinite(a[metric]).any(), metric  # NaN only where an image informs no curve
        np.testing.assert_array_equal(a[metric], b[metric], err_msg=metric)
    assert np.all(a["max_sensitivity"] > 0) and np.all(a["infidelity"] > 0)  # the noise is there


def test_two_equal_maps_score_alike_on_correlation_and_robustness(tmp_path, linear):
    from xaudit.audit.correlation import faithfulness_correlation_audit
    from xaudit.audit.robustness import robustness

    model, weight, _ = linear
    inp = audit_input(model, [*_twins(weight)], images_for(model, n=3, size=SIZE))
    corr = faithfulness_correlation_audit(inp, tmp_path, subset_size=20, n_runs=5, n_groups=4,
                                          monotonicity_samples=2)
    robust = robustness(inp, tmp_path, n_samples=2)
    for result in (corr, robust):
        a, b = _values(result, "twin_a"), _values(result, "twin_b")
        assert len(a) == 2
        for metric in a:
            np.testing.assert_array_equal(a[metric], b[metric], err_msg=metric)
        assert all(c.ids == ["img0", "img1", "img2"] for c in result.cells)
    assert {c.metric: c.check for c in corr.cells if c.method == "twin_a"} == {
        "faithfulness_correlation": "controls", "monotonicity_correlation": ""}


class _Recording(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model, self.seen = model, []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.model(x)


def test_infidelity_noise_is_each_images_own_seed_whatever_the_map_and_the_batch(linear):
    """Known answer: image i's perturbations are ``std`` · N(0, 1) drawn from its own seed, for
    any map and whichever images share its batch."""
    model, weight, x = linear
    targets = torch.zeros(len(x), dtype=torch.long)
    seeds = [11, 12, 13]
    seen = []
    for attributions in (weight[0].expand_as(x), torch.rand_like(x)):
        recording = _Recording(model)
        infidelity_scores(recording, x, attributions, targets, seeds, 2, 0.1, 8)
        seen.append(torch.cat(recording.seen))
    torch.testing.assert_close(seen[0], seen[1], rtol=0, atol=0)  # reused, not redrawn
    noise = torch.randn((2, *x.shape[1:]), generator=torch.Generator().manual_seed(12)) * 0.1
    want = x[1] - noise  # image 1's two perturbed copies
    assert all(any(torch.allclose(row, copy, atol=1e-6) for row in seen[0]) for copy in want)
    alone = _Recording(model)
    infidelity_scores(alone, x[1:2], weight[0].expand_as(x[1:2]), targets[1:2], seeds[1:2], 2, 0.1, 8)
    assert all(any(torch.allclose(row, copy, atol=1e-6) for row in torch.cat(alone.seen)) for copy in want)


# --------------------------------------------------------------------------- informative images


class BrightestPixelNet(torch.nn.Module):
    """Class 0 when some pixel is bright: logits (20 · (max pixel − 0.5), 0). A dim uniform
    image is class 1 and stays so when blacked out or blurred; a bright dot is lost to both."""

    def forward(self, x):
        top = x.amax(dim=(1, 2, 3))
        return torch.stack([20 * (top - 0.5), torch.zeros_like(top)], dim=1)


def test_an_image_whose_baseline_keeps_its_class_is_left_out_and_counted(tmp_path):
    from xaudit.audit.types import AuditImages

    pixels = torch.full((3, 3, SIZE, SIZE), 0.2)
    pixels[0, :, 3, 4] = 1.0  # two class-0 images: a bright dot each
    pixels[1, :, 8, 7] = 1.0  # image 2: dim, uniform, class 1
    targets = torch.tensor([0, 0, 1])
    images = AuditImages(x=pixels.clone(), pixels=pixels, labels=targets, preds=targets,
                         targets=targets, ids=["dot0", "dot1", "dim"])
    bright = FunctionExplainer(lambda xx, t: xx.mean(1, keepdim=True), label="bright")
    inp = audit_input(BrightestPixelNet(), [bright], images)
    result = faithfulness(inp, tmp_path, steps=8, road_percentages=[0.5], infidelity_samples=0,
                          sensitivity_samples=0)
    left = result.summary["uninformative_images"]
    assert (left["deletion"]["ids"], left["insertion"]["ids"]) == (["dim"], ["dim"])
    assert left["deletion"]["n"] == 1 and left["min_change"] == 0.05
    for cell in (c for c in result.cells if c.metric in ("deletion_auc", "insertion_auc")):
        assert np.isnan(cell.values[2]) and np.isfinite(cell.values[:2]).all(), cell.method
        assert cell.ids == ["dot0", "dot1", "dim"]
    assert result.summary["baseline_keeps_class"] == {"a": False, "b": True}
    assert "1 of 3 images not informative for deletion: the black baseline keeps the class" in result.text
    assert "keeps most of the class score of b " in result.text
    rows = {(r["method"], r["id"]): r for r in result.rows}
    assert rows[("bright", "dim")]["deletion_informative"] is False
    assert rows[("bright", "dot0")]["insertion_informative"] is True
    # the ruled metrics are paired against the controls; the references carry no rule
    checks = {(c.method, c.metric): c.check for c in result.cells}
    assert checks[("bright", "deletion_auc")] == checks[("bright", "infidelity")] == "controls"
    assert checks[("bright", "max_sensitivity")] == checks[(RANDOM, "deletion_auc")] == ""


def test_informative_images_and_baseline_per_class_known_answers():
    from xaudit.audit.informative import baseline_keeps_class, informative_images, min_change

    start, end = np.array([0.9, 0.9, 0.6, 0.5]), np.array([0.1, 0.88, 0.5, 0.5])
    assert informative_images(start, end, 0.05).tolist() == [True, False, True, False]
    assert min_change("prob", [start]) == 0.05
    assert min_change("logit", [np.array([-2.0, 1.0]), np.array([3.0])]) == pytest.approx(0.25)
    # Over all four images the baseline keeps 0.45 of 0.725 (over half); per class it keeps
    # y's score and loses x's.
    end = np.array([0.1, 0.7, 0.5, 0.5])
    assert baseline_keeps_class(start, end, np.array([0, 0, 1, 1]), ["x", "y"]) == {"x": False, "y": True}


def test_image_seeds_come_from_a_generator_or_are_given_one_per_image():
    from xaudit.audit.draws import image_generators, image_seeds

    drawn = image_seeds(torch.Generator().manual_seed(0), 3)
    assert drawn == image_seeds(torch.Generator().manual_seed(0), 3) and len(set(drawn)) == 3
    assert image_seeds([5, 6], 2) == [5, 6]
    assert torch.equal(torch.rand(2, generator=image_generators([5], 1)[0]),
                       torch.rand(2, generator=torch.Generator().manual_seed(5)))
    with pytest.raises(ValueError, match="one seed per image"):
        image_seeds([5, 6], 3)
