"""Sequential auditing on a check whose per-image values are known: a method shown worse than
the controls leaves after round 1, one close to them stays until decided, the levels of the
looks sum to alpha, and a run continued with more rounds reloads the rounds already done."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from tests.helpers.audit_toys import FunctionExplainer, TinyNet, audit_input, images_for
from xaudit.audit import AuditResult, Cell, run_audits, sequential
from xaudit.audit.helpers import round_robin, stratified
from xaudit.audit.rounds import look_level, round_chunks
from xaudit.run import RunDir

SHIFT = {"worse": -1.0, "close": 0.02}  # a method's advantage over the controls


def _noise(image_id: str, label: str) -> float:
    digest = hashlib.sha256(f"{image_id}/{label}".encode()).digest()
    return int.from_bytes(digest[:4], "little") / 2**32 - 0.5


def _known_check(inp, figures_dir, n_images=None, **params):
    """Deletion AUCs (lower is better) made of an image term, the method's shift and small
    per-map noise: every value is known from the image id and the label alone."""
    images = stratified(inp.splits["test"], n_images)
    cells = []
    for e in inp.explainers:
        values = np.array([5 * _noise(i, "image") - SHIFT.get(e.label, 0.0) + 0.2 * _noise(i, e.label)
                           for i in images.ids])
        cells.append(Cell(e.label, "faithfulness", "deletion_auc", values, False, None, "known",
                          check="controls", ids=list(images.ids)))
        # a randomization check every map passes: trust then hinges on the paired check alone
        cells.append(Cell(e.label, "model_randomization", "excess", np.full(len(images), -0.5),
                          False, None, "known", threshold=0.0, check="noninferior",
                          ids=list(images.ids), min_difference=0.1))
    return AuditResult("faithfulness", "known", "", [{"n": len(images)}], cells, [], {}, 0.0, 0)


class _Registry:
    def get(self, name):
        return _known_check


def _input(n=96):
    torch.manual_seed(0)
    model = TinyNet()
    images = images_for(model, n=n, size=16)
    methods = [FunctionExplainer(lambda x, t: x.mean(1), label) for label in SHIFT]
    return audit_input(model, methods, images)


def test_round_robin_takes_one_per_class_in_turn_in_the_given_order():
    # classes in sorted order (a, b, c), each class's items as given: known by hand
    assert round_robin(["b", "a", "b", "a", "c", "a"], 5) == [1, 0, 4, 3, 2]
    assert round_robin([2, 2, 1], 10) == [2, 0, 1] and round_robin([], 3) == []
    assert round_robin([0, 1], 0) == []


def test_chunks_are_disjoint_class_balanced_and_the_first_is_a_single_rounds_sample():
    inp = _input(20)
    test = inp.splits["test"]
    chunks = round_chunks(test, 6, 5)
    ids = [i for c in chunks for i in c.ids]
    assert len(ids) == len(set(ids)) == 20 and [len(c) for c in chunks] == [6, 6, 6, 2]
    assert chunks[0].ids == stratified(test, 6).ids
    pools = [test.ids[10:], test.ids[:10]]
    assert set(round_chunks(test, 6, 3, pools)[0].ids) <= set(pools[0])
    assert sum(look_level(0.05, k) for k in range(1, 10_000)) < 0.05
    assert look_level(0.05, 1) == pytest.approx(0.025)


def test_a_decided_method_leaves_and_the_open_one_gets_more_images(tmp_path, monkeypatch):
    monkeypatch.setattr(sequential, "AUDITS", _Registry())
    summary = run_audits(_input(), [{"name": "faithfulness"}], RunDir(tmp_path / "a").create(),
                         n_images=12, rounds=8)
    cells = {(c["method"]): c for c in summary["scorecard"] if c["metric"] == "deletion_auc"}
    decided = summary["rules"]["decided_at_look"]
    assert decided["worse"] == 1 and cells["worse"]["n"] == 12 and cells["worse"]["status"] == "fail"
    # a hair better than the controls: shown below the smallest difference that matters only
    # on more images, audited round after round while the decided one stays at round 1's
    assert decided["close"] > 1 and cells["close"]["n"] == 12 * decided["close"]
    assert cells["close"]["status"] == "fail"
    looks = summary["rounds"]["looks"]
    assert len(looks) == decided["close"]  # nothing left open: no further round
    assert [look["level"] for look in looks] == pytest.approx(
        [look_level(0.05, k) for k in range(1, len(looks) + 1)])
    assert summary["states"]["worse"] == summary["states"]["close"] == "do not trust"


def test_an_open_verdict_says_what_would_decide_it_and_a_continued_run_reloads(tmp_path, monkeypatch):
    monkeypatch.setattr(sequential, "AUDITS", _Registry())
    run = RunDir(tmp_path / "b").create()
    one = run_audits(_input(), [{"name": "faithfulness"}], run, n_images=12, rounds=1,
                     state="key", continue_hint=lambda k: f"continue --rounds {k}")
    assert one["states"]["close"] == "undecided"
    entry = one["undecided"]["close"]
    assert entry["images_to_decide"] > 12 and entry["command"].startswith("continue --rounds ")
    assert entry["command"] in one["verdict_lines"]["close"]
    lines: list[str] = []
    more = run_audits(_input(), [{"name": "faithfulness"}], run, n_images=12, rounds=8,
                      state="key", log=lines.append)
    assert any("already done, kept" in line for line in lines)  # round 1 reloaded
    fresh = run_audits(_input(), [{"name": "faithfulness"}], RunDir(tmp_path / "c").create(),
                       n_images=12, rounds=8)
    assert more["states"] == fresh["states"] and more["rules"] == fresh["rules"]
