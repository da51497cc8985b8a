"""One definition per block name: instances that differ only in their sizes share a drawing with symbols.

The paper draws a block once — "the block's box ``=`` its contents" — with its sizes as symbols
(the identity ResNet's ``Block(s, N)`` with ``x̄/s``, ``n₀``, ``n₁``), whatever sizes each use of it
has.  :func:`generic_labels` compares blocks of one name wire by wire: where every instance has the
same axis the wire keeps its label; where they differ the wire is labelled by a fresh symbol
(``n_i``, ``x_j``) that no other wire or legend row of the page uses, and the legend lists its value
per instance (one row per symbol).  Blocks whose structure differs (another
box, another stride, another repetition) are not merged.

>>> import ncd
>>> def unit(c_in, c_out):
...     return (ncd.Identity.of(f"b {c_in}") >> ncd.Linear(f"{c_in} -> {c_out}")).block("Unit")
>>> a, b = unit("n1", "n2"), unit("n2", "n3")
>>> labels, rows = generic_labels([a, b])
>>> sorted("".join(p.text for p in parts) for parts, _ in labels.values()), rows
(['ni', 'nj'], [('n_i', 'n1, n2'), ('n_j', 'n2, n3')])
>>> generic_labels([a, (ncd.Identity.of("b n1") >> ncd.ReLU()).block("Unit")]) is None  # another shape
True
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from ncd.ir.axes import Axis
from ncd.ir.diagram import Block, Box, Diagram, Identity, Repeat, Weave
from ncd.render.typeset import Piece, symbol_pieces

__all__ = ["generic_labels", "same_shape"]

#: a wire's label in a shared definition, and the legend row of its symbol
Label = tuple[tuple[Piece, ...], tuple[str, str]]
Row = tuple[str, str]


def _shape(node: Diagram) -> Any:
    """What a drawing of ``node`` shows apart from its wires' labels."""
    if isinstance(node, Box):
        return ("box", type(node.prim).__name__, node.text(), tuple(len(s) for s in node.dom), tuple(len(s) for s in node.cod))
    if isinstance(node, Weave):
        return ("weave", node.dom_pos, node.cod_pos, _shape(node.inner))
    if isinstance(node, Block):
        return ("block", node.name, node.meta, _shape(node.body))
    if isinstance(node, Repeat):
        return ("repeat", node.var, str(node.start), str(node.stop), _shape(node.body))
    if isinstance(node, Identity):
        return ("id", tuple(len(s) for s in node.dom))
    return (type(node).__name__, tuple(_shape(c) for c in node.children()))


def same_shape(a: Diagram, b: Diagram) -> bool:
    """Whether ``a`` and ``b`` are drawn alike but for their wires' labels."""
    return bool(_shape(a) == _shape(b))


def _axes(node: Diagram, out: list[Axis]) -> None:
    stack = [node]
    while stack:
        current = stack.pop()
        out.extend(a for seg in current.dom for a in seg)
        out.extend(a for seg in current.cod for a in seg)
        stack.extend(reversed(current.children()))


def generic_labels(blocks: Sequence[Block], taken: Iterable[str] = ()) -> tuple[dict[Axis, Label], list[Row]] | None:
    """For blocks of one name and shape: the label of each axis of ``blocks[0]`` that differs between them with
    the legend row giving its symbol per instance, and every such row; ``None`` when the instances cannot share a
    drawing (another shape, or an axis of the first standing for different axes of another in two places).
    Axes whose sizes agree in every instance share a symbol (a wire's label is its size).
    ``taken``: names the fresh symbols must not take (the page's other symbols)."""
    first = blocks[0]
    if any(not same_shape(first, b) for b in blocks[1:]):
        return None
    lists: list[list[Axis]] = []
    for b in blocks:
        axes: list[Axis] = []
        _axes(b, axes)
        lists.append(axes)
    if any(len(axes) != len(lists[0]) for axes in lists):
        return None
    seen: dict[Axis, tuple[Axis, ...]] = {}
    for column in zip(*lists):
        known = seen.setdefault(column[0], column)
        if known != column:
            return None
    taken = {a.name for axes in lists for a in axes} | set(taken)
    labels: dict[Axis, Label] = {}
    rows: dict[str, Row] = {}  # by the sizes per instance
    used: dict[str, int] = {}
    for axis, column in seen.items():
        if len(set(column)) == 1:
            continue
        value = ", ".join(str(a.size) for a in column)
        row = rows.get(value)
        if row is None:
            # a letter of its name, indexed (n_i); a multi-letter name (nb, self_attn) would print literally
            prefix = (re.match(r"[^\W\d_]*", axis.name).group(0) or "n")[0]  # type: ignore[union-attr]
            k = used.get(prefix, 0)
            while _fresh(prefix, k) in taken:
                k += 1
            used[prefix] = k + 1
            row = rows[value] = (_fresh(prefix, k), value)
        labels[axis] = (symbol_pieces(row[0], axis.role == "item"), row)
    return labels, list(rows.values())


def _fresh(prefix: str, k: int) -> str:
    return f"{prefix}_{_INDICES[k % len(_INDICES)]}" + ("'" * (k // len(_INDICES)))


#: subscripts of fresh symbols, as the paper's legends index sizes (``x̄_i``, ``c_i``)
_INDICES = "ijklmpqrs"
