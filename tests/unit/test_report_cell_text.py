"""A grid cell in words: the control or the threshold's origin named, no formula, no nan."""

from __future__ import annotations

from xaudit.audit.cell_text import cell_words

RULE = ("Spearman(|map|) after re-initialising down to classifier minus half-way between the "
        "image's random-pair level (mean {}) and 1: no more than 0, paired per image")


def test_a_control_check_names_the_control_in_words():
    e = {"metric": "relevance_mass", "status": "fail", "check": "controls",
         "against": "control: edge", "effect": -0.0556, "effect_ci": [-0.115, 0.00393]}
    assert cell_words(e) == ("share of relevance on the lesion: no better than the edge detector "
                             "(difference -0.0556 [-0.115, 0.00393])")
    e.update(status="inconclusive", images_to_decide=17)
    assert cell_words(e).endswith("; about 17 images would decide")


def test_a_threshold_says_where_it_comes_from_and_never_nan():
    e = {"metric": "cascade_head_spearman_abs", "status": "pass", "check": "noninferior",
         "against": "threshold", "effect": 0.21, "effect_ci": [0.15, 0.28], "threshold": 0.0,
         "higher_is_better": False, "rule": RULE.format("0.61")}
    assert "half-way between the random-pair level (0.61) and 1, as it must be" in cell_words(e)
    for level, shown in (("nan", "undefined"), ("-0.00", "0.00")):
        text = cell_words({**e, "rule": RULE.format(level)})
        assert f"random-pair level ({shown})" in text and "nan" not in text


def test_a_not_informative_cell_gives_the_audits_reason():
    e = {"metric": "cascade_final_spearman_abs", "status": "not informative",
         "note": "maps of different images already agree at 0.63: the map hardly depends on the image"}
    assert cell_words(e) == "cannot decide here: " + e["note"]
    assert "undefined" in cell_words({**e, "note": "a value of nan"})


def test_the_contents_bar_counts_methods_and_controls_apart_with_every_status(tmp_path):
    from xaudit.report.answer import answer
    from xaudit.run import RunDir

    def entry(method, audit, status, metric="m"):
        return {"method": method, "audit": audit, "metric": metric, "status": status,
                "score": 0.5, "ci": [0.4, 0.6], "n": 6}

    cells = [entry("ig", "faithfulness", "fail"), entry("ig", "localization", "pass"),
             entry("ig", "complexity", ""), entry("sal", "faithfulness", "inconclusive"),
             entry("sal", "localization", "not tested"), entry("sal", "complexity", ""),
             entry("control: edge", "faithfulness", "fail"),
             entry("control: edge", "localization", "pass"),
             entry("control: edge", "complexity", "not informative")]
    summary = {"explanations": {"ig": {}, "sal": {}}, "test": {},
               "audits": {"scorecard": cells, "controls": ["control: edge"]}}
    badges = answer(RunDir(tmp_path), summary)["badges"]
    assert {k: v for k, v in badges["methods"].items() if v} == {
        "pass": 1, "fail": 1, "inconclusive": 1, "not tested": 1, "no rule": 2}
    assert {k: v for k, v in badges["controls"].items() if v} == {
        "pass": 1, "fail": 1, "not informative": 1}
