"""How ATen runs ``torch.einsum`` of one or two operands: the ops the backend records on each einsum op it writes.

``torch.einsum`` is a composite: below the dispatcher (``einsum`` / ``sumproduct_pair`` in ATen) it aligns the
operands to *output letters, then contracted letters*; a letter only one operand has (and the output drops) is
summed within that operand first; what remains is one ``bmm`` of ``(batch, rows, inner) x (batch, inner, cols)``
after a permute and a reshape of each operand — or, when nothing is left to contract, an elementwise ``mul``.
Dimensions of size one count as absent (broadcast).  The code generator writes the call; this module types what
it runs (:class:`ncd.ir.program.Contraction`, the op's ``contraction`` option), so that an analysis of the program
reads ATen-level ops instead of knowing einsum.  ``tests/test_einsum_aten.py`` checks each recorded decomposition
against the ops ATen dispatches for the call.

>>> contraction_of("...ykh,...xkh->...hyx", [(3, 4, 2), (5, 4, 2)])
Contraction(inputs=('ykh', 'xkh'), output='hyx', summed=('', ''), product='bmm', batch='h', rows='y', inner='k', cols='x')
>>> contraction_of("...ab,...b->...a", [(3, 4), (1,)]).summed
('b', '')
"""

from __future__ import annotations

from collections.abc import Sequence

import sympy

from ncd.ir.program import Contraction

__all__ = ["contraction_of"]


def contraction_of(equation: str, sizes: Sequence[Sequence[object]]) -> Contraction | None:
    """The ATen decomposition of ``torch.einsum(equation, ...)`` on operands whose trailing dimensions (one per
    letter) have ``sizes`` (numbers or sympy sizes; a symbol is never one).  ``None`` for three or more operands
    (the program contracts them one pair at a time) or subscripts it does not parse."""
    if "->" not in equation:
        return None
    lhs, output = equation.replace("...", "").split("->")
    inputs = tuple(lhs.split(","))
    if len(inputs) > 2 or len(inputs) != len(sizes) or any(len(s) < len(t) for s, t in zip(sizes, inputs)):
        return None
    present = [{c for c, s in zip(letters, list(shape)[len(shape) - len(letters):]) if not _one(s)}
               for letters, shape in zip(inputs, sizes)]
    contracted = list(dict.fromkeys(c for letters in inputs for c in letters if c not in output))
    if len(inputs) == 1:
        return Contraction(inputs, output, ("",), "sum" if contracted else "view")
    a, b = present
    summed = ("".join(c for c in contracted if c in a and c not in b), "".join(c for c in contracted if c in b and c not in a))
    inner = "".join(c for c in contracted if c in a and c in b)
    if not inner:
        return Contraction(inputs, output, summed, "mul")
    return Contraction(inputs, output, summed, "bmm", batch="".join(c for c in output if c in a and c in b),
                       rows="".join(c for c in output if c in a and c not in b), inner=inner,
                       cols="".join(c for c in output if c in b and c not in a))


def _one(value: object) -> bool:
    return bool(sympy.sympify(value) == 1)
