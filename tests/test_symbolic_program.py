"""The lowered program on symbolic sizes (``symbolic_program``) is the program lowering writes at every size.

Compared with the program at bound sizes (``to_program``), op by op with block calls inlined: the same
kinds, targets, primitives and numbers of arguments, and the same output layouts once the sizes are
substituted — on every gallery model (at its small test sizes and at its defaults) and every
per-primitive sample.  A rule that needs a size as a number raises instead of guessing.  Until
``ncd.cost`` reads these ops, the last test checks that its walk of the diagram charges matrix
products for exactly the boxes the symbolic program runs, in the same order.
"""

from __future__ import annotations

import pytest
import sympy

import ncd
import ncd.zoo
from ncd.errors import NCDError
from ncd.ir.program import Program
from ncd.ir.size import SymbolicSize, symbol, symbolic_sizes
from ncd.torch.codegen import symbolic_program, to_program
from tests.opdb import SAMPLES, load
from tests.test_cost_zoo import SMALL

load()

Row = tuple[object, ...]


def _rows(program: Program, sizes: dict[str, int] | None = None) -> list[Row]:
    bind = {symbol(k): sympy.Integer(v) for k, v in (sizes or {}).items()}
    rows: list[Row] = []
    for op in program.inlined():
        layouts = tuple(tuple((a.name, sympy.sympify(a.size).xreplace(bind)) for a in v.axes) for v in op.outputs)
        rows.append((op.kind, op.target, op.box.prim.op if op.box else None, layouts, len(op.args)))
    return rows


def _same_program(d: ncd.Diagram, sizes: dict[str, int]) -> None:
    symbolic = symbolic_program(d, **sizes)
    assert not symbolic.top.ops or any(op.outputs for op in symbolic.inlined())
    assert _rows(symbolic, sizes) == _rows(to_program(d, **sizes))


@pytest.mark.parametrize("name", sorted(ncd.zoo.MODELS), ids=str)
def test_every_gallery_model_lowers_on_symbolic_sizes(name: str) -> None:
    d = ncd.zoo.MODELS[name]()
    _same_program(d, SMALL[name])
    _same_program(d, dict(d.get("defaults", ())) if isinstance(d, ncd.Block) else {})
    assert "sizes." in symbolic_program(d).to_source()  # sizes printed by name, never a guessed number


def test_every_sample_lowers_on_symbolic_sizes_or_says_which_size_it_needs() -> None:
    needs_a_number: list[str] = []
    for s in SAMPLES:
        d = s.build()
        try:
            symbolic = symbolic_program(d, **s.sizes)  # size-chosen plans (einsum pairs) as at the sample's sizes
        except NCDError as e:
            assert "give" in str(e) or "bound" in str(e), (s.id, str(e))
            needs_a_number.append(s.id)
            continue
        assert _rows(symbolic, s.sizes) == _rows(to_program(d, **s.sizes)), s.id
    assert len(needs_a_number) < len(SAMPLES) // 10, needs_a_number


def test_a_symbolic_size_prints_by_name_and_refuses_to_be_a_number() -> None:
    n = SymbolicSize(symbol("k") * symbol("h"))
    assert str(n * 2) == "2*sizes.h*sizes.k" and n == symbol("h") * symbol("k") and n != 1
    for needs_number in (lambda: range(n), lambda: int(n), lambda: n % 2, lambda: n < 3):
        with pytest.raises(NCDError, match="give h, k"):
            needs_number()
    with symbolic_sizes():
        from ncd.ir.size import evaluate

        assert isinstance(evaluate(symbol("m")), SymbolicSize)
    with pytest.raises(NCDError, match="not bound"):
        evaluate(symbol("m"))


def test_repeated_layers_that_differ_need_their_count() -> None:
    layer = ncd.Identity.of("b m") >> ncd.Linear("m -> m").block("Layer")
    same = ncd.repeat(layer, "i", 0, "N", name="Layers")
    assert "range(sizes.N)" in symbolic_program(same).to_source()
    differ = ncd.repeat(ncd.Identity.of("b m") >> ncd.Scale("i + 1").block("Layer"), "i", 0, "N")
    with pytest.raises(NCDError, match="N must be bound"):
        symbolic_program(differ)



def _program_boxes(program: Program) -> list[str]:
    """The primitives the program runs, one entry per box occurrence (``sdpa`` for a fused attention)."""
    found: list[str] = []
    last = None
    inside = {id(inner) for op in program.inlined() for inner in op.body}  # a scan's step: part of the scan's row
    for op in program.inlined():
        if id(op) in inside:
            continue
        if op.box is None:
            if op.target == "F.scaled_dot_product_attention":
                found.append("sdpa")
            last = None
            continue
        if op.box is not last:
            found.append(op.box.prim.op)
        last = op.box
    return found


def test_the_cost_walk_charges_the_products_the_program_runs() -> None:
    compared = 0
    for name, d in [(n, make()) for n, make in sorted(ncd.zoo.MODELS.items())] + [(s.id, s.build()) for s in SAMPLES]:
        try:
            program = symbolic_program(d)
        except NCDError:
            continue
        boxes = ncd.cost(d).box_formulas
        products = {b.op for b in boxes if b.metrics.forward_matmul != 0}
        charged = [b.op for b in boxes if b.op in products]
        assert charged == [op for op in _program_boxes(program) if op in products], name
        compared += 1
    assert compared > 250
