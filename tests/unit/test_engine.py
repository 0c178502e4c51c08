import pytest
import torch
from torch import nn

from xaudit.config import SelectConfig
from xaudit.data.base import Record
from xaudit.errors import XauditError
from xaudit.explain import ExplainContext, build_explainer
from xaudit.explain.engine import MapStore, explain_records, resolve_targets, select_ids


def rows():
    out = []
    for i in range(12):
        cls = ["a", "b"][i % 2]
        correct = i % 3 != 0
        out.append({"id": f"img{i:02d}", "true": cls, "pred": cls if correct else "x", "true_idx": i % 2,
                    "pred_idx": i % 2 if correct else 1 - i % 2, "correct": int(correct), "loss": float(i)})
    return out


def test_select_per_class_correct_and_incorrect():
    ids = select_ids(rows(), SelectConfig(per_class=1, correct="both"), seed=0)
    by_id = {r["id"]: r for r in rows()}
    picked = [by_id[i] for i in ids]
    for cls in "ab":
        assert sum(1 for r in picked if r["true"] == cls and r["correct"]) == 1
        assert sum(1 for r in picked if r["true"] == cls and not r["correct"]) == 1
    assert select_ids(rows(), SelectConfig(per_class=1, correct="both"), seed=0) == ids


def test_select_top_losses_ids_and_all():
    ids = select_ids(rows(), SelectConfig(per_class=0, top_losses=3, ids=["img00"]), seed=0)
    assert ids == ["img00", "img11", "img10", "img09"]
    assert len(select_ids(rows(), SelectConfig(all=True), seed=0)) == 12
    with pytest.raises(XauditError, match="not a test image id"):
        select_ids(rows(), SelectConfig(ids=["nope"]), seed=0)


def test_targets():
    r = rows()
    assert resolve_targets(r, "true", ["a", "b"]) == [x["true_idx"] for x in r]
    assert resolve_targets(r, "predicted", ["a", "b"]) == [x["pred_idx"] for x in r]
    assert resolve_targets(r, "b", ["a", "b"]) == [1] * 12
    with pytest.raises(XauditError, match="Allowed: predicted, true, or a class name"):
        resolve_targets(r, "c", ["a", "b"])


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(2, 3 * 4 * 4, generator=torch.Generator().manual_seed(0)))

    def forward(self, x):
        return x.flatten(1) @ self.w.T


def _setup(tmp_path, n=10):
    images = torch.randn(n, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    records = [Record(id=f"r{i}", label=0, image=images[i]) for i in range(n)]
    index = {r.id: i for i, r in enumerate(records)}
    ctx = ExplainContext(mean=torch.zeros(3), std=torch.ones(3), generator=torch.Generator().manual_seed(0))
    batch_fn = lambda recs: images[[index[r.id] for r in recs]]  # noqa: E731
    return images, records, ctx, batch_fn


def test_chunked_storage_matches_direct_computation_and_resumes(tmp_path):
    images, records, ctx, batch_fn = _setup(tmp_path)
    model = Linear().eval()
    explainer = build_explainer({"name": "input_x_gradient"})
    targets = [i % 2 for i in range(10)]
    store = MapStore(tmp_path, explainer.label)
    stats = explain_records(model, explainer, records, targets, batch_fn, ctx, store, 3, 4, torch.device("cpu"))
    index = store.index()
    assert [len(c["ids"]) for c in index["chunks"]] == [4, 4, 2]
    assert stats["model_evals"] == 10 and stats["n_new"] == 10
    # known answer: input × gradient of a linear model = x * w[target]
    w = model.w.detach().view(2, 3, 4, 4)
    expected = torch.stack([(images[i] * w[targets[i]]).sum(0) for i in range(10)])
    loaded = store.load([f"r{i}" for i in reversed(range(10))])
    assert loaded["ids"][0] == "r9"
    torch.testing.assert_close(loaded["maps"], expected.flip(0))
    # resume: nothing new is computed
    again = explain_records(model, explainer, records, targets, batch_fn, ctx, store, 3, 4, torch.device("cpu"))
    assert again["n_new"] == 0 and again["model_evals"] == 0


def test_interrupted_chunks_resume_to_identical_maps(tmp_path):
    images, records, ctx, batch_fn = _setup(tmp_path)
    model = Linear().eval()
    explainer = build_explainer({"name": "integrated_gradients", "n_steps": 4})
    targets = [0] * 10
    full = MapStore(tmp_path / "full", explainer.label)
    explain_records(model, explainer, records, targets, batch_fn, ctx, full, 2, 4, torch.device("cpu"))
    part = MapStore(tmp_path / "part", explainer.label)
    explain_records(model, explainer, records[:4], targets[:4], batch_fn, ctx, part, 2, 4, torch.device("cpu"))
    stats = explain_records(model, explainer, records, targets, batch_fn, ctx, part, 2, 4, torch.device("cpu"))
    assert stats["n_new"] == 6
    a, b = full.load(), part.load()
    assert a["ids"] == b["ids"]
    assert torch.equal(a["maps"], b["maps"]) and torch.equal(a["delta"], b["delta"])
