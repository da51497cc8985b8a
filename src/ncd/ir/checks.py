"""The checks a diagram node passes when it is built, and how messages name a node.

A sequence's junctions must have equal types, a box's tensors distinct axis names, a block's
``meta`` well-formed pairs, and no node may be nested deeper than ``ncd.limits``; each refusal is
an ``ncd`` error that names the node with :func:`describe` (the box label and the user's line
that built it).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

import sympy

from ncd.errors import InputError, SizeError, TypeMismatchError
from ncd.ir.axes import Type
from ncd.ir.names import check_text
from ncd.ir.primitive import Primitive
from ncd.limits import limits

if TYPE_CHECKING:
    from ncd.ir.diagram import Diagram

__all__ = ["describe", "expect_diagram"]


_NAMED = 3  # blocks, repeats and weaves named at each end of a deeper nest in a message; the rest are counted
_PARTS = 4  # parts of a wider par named in a message (the first ones and the last); the rest are counted


def describe(diagram: Diagram, end: Literal["input", "output"] = "output") -> str:
    """A short name for messages: the box label (and the user's line that built it), block name, or node kind.

    ``end`` says which end of a composite matters: its ``input`` (the first box, for the
    right-hand side of ``>>``) or its ``output`` (the last box, for the left-hand side).
    Of blocks, repeats and weaves nested deeper than ``2 * _NAMED + 1``, the outer and inner
    ``_NAMED`` are named and the ones between counted; of a par's parts, the first and last few.
    """
    from ncd.ir.diagram import Block, Box, Par, Repeat, Seq, Weave

    wrappers: list[tuple[str, str]] = []  # (before, after) the inner name, outermost first
    while True:
        if isinstance(diagram, Block):
            wrappers.append((f"block {diagram.name!r} ({'starting' if end == 'input' else 'ending'} with ", ")"))
            diagram = diagram.body
        elif isinstance(diagram, Repeat):
            wrappers.append((f"repeat {diagram.name or diagram.var!r} of ", ""))
            diagram = diagram.body
        elif isinstance(diagram, Seq):
            diagram = diagram.parts[0] if end == "input" else diagram.parts[-1]
        elif isinstance(diagram, Weave):
            wrappers.append(("", f" woven over {diagram.axis.name}"))
            diagram = diagram.inner
        else:
            break
    if isinstance(diagram, Box):
        text = diagram.text() + (f" (built at {diagram.source})" if diagram.source else "")
    elif isinstance(diagram, Par):
        parts = diagram.parts
        if len(parts) > 2 * _PARTS + 1:
            shown = [describe(p, end) for p in parts[:_PARTS]] + [f"... {len(parts) - 2 * _PARTS} more ..."]
            parts, text = parts[-_PARTS:], " @ ".join(shown) + " @ "
        else:
            text = ""
        text += " @ ".join(describe(p, end) for p in parts)
    else:
        source = getattr(diagram, "source", None)
        text = f"identity on '{diagram.dom}'" + (f" (built at {source})" if source else "")
    if len(wrappers) > 2 * _NAMED + 1:
        hidden = len(wrappers) - 2 * _NAMED
        wrappers[_NAMED:-_NAMED] = [(f"{hidden} more nested blocks, repeats or weaves, then ", "")]
    for before, after in reversed(wrappers):
        text = before + text + after
    return text


def _check_junctions(parts: tuple[Diagram, ...] | list[Diagram], junctions: Iterable[int]) -> None:
    """Every ``parts[k-1].cod`` equals ``parts[k].dom`` for ``k`` in ``junctions``."""
    for k in junctions:
        left, right = parts[k - 1], parts[k]
        if not left.cod.same(right.dom):
            from ncd.ir.compose import mismatch

            raise mismatch(left, right, "types differ")


def _set(node: Any, **values: Any) -> None:
    """Set fields of a frozen node (as ``object.__setattr__`` each: nodes have no data descriptors of these names)."""
    node.__dict__.update(values)


def _nest(node: Diagram, inner: int | None = None) -> int:
    """Record ``node``'s nesting (``inner``: its deepest child's, else read from its children) and refuse one above
    the limit: every walker (lowering, costs, drawing, JSON, backward) recurses once or more per level, so deeper
    diagrams would end in Python's RecursionError; checked here, when the node is built, they end in an ncd error."""
    if inner is None:
        kids = node.children()
        if not kids:
            return 0
        inner = max(k.nesting() for k in kids)
    depth = inner + 1
    limit = limits().nesting
    if depth > limit:
        from ncd.errors import LimitError

        raise LimitError(f"{describe(node)}: diagram nodes would be nested {depth} deep (blocks, sequences, pars, weaves and"
                         f" repetitions one inside another), more than the limit of {limit} (nesting in ncd.limits)")
    _set(node, _nesting=depth)
    return depth


def _box_types(prim: Primitive) -> tuple[Type, Type]:
    """The types of a box of ``prim``: its signature, whose tensors may name an axis twice only if it allows it."""
    dom, cod = prim.signature()
    if not prim.repeated_axes:
        for seg in (*dom.segments, *cod.segments):
            axes = seg.axes
            if len(axes) > 1 and len({a.name for a in axes}) < len(axes):
                raise TypeMismatchError(f"{prim.label()}: tensor '{seg}' names axis {', '.join(seg.repeated)}"
                                        " twice; the axes of one tensor need distinct names")
    return dom, cod


def _check_meta(name: str, meta: Any) -> None:
    """A block's ``meta`` is (key, value) pairs; ``defaults`` maps size names to positive whole numbers and
    ``legend`` names to texts, since source, costs and drawings read them."""
    if not isinstance(meta, tuple) or not all(isinstance(m, tuple) and len(m) == 2 and isinstance(m[0], str) for m in meta):
        raise TypeMismatchError(f"block {name!r}: meta must be a tuple of (key, value) pairs, not {meta!r:.80}")
    for key, value in meta:
        if key not in ("defaults", "legend"):
            continue
        pairs = tuple(value.items()) if isinstance(value, dict) else value
        if not isinstance(pairs, tuple) or not all(isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str)
                                                   for p in pairs):
            raise TypeMismatchError(f"block {name!r}: {key} must be (name, value) pairs, not {value!r:.80}")
        for k, v in pairs:
            check_text(k, f"a name in the {key} of block {name!r}")
            if key == "defaults" and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
                raise SizeError(f"block {name!r}: default size {k}={v!r} is not a positive whole number")
            if key == "legend" and not isinstance(v, (str, int, sympy.Basic)):
                raise TypeMismatchError(f"block {name!r}: legend entry {k}={v!r:.60} is not a text or a size")
            if key == "legend" and isinstance(v, str):
                check_text(v, f"the legend of block {name!r}")


def expect_diagram(value: object, what: str) -> Diagram:
    """``value`` if it is a diagram; otherwise an ``InputError`` naming the call ``what`` and what it was given
    (``ncd.cost(3)`` would otherwise end in an AttributeError deep inside).

    >>> expect_diagram(3, "cost")
    Traceback (most recent call last):
    ncd.errors.InputError: cost: expected an ncd diagram, not int 3
    """
    from ncd.ir.diagram import Diagram

    if not isinstance(value, Diagram):
        raise InputError(f"{what}: expected an ncd diagram, not {type(value).__name__} {value!r:.60}")
    return value
