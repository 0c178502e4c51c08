"""The answer block's sentences are the same in the report and in the CLI's closing block,
and the controls' sentence says how many were rejected and how many are still undecided."""

from __future__ import annotations

from xaudit.cli_output import answer_lines
from xaudit.headline import controls_sentence, headline

CONTROLS = ["control: random", "control: edge", "control: centre"]


def audits(states: dict[str, str]) -> dict:
    return {"verdict": "Do not trust saliency: its maps are no more faithful than an edge "
                       "detector. More follows.",
            "states": {"saliency": "do not trust", **states}, "controls": CONTROLS,
            "verdict_lines": {"saliency": "saliency: do not trust (faithfulness)",
                              **{c: f"{c}: {s}" for c, s in states.items()}},
            "scorecard": [], "undecided": {}}


def test_rejected_and_undecided_controls_are_counted_apart():
    text, alarm = controls_sentence(audits(dict.fromkeys(CONTROLS, "do not trust")))
    assert text == "Negative controls: none of 3 trusted, as it must be (all rejected)." and not alarm
    text, _ = controls_sentence(audits({CONTROLS[0]: "do not trust", CONTROLS[1]: "undecided",
                                        CONTROLS[2]: "undecided"}))
    assert text.endswith("(1 rejected, 2 undecided).")


def test_a_trusted_control_is_the_alarm_in_both_places():
    a = audits({CONTROLS[0]: "trusted", CONTROLS[1]: "do not trust", CONTROLS[2]: "do not trust"})
    text, alarm = controls_sentence(a)
    assert alarm and text.startswith("Warning: control: random passed every check")
    cli = answer_lines(a, a["verdict_lines"])
    assert cli[-1].strip() == text.replace("Warning:", "WARNING:", 1)


def test_the_cli_says_the_headline_and_controls_the_report_shows():
    a = audits({CONTROLS[0]: "do not trust", CONTROLS[1]: "undecided", CONTROLS[2]: "do not trust"})
    cli = answer_lines(a, a["verdict_lines"])
    assert cli[0] == "verdict: Do not trust saliency: its maps are no more faithful than an edge detector."
    assert cli[0] == f"verdict: {headline(a)}"
    assert cli[1] == "  saliency: do not trust (faithfulness)"
    assert cli[-1].strip() == controls_sentence(a)[0][:-1] + "; their lines are in summary.json."
