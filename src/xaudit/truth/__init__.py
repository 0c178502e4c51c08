"""The known-truth suite: cases whose right verdict is known by construction, each run
through the same ``xaudit.audit`` the product uses, and judged on ``AuditReport.states``.

- ``patch_model``: a patch-sum model where occlusion and integrated gradients are exact;
- ``sanity``: Adebayo et al.'s randomization check (guided backprop survives it);
- ``lesions``: lesions re-drawn away on the synthetic leaves, their true importance measured;
- ``cells``: truths, states, agreement and the musts; ``suite``: the run, table and JSON.
"""

from .cells import CaseResult, Cell
from .suite import SIZES, SuiteResult, run_suite, save, table_lines

__all__ = ["SIZES", "CaseResult", "Cell", "SuiteResult", "run_suite", "save", "table_lines"]
