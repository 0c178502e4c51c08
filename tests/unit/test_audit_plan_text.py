"""The audit plan's line: what costs something, slowest first, the total a user plans by."""

from __future__ import annotations

from xaudit.audit.plan import plan_text


def test_the_plan_names_only_audits_that_cost_something_and_totals_in_minutes():
    plan = {"seconds_per_forward": 0.01, "maps": {"model_evals": 120, "seconds": 30.0},
            "audits": {"complexity": {"model_evals": 0, "seconds": 0.0},
                       "shortcut": {"model_evals": 0, "seconds": 0.2},
                       "faithfulness": {"model_evals": 4000, "seconds": 150.0},
                       "model_randomization": {"model_evals": 9000, "seconds": 420.0},
                       "custom": {"model_evals": None, "seconds": None}}}
    line = plan_text(plan)
    assert line.startswith("audit plan, about 10 min at 100 forwards/s: ")  # 600 s in all
    assert "complexity" not in line and "shortcut" not in line
    assert line.index("model_randomization ~9,000 evals ~7 min 00 s") < line.index("faithfulness")
    assert "custom (cost unknown)" in line and line.endswith("2 more at no model cost")
    small = {**plan, "audits": {"complexity": {"model_evals": 0, "seconds": 0.0}},
             "maps": {"model_evals": 0, "seconds": 0.0}}
    assert plan_text(small) == "audit plan, about 0 s at 100 forwards/s: 1 more at no model cost"
