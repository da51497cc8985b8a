"""A mean lowered as ``torch.mean``: the scale that closes a traced ``x.mean(d)`` (``ScaleOp(mean=True)``).

The importer draws a mean as its definition, the einsum summing over the reduced wires then ``*1/n``.  In float32
``sum / n`` is torch's mean bit for bit, but in float16 and bfloat16 it is not: torch's CPU mean sums in float32 and
divides there before rounding to the input's type once, where an einsum's half sum rounds, then its division rounds
again (a few units in the last place off, or inf where the half sum overflows and the mean does not).  The scale's
lowering rule asks :func:`lower_mean` for ``torch.mean`` of the einsum's operand over the same wires; the einsum's
own op is then read by nothing and dropped (``ncd.torch.unread``), so the program computes one reduction, as the
model does.

>>> import ncd, sympy, torch
>>> from ncd.prims.elementwise import ScaleOp
>>> from ncd.prims.linear import Einsum
>>> d = ncd.Identity.of("b m") >> Einsum("b m -> b") >> ncd.Box(ScaleOp(sympy.Rational(1, 3), sympy.Integer(3), mean=True))
>>> src = d.to_source(b=2, m=3)
>>> "torch.mean(x, (-1,))" in src, "einsum" in src
(True, False)
>>> x = torch.randn(2, 3, dtype=torch.bfloat16) * 100
>>> torch.equal(d.to_torch(b=2, m=3)(x), x.mean(-1))
True
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ncd.torch.rules import RuleContext

__all__ = ["lower_mean"]

#: a single operand's einsum as the einsum rule writes it: ``torch.einsum('...abc->...ab', x)``
_EINSUM = re.compile(r"torch\.einsum\('(\.\.\.)?([A-Za-z]*)->(\.\.\.)?([A-Za-z]*)', ([A-Za-z_]\w*)\)")


def lower_mean(ctx: RuleContext) -> str | None:
    """``torch.mean(x, dims)`` for the scale of ``ctx`` when the value it reads is the sum over some trailing
    wires of one operand ``x`` written just before (kept wires in their order, no diagonal), else ``None``."""
    (value,) = ctx.args
    producer = next((op for op in reversed(ctx.em.function.ops) if any(v.var == value.var for v in op.outputs)), None)
    if producer is None or len(producer.outputs) != 1:
        return None
    found = _EINSUM.fullmatch(producer.code.strip())
    if found is None or bool(found.group(1)) != bool(found.group(3)):
        return None
    given, kept, operand = found.group(2), found.group(4), found.group(5)
    if len(set(given)) != len(given) or not set(kept) <= set(given):
        return None
    if [c for c in given if c in kept] != list(kept) or len(kept) == len(given):
        return None  # (a transpose as well, or no reduction: not a mean)
    dims = tuple(k - len(given) for k, c in enumerate(given) if c not in kept)
    return f"torch.mean({operand}, {dims})"
