"""The package's import graph read from source: every import, module-level or inside a function.

import-linter sees function-local imports too, but reports cycles only per contract; this
finds every strongly connected component, so a cycle is printed as the modules in it.
"""

from __future__ import annotations

import ast
from pathlib import Path


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Dotted name → file for every module under the package folder `root`."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join([package, *parts])] = path
    return names


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The longest known module that `name` (a module or a module's attribute) lies in."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def _imported(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules `module` imports anywhere in its file (ignoring TYPE_CHECKING)."""
    is_package = path.name == "__init__.py"
    found = set()
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(_without_type_checking(tree)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import name` imports pkg.name when that is a module, else pkg itself
            # (as import-linter counts it: running pkg's __init__ on the way is not counted)
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            hit = _resolve(target, known)
            if hit is not None and hit != module:
                found.add(hit)
    return found


def _without_type_checking(tree: ast.Module) -> ast.Module:
    """The tree less `if TYPE_CHECKING:` blocks: annotations only, never run."""

    class Strip(ast.NodeTransformer):
        def visit_If(self, node: ast.If) -> ast.AST | None:
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
            if name == "TYPE_CHECKING":
                return None
            return self.generic_visit(node)

    return Strip().visit(tree)


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """module → the package's modules it imports, at any depth of its code."""
    known = module_names(root, package)
    return {name: _imported(name, path, known) for name, path in known.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for succ in edges:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph[succ]))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def cycle_path(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One closed import path through a component, for a message a reader can follow."""
    members = set(component)
    start = component[0]
    # breadth-first back to start, staying inside the component
    previous = {start: None}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for succ in sorted(graph[node] & members):
            if succ == start:
                path = [node]
                while previous[path[-1]] is not None:
                    path.append(previous[path[-1]])
                return [*reversed(path), start]
            if succ not in previous:
                previous[succ] = node
                queue.append(succ)
    return component


if __name__ == "__main__":
    src = Path(__file__).resolve().parents[2] / "src" / "xaudit"
    graph = import_graph(src, "xaudit")
    found = cycles(graph)
    for component in found:
        print(f"{len(component)} modules:", " ".join(component))
        print("  e.g.", " -> ".join(cycle_path(graph, component)))
    print(sum(len(c) for c in found), "modules in", len(found), "cycles")
