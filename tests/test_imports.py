"""The package has no import cycles: module-level imports between ``ncd`` modules form a DAG.

Imports inside functions (the lazy convenience methods on ``Diagram``, plugins loaded on
first use) and under ``TYPE_CHECKING`` are not module-level and do not count.  The graph is
read from the source with ``ast`` (independent of import order at run time); the check is
Tarjan's strongly connected components.  Also: the cost analysis reads the lowered program and
replays none of code generation: no analysis module imports code generation (but for the one hand-off
of the program, ``ncd.analysis.cost._program``) or names a lowering entry point, and costing lowers
exactly once per report with no lowering rule looked up outside that lowering (checked on every gallery
model and every per-primitive sample).
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import ncd

ROOT = Path(ncd.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _module_level_imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if isinstance(node, ast.ClassDef):
                visit(node.body)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    found.add(full if full in modules else base)
            elif isinstance(node, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
                visit(getattr(node, "body", []))
                visit(getattr(node, "orelse", []))
                visit(getattr(node, "finalbody", []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    return {m for m in found if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _module_level_imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
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
                result.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return result


def test_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


def test_the_checker_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_analysis_imports_no_code_generation() -> None:
    """Analysis modules read programs: the one hand-off from lowering is ``ncd.analysis.cost._program``."""
    for name, path in _modules().items():
        if not name.startswith("ncd.analysis"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        handed = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and name == "ncd.analysis.cost"
                  and f.name == "_program" for n in ast.walk(f)}
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and id(n) not in handed}
        handed_names = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and id(n) in handed for a in n.names}
        assert handed_names <= {"program_for_costs"}, (name, handed_names)  # the producer's one public entry point
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not {m for m in imported if m.startswith("ncd.torch") or m.split(".")[0] == "torch"}, name
        assert "import_module" not in path.read_text(encoding="utf-8"), name


def test_analysis_replays_no_einsum_algorithm() -> None:
    """What ``torch.einsum`` runs is typed on its op by the backend (``ncd.ir.program.Contraction``): no analysis
    module parses einsum subscripts, plans the contraction (which operand dims to sum first, how to group them
    for ``bmm``) or decides which SDPA operand lowering packs; they read the ops."""
    import ncd.analysis.layout

    assert not hasattr(ncd.analysis.layout, "einsum")
    for name, path in _modules().items():
        if not name.startswith("ncd.analysis"):
            continue
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
        strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        assert "->" not in strings, name  # no subscripts split or written
        named = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        named |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        named |= {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
        assert not named & {"contraction_of", "aten_einsum", "packs", "sumproduct_pair", "lro"}, (name, named)


#: what runs lowering: the code generator's entry points and the lowering rule registry
LOWERING_NAMES = {"to_torch", "to_source", "to_program", "LOWERING", "rule_for", "Codegen", "ClassEmitter"}


def test_analysis_names_no_lowering_entry_point() -> None:
    for name, path in _modules().items():
        if not name.startswith("ncd.analysis"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        named = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        named |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        named |= {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
        assert not named & LOWERING_NAMES, (name, named & LOWERING_NAMES)


#: run in a fresh interpreter: ``lower``/``symbolic_program`` counted, lowering rule look-ups refused outside them
_COUNTED = """
import sys
import ncd
import ncd.ir.rules as rules
import ncd.torch.codegen as codegen

calls = []
inside = []
lookup = rules.LOWERING.lookup

def refuse(prim):
    if not inside:
        raise AssertionError(f"the cost analysis looked up the lowering rule of {prim.op} outside lowering")
    return lookup(prim)

def counted(fn):
    def run(*args, **kwargs):
        if not inside:  # symbolic_program's own call of lower is part of it
            calls.append(fn.__name__)
        inside.append(1)
        try:
            return fn(*args, **kwargs)
        finally:
            inside.pop()
    return run

rules.LOWERING.lookup = refuse
codegen.lower = counted(codegen.lower)
codegen.symbolic_program = counted(codegen.symbolic_program)
"""


def test_costing_the_gallery_lowers_once() -> None:
    """In a fresh interpreter: every gallery model costed (numbers at its defaults, then formulas) from one
    lowering each (no dry run: no lowering rule looked up outside it)."""
    script = _COUNTED + textwrap.dedent("""
        import ncd.zoo
        for name, make in sorted(ncd.zoo.MODELS.items()):
            calls.clear()
            report = ncd.cost(make())
            assert report.forward_flops > 0, name
            assert calls == ["lower"], (name, calls)
            report.formulas
            assert calls == ["lower", "symbolic_program"], (name, calls)
        print("costed", len(ncd.zoo.MODELS))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("costed ")


def test_costing_every_sample_lowers_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every per-primitive sample costed from one lowering (bound) and no lowering rule looked up outside it."""
    from ncd.ir import rules
    from ncd.torch import codegen
    from tests.opdb import SAMPLES, load

    load()
    calls: list[str] = []
    inside: list[int] = []
    lookup = rules.LOWERING.lookup

    def refuse(prim: object) -> object:
        if not inside:
            raise AssertionError(f"the cost analysis looked up the lowering rule of {prim} outside lowering")
        return lookup(prim)  # type: ignore[arg-type]

    lower = codegen.lower

    def counted(diagram: ncd.Diagram, *named: object) -> object:
        calls.append("lower")
        inside.append(1)
        try:
            return lower(diagram, *named)  # type: ignore[arg-type]
        finally:
            inside.pop()

    monkeypatch.setattr(rules.LOWERING, "lookup", refuse)
    monkeypatch.setattr(codegen, "lower", counted)
    for s in SAMPLES:
        calls.clear()
        ncd.cost(s.build(), **s.sizes)
        assert calls == ["lower"], (s, calls)
    assert len(SAMPLES) > 200
