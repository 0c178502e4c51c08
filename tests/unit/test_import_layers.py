"""No import cycle among xaudit's modules, counting imports inside functions, and
``import xaudit`` without torch.

import-linter's layers contract (pyproject.toml) keeps the packages in order; this keeps
every module, including those inside one package, free of circles.
"""

import os
import subprocess
import sys
from pathlib import Path

import xaudit
from tests.helpers.import_graph import cycle_path, cycles, import_graph

SRC = Path(xaudit.__file__).parent


def test_no_module_imports_itself_back():
    graph = import_graph(SRC, "xaudit")
    found = cycles(graph)
    shown = "\n".join(" -> ".join(cycle_path(graph, c)) + f"  ({len(c)} modules)" for c in found)
    assert not found, f"import cycles (function-local imports count):\n{shown}"


def test_import_xaudit_loads_no_torch():
    code = "import sys, xaudit; xaudit.Recipe(); print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    env = {**os.environ, "PYTHONPATH": str(SRC.parent)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_an_import_inside_a_function_closes_a_cycle(tmp_path):
    pkg = write(tmp_path / "pkg", {
        "__init__.py": "",
        "low.py": "def f():\n    from .high import g\n    return g\n",
        "high.py": "from . import low\n",
        "other.py": "from pkg.low import f\n",
    })
    graph = import_graph(pkg, "pkg")
    assert graph["pkg.low"] == {"pkg.high"} and graph["pkg.other"] == {"pkg.low"}
    assert cycles(graph) == [["pkg.high", "pkg.low"]]
    assert cycle_path(graph, ["pkg.high", "pkg.low"]) == ["pkg.high", "pkg.low", "pkg.high"]


def test_type_checking_imports_and_outside_names_do_not_count(tmp_path):
    pkg = write(tmp_path / "pkg", {
        "__init__.py": "",
        "a.py": "from typing import TYPE_CHECKING\nimport os\nif TYPE_CHECKING:\n    from .b import B\n",
        "b.py": "from .a import thing\nfrom ..elsewhere import x\n",
    })
    graph = import_graph(pkg, "pkg")
    assert graph == {"pkg": set(), "pkg.a": set(), "pkg.b": {"pkg.a"}}
    assert cycles(graph) == []
