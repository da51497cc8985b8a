"""Costs read the lowered program's typed ops, never the text lowering prints.

Every op's Python text (``Op.code``, its comment), the text of untyped ``expr``/``statement`` ops (their target),
and every class's constructor text (``Function.init`` / ``attributes``) replaced by nonsense: ``ncd.cost`` gives
the same report, box by box, and ``ncd.analysis.program.matrix_products`` the same products, on every
per-primitive sample and every gallery model.  A cost rule that ever parses the text it is handed (a
``movedim``/``flatten`` a rule wrote, a module's constructor) fails here.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import sympy

import ncd
import ncd.zoo
from ncd.analysis.cost import CostReport
from ncd.analysis.program import matrix_products
from ncd.errors import NCDError
from ncd.ir.program import Op, Program, Step
from ncd.torch.codegen import symbolic_program
from tests.opdb import SAMPLES, load

load()
cost_module = importlib.import_module("ncd.analysis.cost")  # the module (``ncd.analysis.cost`` is also the function)

NONSENSE = "raise SystemExit('text read')"


def scrambled(program: Program) -> Program:
    """``program`` with every piece of text it prints replaced (in place; steps keep their values)."""
    memo: dict[int, Op] = {}

    def op_(op: Op) -> Op:
        if id(op) not in memo:
            untyped = op.kind in ("expr", "statement")
            memo[id(op)] = replace(op, code=NONSENSE, comment="# nonsense", target="" if untyped else op.target,
                                   body=tuple(op_(o) for o in op.body))
        return memo[id(op)]

    def step_(step: Step) -> None:
        object.__setattr__(step, "ops", tuple(op_(o) for o in step.ops))
        for inner in step.inner:
            step_(inner)

    for function in program.functions:
        function.ops = [op_(o) for o in function.ops]
        function.init = [NONSENSE for _ in function.init]
        function.attributes = {name: NONSENSE for name in function.attributes}
        for step in function.steps:
            step_(step)
    return program


def _figures(report: CostReport) -> Iterator[Any]:
    yield report.forward_flops, report.backward_flops, report.activation_bytes, report.params, report.peak_bytes
    for box in report.boxes:
        yield box.text, box.op, box.metrics.forward_flops, box.metrics.backward_flops, box.metrics.activation_bytes


def _texts_changed(program: Program) -> int:
    return sum(op.code == NONSENSE for _, op in program.ops())


def test_scrambling_reaches_every_op() -> None:
    program = symbolic_program(ncd.zoo.gpt2())
    n = len(list(program.ops()))
    assert _texts_changed(scrambled(program)) == n > 20


@pytest.mark.parametrize("which", ["samples", "gallery"])
def test_costs_do_not_read_op_text(which: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if which == "samples":
        cases = [(s.id, s.build, s.sizes) for s in SAMPLES]
    else:
        cases = [(name, make, {}) for name, make in sorted(ncd.zoo.MODELS.items())]
    produce = cost_module._program
    compared = 0
    for name, build, sizes in cases:
        try:
            d = build()
            plain = list(_figures(ncd.cost(d, **sizes)))
        except NCDError:
            continue
        with monkeypatch.context() as patched:
            patched.setattr(cost_module, "_program", lambda *a, **k: scrambled(produce(*a, **k)))
            assert list(_figures(ncd.cost(d, **sizes))) == plain, name
        compared += 1
    assert compared >= (200 if which == "samples" else len(ncd.zoo.MODELS))


def test_program_products_do_not_read_op_text() -> None:
    compared = 0
    diagrams = [make() for _, make in sorted(ncd.zoo.MODELS.items())] + [s.build() for s in SAMPLES]
    for d in diagrams:
        try:
            plain = [(id(box), f) for box, f in matrix_products(symbolic_program(d))]
        except NCDError:
            continue
        read = [(id(box), f) for box, f in matrix_products(scrambled(symbolic_program(d)))]
        assert len(read) == len(plain)
        for (_, a), (_, b) in zip(read, plain):
            assert a is not None and b is not None and sympy.expand(a - b) == 0
        compared += bool(plain)
    assert compared >= 45
