"""Costs read off the lowered program's ops (:class:`ncd.ir.program.Program`) rather than off the diagram.

The first class of ops read this way: the program's ``torch.einsum`` calls.  One op's FLOPs are what
``torch.utils.flop_counter`` counts for it: the ``bmm`` of the ATen ops the op records
(:class:`ncd.ir.program.Contraction`, typed by the backend that wrote the call), ``2 x`` the product of its
sizes — none when what it runs is an elementwise ``mul``, a sum or a view.  The op's values carry their axes
with sympy sizes, so on a program on symbolic sizes (``ncd.torch.codegen.symbolic_program``) this gives
formulas.  ``ncd.cost`` reads the program's schedule (one row per box lowered);
``tests/test_program_cost.py`` checks its rows against these ops, box by box.

>>> from ncd.ir.axes import Axis
>>> from ncd.ir.program import Contraction, Function, Op, Program, Value
>>> from ncd.ir.size import size
>>> a, b, d = (Axis(n, size(n)) for n in "abd")
>>> x, y = Value("x", (a, b)), Value("y", (b, d))
>>> layer = Function("Layer", "", ops=[Op("einsum", "torch.einsum", (x, y), (Value("z", (a, d)),),
...                                        "torch.einsum('...ab,...bd->...ad', x, y)",
...                                        options=(("contraction", Contraction(("ab", "bd"), "ad", ("", ""), "bmm",
...                                                                             rows="a", inner="b", cols="d")),))])
>>> top = Function("Model", "", ops=[Op("loop", "self.layers", (x,), (x,), "...", callee="Layer", count=size("N"))])
>>> [flops for _, flops in matrix_products(Program([layer, top]))]
[2*N*a*b*d]
"""

from __future__ import annotations

from collections.abc import Iterator

import sympy

from ncd.analysis.layout import numel
from ncd.ir.diagram import Box
from ncd.ir.program import Contraction, Op, Program
from ncd.prims.linear import LinearOp

__all__ = ["einsum_flops", "linear_flops", "matrix_products"]


def einsum_flops(op: Op) -> sympy.Expr:
    """The forward matrix-product FLOPs of one ``torch.einsum`` op of one or two operands: those of the ``bmm``
    its ``contraction`` records (:class:`ncd.ir.program.Contraction`), ``2 x`` the product of its letters'
    sizes, each read off the operand value whose trailing axis it names; none for a view, a sum or a ``mul``."""
    plan = _contraction(op)
    if plan is None:
        raise ValueError(f"einsum_flops: {op.code!r} is not an einsum of the values it reads, typed with what ATen runs")
    if plan.product != "bmm":
        return sympy.Integer(0)
    size: dict[str, sympy.Expr] = {}
    for letters, value in zip(plan.inputs, op.args):
        for letter, axis in zip(letters, value.axes[len(value.axes) - len(letters):]):
            size[letter] = sympy.sympify(axis.size)
    flops = sympy.Integer(2)
    for letter in sorted(plan.batch + plan.rows + plan.inner + plan.cols):
        flops = flops * size[letter]
    return flops


def _contraction(op: Op) -> Contraction | None:
    """What ATen runs for an einsum op whose operands are the values it reads (its ``contraction`` option)."""
    if op.kind not in ("einsum", "call") or op.target != "torch.einsum":
        return None
    plan = op.option("contraction")
    return plan if isinstance(plan, Contraction) and len(plan.inputs) == len(op.args) else None


def linear_flops(op: Op) -> sympy.Expr:
    """The forward FLOPs of the op calling a learned map's ``nn.Linear`` (``self.l(x)``, possibly flattened
    or unflattened around it): ``2 x`` its input's elements ``x`` the output features of the box it lowers."""
    from ncd.analysis.targets import target_of

    prim = op.box.prim if op.box is not None else None
    if target_of(op) != "linear" or len(op.args) != 1 or not isinstance(prim, LinearOp):
        raise ValueError(f"linear_flops: {op.code!r} is not the call of a learned map's nn.Linear")
    return 2 * numel(op.args[0].axes) * numel(prim.cod_axes.axes)


def matrix_products(program: Program) -> Iterator[tuple[Box | None, sympy.Expr | None]]:
    """``(box, FLOPs)`` for every matrix product the whole program runs, in order (a loop's body once, its
    FLOPs times the loop's count): each op whose call has a row in :mod:`ncd.analysis.targets` (einsums,
    ``nn.Linear`` calls, convolutions, SDPA), read off its arguments' shapes.  ``None`` FLOPs for an einsum
    op that does not type what ATen runs on the values it reads.  Only typed ops are read, never the text an op
    prints (``tests/test_cost_reads_types.py``; no rule writes an einsum as untyped text: ``tests/test_program_cost.py``).
    A scan's loop runs its ``body`` ops, each read like any other, its count times,
    and charged to the scan's box (its one cost row)."""
    from ncd.analysis.targets import products, target_of

    owner: dict[int, Box | None] = {}  # a loop body's ops: the box of the outermost loop running them (one cost row)
    for op in program.inlined():
        for inner in _body(op):
            owner.setdefault(id(inner), owner.get(id(op), op.box))
    for op, times in program.counted():
        box = owner.get(id(op), op.box)
        if target_of(op) == "einsum" and _contraction(op) is None:
            yield box, None  # an einsum op whose operands are not the values it reads
        elif target_of(op):
            shapes = [tuple(sympy.sympify(a.size) for a in value.axes) for value in op.args]
            yield box, times * products(op, shapes).forward


def _body(op: Op) -> Iterator[Op]:
    """The ops of a loop op's body, nested loops' bodies included."""
    for inner in op.body:
        yield inner
        yield from _body(inner)
