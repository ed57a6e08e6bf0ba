"""Checks over segany's source: no statement that computes a value and throws it away."""

from __future__ import annotations

import ast
from pathlib import Path

import segany

PACKAGE = Path(segany.__file__).parent


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def discarded_values(tree: ast.AST) -> list[int]:
    """Line numbers of expression statements whose value is computed and dropped.

    A call, ``await`` or ``yield`` is kept for its effect, a string constant is a docstring and
    ``...`` a placeholder body; anything else standing alone (a comparison, ``a & b``, a name,
    a subscript) does nothing, usually because an assignment was forgotten.
    """
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Expr):
            continue
        value = node.value
        if isinstance(value, ast.Call | ast.Await | ast.Yield | ast.YieldFrom):
            continue
        if isinstance(value, ast.Constant) and (isinstance(value.value, str) or value.value is ...):
            continue
        lines.append(node.lineno)
    return lines


def test_the_check_catches_a_forgotten_assignment():
    code = "def f(x, valid):\n    x.sum()\n    (x > 0) & valid\n    '''doc'''\n    ...\n"
    assert discarded_values(ast.parse(code)) == [3]


def test_no_statement_discards_its_value():
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{line}"
        for path in _sources()
        for line in discarded_values(ast.parse(path.read_text(), str(path)))
    ]
    assert not found, "statements that compute a value and drop it: " + ", ".join(found)


# --------------------------------------------------------------------------------------------
# the import graph


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in _sources()}


def _resolve(name: str) -> str | None:
    """The segany module an import of ``name`` loads (a submodule, else its package)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    """Every segany module ``module`` imports: at the top, in functions, and for type checking
    alike (each is a dependency a reader has to follow)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1 packages
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        for name in names:
            target = _resolve(name) if name.startswith("segany") else None
            if target and target != module:
                found.add(target)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _package_edges(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    # A package's __init__ re-exporting its own modules is not a dependency cycle.
    return {
        m: {t for t in deps if not (m in MODULES and t.startswith(m + "."))}
        for m, deps in graph.items()
    }


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_graph_has_no_cycle():
    graph = _package_edges({m: imports_of(m) for m in MODULES})
    assert graph["segany.train.trainer"] >= {"segany.train.optim", "segany.train.prompts"}
    assert _cycles(graph) == []


def test_only_the_checkpoints_package_reaches_into_its_modules():
    inside = "segany.checkpoints."
    offenders = sorted(
        f"{m} imports {t}"
        for m in MODULES
        if not m.startswith(inside) and m != "segany.checkpoints"
        for t in imports_of(m)
        if t.startswith(inside)
    )
    assert offenders == []
