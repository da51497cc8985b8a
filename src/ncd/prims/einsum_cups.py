"""The cups (:class:`~ncd.prims.unit.UnitOp`, identity matrices) among an einsum's operands, read on a diagonal: how
:func:`ncd.prims.linear.lower_einsum` writes such an einsum (each cup's two letters made one, as ``torch.einsum``'s
``ii,ij->j`` reads it) and what :func:`ncd.prims.linear.cost_einsum` costs, and the pairs' plan of the other operands.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ncd.ir.axes import Axis
from ncd.prims.contraction import contraction_plan, plan_sizes
from ncd.prims.unit import UnitOp

if TYPE_CHECKING:
    from ncd.prims.linear import EinsumOp
    from ncd.torch.rules import Expr, RuleContext


def _diagonal_read(ctx: RuleContext, subscripts: str) -> Expr | tuple[tuple[int, ...], str] | None:
    """An einsum of tensors and cups (:class:`UnitOp`, the identity matrix: a repeated letter of ``torch.einsum``,
    ``ii->i``, ``ii,ij->j``, as the importer reads it) as the einsum of the other operands with each cup's two letters
    made one: its diagonal read, as torch's own einsum does (a view, no product: ``n²`` products with ``torch.eye``
    before).  A cup is read so unless both of its letters are kept (``diag_embed``: the identity is the result's
    diagonal) or no other operand is indexed by both; ``None`` when no cup is.  The op keeps the indices of the inputs
    it does not read (option ``unread``, in the order their letters were made one: the cost rule's operands).  With
    three or more other operands (``bii,bij,bj->bi``): those indices and the others' subscripts, contracted by their
    pairs' plan (:func:`_cupless_pairs`)."""
    from dataclasses import replace

    lhs, rhs = subscripts.split("->")
    terms = lhs.split(",")
    made = {v.var: op.box for op in ctx.em.function.ops for v in op.outputs}
    cups: list[int] = []
    for k, arg in enumerate(ctx.args):
        box = made.get(arg.var)
        if box is None or not isinstance(box.prim, UnitOp) or len(terms[k]) != 5 or not terms[k].startswith("..."):
            continue
        first, second = terms[k][3], terms[k][4]
        if first == second or first in rhs and second in rhs:
            continue
        keep, drop = (second, first) if first in rhs else (first, second)
        others = [t.replace(drop, keep) for j, t in enumerate(terms) if j != k and j not in cups]
        if not any(t.count(keep) >= 2 for t in others):  # (the cup's letters do not both index one other operand)
            continue
        cups.append(k)
        terms, rhs = [t.replace(drop, keep) for t in terms], rhs.replace(drop, keep)
    if not cups:
        return None
    others = [t for j, t in enumerate(terms) if j not in cups]
    if len(others) >= 3:
        return tuple(cups), f"{','.join(others)}->{rhs}"
    expr = ctx.einsum(f"{','.join(others)}->{rhs}", *(a for j, a in enumerate(ctx.args) if j not in cups))
    return replace(expr, options=(*expr.options, ("unread", tuple(cups))))


def _made_one(cups: Sequence[tuple[Axis, Axis]], out: Sequence[Axis]) -> dict[str, Axis]:
    """Each cup's second axis named as its first, or its first as its second where the output reads its first (as
    :func:`_diagonal_read` renames their letters, one cup after the other): the renamed names -> the axis they become."""
    renamed: dict[str, Axis] = {}

    def now(a: Axis) -> Axis:
        while a.name in renamed:
            a = renamed[a.name]
        return a

    for pair in cups:
        first, second = now(pair[0]), now(pair[1])
        keep, drop = (second, first) if first.name in {now(a).name for a in out} else (first, second)
        renamed[drop.name] = keep
    return {name: now(a) for name, a in renamed.items()}


def _cupless_pairs(prim: EinsumOp, cups: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """The pairs' plan of the operands other than the ``cups`` with each cup's two axes made one (:func:`_made_one`),
    each operand's axes once (an operand indexed by both is read on its diagonal): what lowering runs and the cost
    rule costs, from the primitive alone.

    >>> from ncd.prims.linear import Einsum
    >>> _cupless_pairs(Einsum("b i j, b j k, b k, i j -> b i").prim, (3,))  # (b j k) with (b k), then the diagonal (b j)
    ((1, 2), (0, 1))
    """
    one = _made_one([(prim.inputs[k].axes[0], prim.inputs[k].axes[1]) for k in cups], prim.output.axes)
    names = [tuple(dict.fromkeys(one[n].name if n in one else n for n in seg.names))
             for j, seg in enumerate(prim.inputs) if j not in cups]
    sizes = plan_sizes([(a.name, a.size) for j, seg in enumerate(prim.inputs) if j not in cups for a in seg
                        if a.name not in one])
    return contraction_plan(names, [one[n].name if n in one else n for n in prim.output.names], sizes)
