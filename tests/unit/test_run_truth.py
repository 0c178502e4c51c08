"""Known truth on a run's stored maps: exact answers on a hand-built model whose drops are
known, the interval and the comparison with the best control."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from xaudit.data import load_dataset
from xaudit.data.leaf_edit import lesion_components
from xaudit.data.leaf_render import render_leaf
from xaudit.data.synthetic import leaf_drawing
from xaudit.explain.engine import MapStore
from xaudit.recipe import load_recipe
from xaudit.stages.truth import skip_reason
from xaudit.truth.fit import MEAN, STD, as_classifier
from xaudit.truth.run_truth import TABLE_COLUMNS, beats, known_truth, mean_interval, table_rows

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SIZE = 64


class WeighedChangedPixels(nn.Module):
    """Every class's score = Σ column × [pixel differs from the leaf's healthy twin]: removing
    a lesion drops it by the columns of that lesion's drawn pixels, which is not its area."""

    def __init__(self, healthy: torch.Tensor, n_classes: int):
        super().__init__()
        self.healthy = healthy  # K×3×H×W uint8: one healthy twin per leaf
        self.weight = torch.arange(1, SIZE + 1, dtype=torch.float64).view(1, 1, SIZE)
        self.n_classes = n_classes
        self.head = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
        pixels = ((x * std + mean) * 255).round()
        changed = (pixels.unsqueeze(1) != self.healthy.unsqueeze(0).double()).any(2)  # N×K×H×W
        score = (changed * self.weight).sum((2, 3)).amin(1)  # its own twin differs least
        return self.head(score.float().unsqueeze(1).repeat(1, self.n_classes))


@pytest.fixture(scope="module")
def leaves():
    recipe = load_recipe(CONFIGS / "demo.yaml", [f"data.synthetic.image_size={SIZE}",
                                                 "data.synthetic.n_test=3"])
    bundle = load_dataset(recipe.data, recipe.seed)
    records = bundle.splits["test"]
    drawings = [leaf_drawing(r) for r in records]
    healthy = [render_leaf(d["seed"], 0, SIZE).image for d in drawings]
    net = WeighedChangedPixels(torch.from_numpy(np.stack(healthy)).permute(0, 3, 1, 2),
                               len(bundle.classes))
    return records, drawings, healthy, as_classifier(net, bundle.classes, SIZE, cam_layer="head")


def _expected(drawing: dict, healthy: np.ndarray, max_lesions: int = 8):
    """Each of the largest lesions' drop on the model above, and its area."""
    leaf = render_leaf(**drawing)
    regions, n = lesion_components(leaf.lesion_mask)
    areas = np.bincount(regions.ravel(), minlength=n + 1)[1:]
    keep = np.argsort(-areas, kind="stable")[:max_lesions] + 1
    weighed = (leaf.image != healthy).any(-1) * np.arange(1, SIZE + 1)[None, :]
    return np.array([weighed[regions == k].sum() for k in keep]), areas[keep - 1], weighed


def test_truth_scores_on_a_model_whose_drops_are_known(leaves, tmp_path):
    records, drawings, healthy, clf = leaves
    expected = [_expected(d, h) for d, h in zip(drawings, healthy, strict=True)]
    # A map whose mass in each lesion is exactly its drop, and one that is the drop's mirror
    # image in the columns (its lesion ranking is not the truth's).
    exact = torch.from_numpy(np.stack([w for _, _, w in expected])).float()
    mirrored = exact.flip(-1)
    ids, targets = [r.id for r in records], torch.zeros(len(records), dtype=torch.long)
    for label, maps in (("exact", exact), ("mirrored", mirrored)):
        MapStore(tmp_path, label).write_chunk(ids, maps, targets, None)

    truth = known_truth(clf, records, tmp_path, ["exact", "mirrored"], seed=0)

    scored = [i for i, (d, (drops, _, _)) in enumerate(zip(drawings, expected, strict=True))
              if d["label"] != 0 and len(drops) >= 3]
    assert truth["image_ids"] == [ids[i] for i in scored] and len(scored) >= 3
    assert truth["methods"]["exact"]["score"] == pytest.approx(1.0)
    assert truth["methods"]["exact"]["ci"] == pytest.approx([1.0, 1.0])
    # The constant control ranks lesions by area; by hand:
    by_area = [spearmanr(expected[i][1], expected[i][0])[0] for i in scored]
    constant = truth["controls"]["control: constant"]
    assert constant["score"] == pytest.approx(np.mean(by_area)) and constant["n"] == len(scored)
    assert constant["score"] < 1.0
    best = truth["best_control"]
    assert truth["best_control_score"] == max(c["score"] for c in truth["controls"].values())
    mirror = [spearmanr([mirrored[i][torch.from_numpy(m)].sum().item()
                         for m in _masks(drawings[i])], expected[i][0])[0] for i in scored]
    assert truth["methods"]["mirrored"]["score"] == pytest.approx(np.mean(mirror))
    for label in ("exact", "mirrored"):
        e = truth["methods"][label]
        assert e["beats_best_control"] == beats({"ci": e["diff_ci"]})
    # Noise summed over a lesion grows with its area too: on four leaves the exact map is
    # ahead of every control on average without the interval settling it.
    assert truth["methods"]["exact"]["minus_best_control"] > 0
    rows = table_rows(truth)
    assert list(rows[0]) == list(TABLE_COLUMNS)
    assert [r["method"] for r in rows] == ["exact", "mirrored", *truth["controls"]]
    assert best in truth["controls"]


def _masks(drawing: dict, max_lesions: int = 8) -> list[np.ndarray]:
    regions, n = lesion_components(render_leaf(**drawing).lesion_mask)
    areas = np.bincount(regions.ravel(), minlength=n + 1)[1:]
    return [regions == k for k in np.argsort(-areas, kind="stable")[:max_lesions] + 1]


def test_the_truth_leaves_the_model_in_its_mode_and_skips_leaves_without_lesions(leaves, tmp_path):
    records, _, _, clf = leaves
    healthy = [r for r in records if "healthy" in r.id]
    MapStore(tmp_path, "m").write_chunk([r.id for r in healthy], torch.zeros(len(healthy), SIZE, SIZE),
                                        torch.zeros(len(healthy), dtype=torch.long), None)
    clf.module.train()
    assert "at least 3 lesions" in known_truth(clf, healthy, tmp_path, ["m"], seed=0)["skipped"]
    assert clf.module.training
    clf.module.eval()


class Flat(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Linear(1, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.ones(len(x), 1))


def test_a_model_whose_score_no_lesion_moves_has_nothing_to_rank(leaves, tmp_path):
    records, _, _, clf = leaves
    flat = as_classifier(Flat(), clf.classes, SIZE, cam_layer="head")
    ids = [r.id for r in records]
    MapStore(tmp_path, "m").write_chunk(ids, torch.rand(len(ids), SIZE, SIZE),
                                        torch.zeros(len(ids), dtype=torch.long), None)
    truth = known_truth(flat, records, tmp_path, ["m"], seed=0)
    assert truth["skipped"].startswith("no leaf has lesions to rank")


def test_interval_and_comparison_known_answers():
    assert mean_interval([]) == {"score": None, "ci": [None, None], "n": 0}
    assert mean_interval([0.5]) == {"score": 0.5, "ci": [None, None], "n": 1}
    # mean 0.5, sd 0.1 over 4: t(0.975, 3) = 3.182446
    got = mean_interval([0.4, 0.5, 0.6, 0.5])
    half = 3.182446305284263 * np.std([0.4, 0.5, 0.6, 0.5], ddof=1) / 2
    assert got["ci"] == pytest.approx([0.5 - half, 0.5 + half]) and got["n"] == 4
    assert mean_interval([0.9, 1.0, 0.2])["ci"][1] == 1.0  # a correlation's interval stays in range
    assert beats({"ci": [0.1, 0.3]}) == "yes"
    assert beats({"ci": [-0.3, 0.0]}) == "no"
    assert beats({"ci": [-0.1, 0.2]}) == "undecided"
    assert beats({"ci": [None, None]}) == "undecided"


def test_only_synthetic_runs_with_lesion_classes_are_scored():
    assert skip_reason("synthetic", ["healthy", "bean_rust"]) is None
    assert "not synthetic" in skip_reason("folder", ["healthy", "bean_rust"])
    assert "no class with lesions" in skip_reason("synthetic", ["healthy"])
