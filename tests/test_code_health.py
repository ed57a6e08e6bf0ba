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
