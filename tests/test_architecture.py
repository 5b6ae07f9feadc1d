"""The shape of the code: small functions, modules that import only what their concept needs, and
packages whose imports all run one way (docs/architecture.md)."""

import ast
import sys
from pathlib import Path

from conftest import ROOT

MAX_FUNCTION_LINES = 50

# Each group of gpt2 may import its own modules and groups of a lower rank, never a group of its own
# rank or above: the ground helpers below everything, the config schemas above them, the model, the
# data and the run bookkeeping side by side (none imports another), training over those three, and
# evaluation and sweeps on top.
RANKS = {
    "gpt2": 0, "gpt2.errors": 0, "gpt2.files": 0, "gpt2.signals": 0, "gpt2.world": 0,
    "gpt2.config": 1,
    "gpt2.model": 2, "gpt2.data": 2, "gpt2.run": 2,
    "gpt2.train": 3,
    "gpt2.eval": 4, "gpt2.sweep": 4,
}


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
    names = {p.stem for p in (ROOT / "gpt2").rglob("*.py")}
    assert not names & set(sys.stdlib_module_names)


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    found = {}
    for path in (ROOT / "gpt2").rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def imports_of(path: Path, known: dict[str, Path]) -> set[str]:
    """The gpt2 modules a file imports, at its top or inside functions (`from pkg import module` names
    the module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "gpt2"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "gpt2":
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                      for a in node.names}
    return found


def group(module: str) -> str:
    """gpt2.train.trainer -> gpt2.train; gpt2.errors -> gpt2.errors."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(path, known) - {name} for name, path in known.items()}


def test_every_group_has_a_rank():
    assert {group(m) for m in modules()} == set(RANKS)


def upward(module: str, targets: set[str]) -> list[str]:
    """The imports of `module` that go to another group of its own rank or above."""
    return sorted(t for t in targets if group(t) != group(module) and RANKS[group(t)] >= RANKS[group(module)])


def test_imports_run_downward_only():
    found = [f"{module} imports {target}" for module, targets in import_graph().items()
             for target in upward(module, targets)]
    assert not found, found


def test_no_modules_import_each_other_in_a_circle():
    graph, done, path = import_graph(), set(), []

    def visit(module):
        assert module not in path, " -> ".join(path[path.index(module):] + [module])
        if module in done:
            return
        path.append(module)
        for target in sorted(graph.get(module, ())):
            visit(target)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


def test_the_layering_check_sees_an_upward_import(tmp_path):
    """The checks above read real imports: a file importing the trainer from the data package is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\nfrom gpt2.data import tokenizer\n\ndef f():\n    from gpt2.train.trainer import train\n")
    targets = imports_of(bad, modules())
    assert targets == {"gpt2.data.tokenizer", "gpt2.train.trainer"}
    assert upward("gpt2.data.bad", targets) == ["gpt2.train.trainer"]
    assert upward("gpt2.eval.bad", targets) == []


def test_no_module_global_is_rewritten_at_run_time():
    """State travels as arguments and objects, not through `global` (a value rewritten at run time
    that another module reads, as the sweep's continue command once did)."""
    sources = [*(ROOT / "gpt2").rglob("*.py"), ROOT / "train.py"]
    found = [f"{path.relative_to(ROOT)}:{node.lineno}" for path in sources
             for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Global)]
    assert not found, found


def test_every_module_has_its_test_file():
    """tests/ mirrors gpt2/: gpt2/<group>/<module>.py is tested in tests/test_<module>.py."""
    missing = [str(path.relative_to(ROOT)) for path in (ROOT / "gpt2").rglob("*.py")
               if path.name != "__init__.py" and not (ROOT / "tests" / f"test_{path.stem}.py").is_file()]
    assert not missing, missing
