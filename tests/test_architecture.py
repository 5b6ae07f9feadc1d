"""The shape of the code: small functions, and modules that import only what their concept needs."""

import ast
from pathlib import Path

from conftest import ROOT

MAX_FUNCTION_LINES = 50


def functions(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.end_lineno - node.lineno + 1


def test_no_function_is_longer_than_fifty_lines():
    sources = [*(ROOT / "gpt2").rglob("*.py"), ROOT / "train.py", *(ROOT / "scripts").glob("*.py")]
    long = [f"{path.relative_to(ROOT)}:{name} ({lines} lines)" for path in sources
            for name, lines in functions(path) if lines > MAX_FUNCTION_LINES]
    assert not long, long


def test_no_module_shadows_the_standard_library():
    import sys

    names = {p.stem for p in (ROOT / "gpt2").rglob("*.py")}
    assert not names & set(sys.stdlib_module_names)
