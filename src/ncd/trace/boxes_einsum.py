"""Conversion rule for ``torch.einsum``: any equation torch accepts, as one einsum wiring.

The equation is first spelled out (:func:`spelled`): ellipses become letters of their own (right-aligned, as torch
broadcasts them), an implicit output (no ``->``) becomes torch's (the ellipsis, then the letters used once, in
alphabetical order).  A letter repeated within one operand (``bii->bi``, a diagonal or a trace) reads the operand's
second wire under a name of its own and adds the cup (:class:`ncd.prims.linear.UnitOp`, the identity matrix) between
the two wires: ``b t m, t m -> b t`` is the diagonal, exactly.  Letters whose sizes disagree between operands (torch
broadcasts size 1) are declined: the call is drawn as an opaque box.
"""

from __future__ import annotations

import string
from collections import Counter

from ncd.ir.axes import Segment, Type
from ncd.ir.diagram import Box
from ncd.prims.linear import EinsumOp, UnitOp
from ncd.trace.capture import Node
from ncd.trace.convert import Converter, Decline, rule
from ncd.trace.idioms import _shape, _tensor, relabel
from ncd.trace.naming import PRIME

__all__ = ["spelled"]


def spelled(equation: str, ranks: list[int]) -> tuple[list[str], str]:
    """The terms and output of ``equation`` for operands of these ranks, with no ellipsis and an explicit output.

    >>> spelled("...ij,...jk", [3, 2])
    (['aij', 'jk'], 'aik')
    """
    text = equation.replace(" ", "")
    left, arrow, right = text.partition("->")
    terms = left.split(",")
    if len(terms) != len(ranks) or any(c not in string.ascii_letters + ".," for c in left) or "." in right.replace(
            "...", ""):
        raise Decline(f"einsum equation {equation!r} for {len(ranks)} operands")
    spare = iter(c for c in string.ascii_letters if c not in text)
    widths = [rank - (len(t) - 3) for t, rank in zip(terms, ranks) if "..." in t]
    if any(w < 0 for w in widths):
        raise Decline(f"einsum equation {equation!r}: an operand has fewer dimensions than letters")
    ellipsis = "".join(next(spare) for _ in range(max(widths, default=0)))
    out = right if arrow else "..." * bool(widths) + "".join(sorted(
        c for c, n in Counter(c for t in terms for c in t if c != ".").items() if n == 1))
    spelt = [t.replace("...", ellipsis[len(ellipsis) - (rank - (len(t) - 3)):]) if "..." in t else t
             for t, rank in zip(terms, ranks)]
    if any(len(t) != rank or "." in t for t, rank in zip(spelt, ranks)):
        raise Decline(f"einsum equation {equation!r} does not fit operands of ranks {ranks}")
    return spelt, out.replace("...", ellipsis)


@rule("aten.einsum")
def einsum(conv: Converter, node: Node) -> None:
    equation, operands = node.args[0], list(node.args[1])
    if not all(_tensor(o) for o in operands):
        raise Decline("operands that are not tensors")
    terms, right = spelled(equation, [len(_shape(o)) for o in operands])
    sizes: dict[str, int] = {}
    for o, term in zip(operands, terms):
        for letter, n in zip(term, _shape(o)):
            if sizes.setdefault(letter, n) != n:
                raise Decline(f"einsum letter {letter!r} of sizes {sizes[letter]} and {n} (broadcast)")
    names: dict[str, str] = {}  # each letter's wire name
    taken: set[str] = set()

    def fresh(name: str) -> str:
        while name in taken:
            name += PRIME
        taken.add(name)
        return name

    vids, cups = [], []
    for o, term in zip(operands, terms):
        vid = conv.value(o)
        want = []
        for letter, own in zip(term, conv.names(vid)):
            if letter not in names:
                names[letter] = fresh(own)
                want.append(names[letter])
            elif letter in term[:len(want)]:  # a repeated letter: a wire of its own, tied to the first by a cup
                want.append(fresh(own))
                cups.append((names[letter], want[-1]))
            else:
                want.append(names[letter])
        vids.append(relabel(conv, vid, want))
        if list(conv.segs[vids[-1]].names) != want:
            raise Decline(f"einsum operand read as {want}")
    axes = {a.name: a for v in vids for a in conv.segs[v].axes}
    for first, second in cups:
        seg = Segment((axes[first], axes[second]))
        (cup,) = conv.emit(Box(UnitOp(axes[first], axes[second])), [], [seg])
        vids.append(cup)
    segs = [conv.segs[v] for v in vids]
    out = Segment(tuple(axes[names[c]] for c in right))
    (vid,) = conv.emit(Box(EinsumOp(Type(tuple(segs)), out)), vids, [out])
    conv.bind(node, vid)
