"""Conversion rule for ``torch.einsum``: any equation torch accepts, as one einsum wiring (and the products of vectors,
the diagonals and ``diag_embed``, each an einsum).

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
    emit_einsum(conv, node, node.args[0], list(node.args[1]))


def emit_einsum(conv: Converter, node: Node, equation: str, operands: list[Node]) -> None:
    """``node`` bound to the einsum wiring of ``equation`` on ``operands`` (recorded tensors)."""
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


# -- products of vectors: torch.mv, dot, vdot, outer (ger) as einsum wirings -------------------------------------------
_VECTORS = {"mv": ("ij,j->i", (2, 1)), "dot": ("i,i->", (1, 1)), "vdot": ("i,i->", (1, 1)),
            "outer": ("i,j->ij", (1, 1)), "ger": ("i,j->ij", (1, 1))}


@rule(*(f"aten.{name}" for name in _VECTORS))
def vector_product(conv: Converter, node: Node) -> None:
    """``A @ v`` (``mv``), ``a · b`` (``dot``; ``vdot`` on real numbers, where it conjugates nothing) and ``a ⊗ b``
    (``outer``) of float tensors: the einsums ``ij,j->i``, ``i,i->`` and ``i,j->ij``."""
    equation, ranks = _VECTORS[node.target.name().split("::")[1].split(".")[0]]
    operands = list(node.args[:2])
    if not all(_tensor(o) and o.value.is_floating_point() for o in operands) or tuple(
            len(_shape(o)) for o in operands) != ranks or not any(o.live for o in operands):
        raise Decline("not real float tensors of a product's ranks, one of them live")
    emit_einsum(conv, node, equation, operands)


# -- diagonals: torch.diagonal, torch.trace, torch.diag_embed, torch.diag as einsum wirings ------------------------
def _letters(n: int) -> str:
    return string.ascii_letters[:n]


@rule("aten.diagonal", "aten.trace")
def diagonal(conv: Converter, node: Node) -> None:
    """``x.diagonal(offset, dim1, dim2)`` is the einsum ``...i...i... -> ...i`` (the diagonal last, as torch puts it) of
    the square the offset cuts (slices of the two wires; none for the main diagonal of a square); ``torch.trace`` is
    ``ii ->``."""
    x = node.args[0]
    if not _tensor(x):
        raise Decline("not a tensor")
    n = len(_shape(x))
    if node.target.name().split("::")[1].split(".")[0] == "trace":
        if n != 2:
            raise Decline("trace of a tensor that is not a matrix")
        emit_einsum(conv, node, "ii->", [x])
        return
    given = dict(zip(("offset", "dim1", "dim2"), node.args[1:])) | dict(node.kwargs)
    offset, d1, d2 = given.get("offset", 0), given.get("dim1", 0), given.get("dim2", 1)
    if isinstance(offset, bool) or not isinstance(offset, int) or not all(isinstance(d, int) and -n <= d < n
                                                                         for d in (d1, d2)) or d1 % n == d2 % n:
        raise Decline(f"diagonal at offset {offset} of dims {d1}, {d2}")
    x = _square(conv, node, x, d1 % n, d2 % n, offset)
    letters = list(_letters(n))
    letters[d2 % n] = letters[d1 % n]
    out = "".join(c for k, c in enumerate(letters) if k not in (d1 % n, d2 % n)) + letters[d1 % n]
    emit_einsum(conv, node, "".join(letters) + "->" + out, [x])


@rule("aten.diag_embed", "aten.diag")
def diag_embed(conv: Converter, node: Node) -> None:
    """``torch.diag_embed(x)`` puts the last wire on the diagonal of two: the einsum ``... i, i j -> ... i j`` with the
    cup (the identity matrix); ``torch.diag`` of a vector is that, of a matrix its diagonal (at any offset).  Other
    offsets of ``diag_embed`` stay opaque."""
    x = node.args[0]
    if not _tensor(x):
        raise Decline("not a tensor")
    n = len(_shape(x))
    name = node.target.name().split("::")[1].split(".")[0]
    given = dict(zip(("offset", "dim1", "dim2") if name == "diag_embed" else ("offset",), node.args[1:])) | dict(node.kwargs)
    offset = given.get("offset", 0)
    if name == "diag" and n == 2 and isinstance(offset, int) and not isinstance(offset, bool):
        emit_einsum(conv, node, "ii->i", [_square(conv, node, x, 0, 1, offset)])
        return
    if offset != 0:
        raise Decline("a diagonal off the main one")
    if name == "diag" and n != 1:
        raise Decline("diag of a tensor of more than two dimensions")
    d1, d2 = given.get("dim1", -2), given.get("dim2", -1)
    if not all(isinstance(d, int) and -n - 1 <= d <= n for d in (d1, d2)) or d1 % (n + 1) == d2 % (n + 1):
        raise Decline(f"diag_embed into dims {d1}, {d2}")
    lo, hi = sorted((d1 % (n + 1), d2 % (n + 1)))
    vid = conv.value(x)
    seg = conv.segs[vid]
    last = seg.axes[-1]
    second = conv.namer.axis(_unlike(last.name, set(seg.names)), int(last.size))
    (cup,) = conv.emit(Box(UnitOp(last, second)), [], [Segment((last, second))])
    rest = list(seg.axes[:-1])
    out_axes = rest[:lo] + [last] + rest[lo:hi - 1] + [second] + rest[hi - 1:]
    out = Segment(tuple(out_axes))
    (out_vid,) = conv.emit(Box(EinsumOp(Type((seg, conv.segs[cup])), out)), [vid, cup], [out])
    conv.bind(node, out_vid)


def _square(conv: Converter, node: Node, x: Node, i: int, j: int, offset: int) -> Node:
    """``x`` with its dims ``i`` and ``j`` cut to the square whose main diagonal is ``x``'s diagonal at ``offset``
    (above the main one for a positive offset: columns from ``offset`` on; below it for a negative one: rows); ``x``
    itself when it is that square."""
    from ncd.trace.idioms import emit_slice

    rows, cols = _shape(x)[i], _shape(x)[j]
    first, start = (0, offset) if offset >= 0 else (-offset, 0)
    side = min(rows - first, cols - start)
    if side < 1:
        raise Decline(f"an empty diagonal at offset {offset}")
    if (first, start, side) == (0, 0, rows) and rows == cols:
        return x
    vid = emit_slice(conv, conv.value(x), j, start, start + side)
    vid = emit_slice(conv, vid, i, first, first + side)
    square = Node(f"{node.name}_square", "call", None, (), {}, value=x.value.narrow(i, first, side).narrow(j, start, side),
                  stack=node.stack, live=x.live)
    conv.bind(square, vid)
    return square


def _unlike(name: str, taken: set[str]) -> str:
    name += PRIME
    while name in taken:
        name += PRIME
    return name
