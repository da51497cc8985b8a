"""Costs read off the lowered program's ops (:class:`ncd.ir.program.Program`) rather than off the diagram.

The first class of ops read this way: the program's ``torch.einsum`` calls.  One op's FLOPs are what
``torch.utils.flop_counter`` counts for it: ATen sums an axis only one operand has (and the result does
not keep) on its own, then contracts the two operands with one ``bmm`` of ``2 x`` the product of the
remaining axes' sizes — or, when no axis is contracted, multiplies them elementwise (no matrix-product
FLOPs).  The op's values carry their axes with sympy sizes, so on a program on symbolic sizes
(``ncd.torch.codegen.symbolic_program``) this gives formulas.  ``ncd.cost`` reads the program's schedule
(one row per box lowered); ``tests/test_program_cost.py`` checks its rows against these ops, box by box.

>>> from ncd.ir.axes import Axis
>>> from ncd.ir.program import Function, Op, Program, Value
>>> from ncd.ir.size import size
>>> a, b, d = (Axis(n, size(n)) for n in "abd")
>>> x, y = Value("x", (a, b)), Value("y", (b, d))
>>> layer = Function("Layer", "", ops=[Op("einsum", "torch.einsum", (x, y), (Value("z", (a, d)),),
...                                        "torch.einsum('...ab,...bd->...ad', x, y)")])
>>> top = Function("Model", "", ops=[Op("loop", "self.layers", (x,), (x,), "...", callee="Layer", count=size("N"))])
>>> [flops for _, flops in matrix_products(Program([layer, top]))]
[2*N*a*b*d]
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import sympy

from ncd.analysis.layout import numel
from ncd.ir.diagram import Box
from ncd.ir.program import Op, Program
from ncd.prims.linear import LinearOp

__all__ = ["einsum_flops", "linear_flops", "matrix_products"]


def einsum_flops(op: Op) -> sympy.Expr:
    """The forward matrix-product FLOPs of one ``torch.einsum`` op of one or two operands (its subscripts'
    letters name the axes; each operand's sizes are read off its value, trailing axes first)."""
    spec = _subscripts(op)
    if spec is None:
        raise ValueError(f"einsum_flops: {op.code!r} is not an einsum of the values it reads")
    inputs, output = spec
    if len(inputs) == 1:
        return sympy.Integer(0)
    if len(inputs) != 2:
        raise ValueError(f"einsum_flops: {op.code!r} has {len(inputs)} operands; the program contracts pairs")
    size: dict[str, sympy.Expr] = {}
    for letters, value in zip(inputs, op.args):
        for letter, axis in zip(letters, value.axes[len(value.axes) - len(letters):]):
            size[letter] = sympy.sympify(axis.size)
    left, right = ({c for c in letters if size[c] != 1} for letters in inputs)
    if not (left & right) - set(output):  # nothing contracted: an elementwise product
        return sympy.Integer(0)
    alone = (left ^ right) - set(output)  # summed within one operand before the bmm
    flops = sympy.Integer(2)
    for letter in sorted((left | right) - alone):
        flops = flops * size[letter]
    return flops


def _subscripts(op: Op) -> tuple[list[str], str] | None:
    """The operands' and the result's letters of an einsum op whose operands are all values it reads."""
    if op.kind not in ("einsum", "call") or op.target != "torch.einsum":
        return None
    found = re.match(r"torch\.einsum\('([^']*)'", op.code)
    if found is None or "->" not in found.group(1):
        return None
    lhs, rhs = found.group(1).replace("...", "").split("->")
    inputs = lhs.split(",")
    return (inputs, rhs) if len(inputs) == len(op.args) else None


def linear_flops(op: Op) -> sympy.Expr:
    """The forward FLOPs of the op calling a learned map's ``nn.Linear`` (``self.l(x)``, possibly flattened
    or unflattened around it): ``2 x`` its input's elements ``x`` the output features of the box it lowers."""
    prim = op.box.prim if op.box is not None else None
    if not _calls_linear(op) or not isinstance(prim, LinearOp):
        raise ValueError(f"linear_flops: {op.code!r} is not the call of a learned map's nn.Linear")
    return 2 * numel(op.args[0].axes) * numel(prim.cod_axes.axes)


def _calls_linear(op: Op) -> bool:
    return (op.kind in ("module", "call") and len(op.args) == 1 and op.box is not None
            and isinstance(op.box.prim, LinearOp) and re.search(r"\bself\.\w+\(", op.code) is not None)


def matrix_products(program: Program) -> Iterator[tuple[Box | None, sympy.Expr | None]]:
    """``(box, FLOPs)`` for every matrix product the whole program runs, in order (a loop's body once, its
    FLOPs times the loop's count): each op whose call has a row in :mod:`ncd.analysis.targets` (einsums,
    ``nn.Linear`` calls, convolutions, SDPA), read off its arguments' shapes.  ``None`` FLOPs for an einsum
    whose operands the op does not type (text naming ``torch.einsum``: a scan's body inside its loop)."""
    from ncd.analysis.targets import products, target_of

    for op, times in program.counted():
        if target_of(op) and (op.kind != "einsum" or _subscripts(op) is not None):
            shapes = [tuple(sympy.sympify(a.size) for a in value.axes) for value in op.args]
            yield op.box, times * products(op, shapes).forward
        elif _calls_linear(op):
            yield op.box, times * linear_flops(op)
        elif "torch.einsum(" in op.code:
            yield op.box, None
