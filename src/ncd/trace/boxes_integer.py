"""Conversion rules for ``one_hot`` (:class:`~ncd.prims.integer.OneHotOp`), ``any``/``all`` of a mask
(:class:`~ncd.prims.integer.AnyOp`) and arithmetic between two integer (or
boolean) tensors: an :class:`~ncd.prims.integer.IndexArithmeticOp` box, broadcast by position as torch does.

Hooked in front of whichever rules ``aten.add``/``sub``/``mul``/``div``/``floor_divide``/``remainder``/``maximum``/
``minimum`` (and ``min``/``max`` of two tensors) have (they take floats, a float with an integer tensor, or a tensor with
a number); it takes only a call whose two operands are integer or boolean tensors and whose result is an integer tensor
(or a float, for ``/``).  ``abs``/``neg`` of an integer tensor is an :class:`~ncd.prims.integer.IndexUnaryOp`.
"""

from __future__ import annotations

from typing import Any

import sympy
import torch

import ncd.trace.boxes_complex  # noqa: F401  (the rules this one goes in front of, registered first)
import ncd.trace.boxes_indexing  # noqa: F401
import ncd.trace.boxes_selection  # noqa: F401  (its logic rule of boolean &, |, ^ first: this one goes in front)
import ncd.trace.idioms_arithmetic  # noqa: F401
import ncd.trace.scalars  # noqa: F401
from ncd.ir.axes import SCALAR, Axis, Segment
from ncd.ir.diagram import Box
from ncd.trace.capture import Node
from ncd.trace.convert import Converter, Decline, hook, rule
from ncd.trace.naming import kept_units

__all__ = ["index_arithmetic", "one_hot", "any_all"]

#: ATen packet -> operator
PACKETS = {"add": "+", "sub": "-", "mul": "*", "floor_divide": "//", "remainder": "%", "div": "/", "maximum": "max",
           "minimum": "min", "min": "min", "max": "max", "__and__": "&", "bitwise_and": "&", "__or__": "|",
           "bitwise_or": "|", "__xor__": "^", "bitwise_xor": "^"}


def _integer(value: Any) -> bool:
    return (isinstance(value, Node) and isinstance(value.value, torch.Tensor)
            and not value.value.is_floating_point() and not value.value.is_complex())


def applies(node: Node) -> bool:
    """Two integer or boolean tensor operands, an integer result (a float for true division)."""
    out = node.value
    if not isinstance(out, torch.Tensor) or out.dtype == torch.bool or out.is_complex() or len(node.args) < 2:
        return False
    return _integer(node.args[0]) and _integer(node.args[1]) and (not out.is_floating_point()
                                                                  or node.target.name().endswith("::div"))


def index_arithmetic(conv: Converter, node: Node) -> None:
    """``a ∘ b`` of two integer tensors as one box woven over the output's wires."""
    from ncd.prims.integer import IndexArithmeticOp, combined_range
    from ncd.trace.boxes_selection import _broadcast
    from ncd.trace.convert import kind_of

    packet = node.target.name().split("::")[1].split(".")[0]
    operator = PACKETS[packet]
    rounding = node.kwargs.get("rounding_mode")
    if packet == "div" and rounding is not None:
        if rounding != "floor":
            raise Decline("division rounded towards zero")
        operator = "//"
    if node.kwargs.get("alpha", node.args[2] if packet in ("add", "sub") and len(node.args) > 2 else 1) != 1:
        raise Decline("a scaled operand (alpha)")
    from ncd.trace.scalars import NARROW, WRAPS

    if node.value.dtype in NARROW and operator in WRAPS:  # the box computes in int64: torch's wrap-around would be lost
        raise Decline(f"{operator} on {node.value.dtype}, which wraps around")

    def make(operands: list[Segment]) -> Box:
        segs = [Segment((), seg.dtype, seg.range) for seg in operands]
        if any(s.dtype not in ("index", "bool") for s in segs):
            raise Decline("an operand that is not drawn as integers")
        if node.value.is_floating_point():
            target = SCALAR
        else:
            rng = combined_range(operator, segs[0], segs[1])
            target = Segment((), "index", rng if rng is not None else kind_of(node.value)[1])
        try:
            return Box(IndexArithmeticOp(operator, segs[0], segs[1], target))
        except Exception as error:  # noqa: BLE001 - what the box refuses stays opaque
            raise Decline(str(error)) from None

    _broadcast(conv, node, make, list(node.args[:2]))


@rule("aten.one_hot")
def one_hot(conv: Converter, node: Node) -> None:
    """``F.one_hot(i, n)`` with ``n`` given (``-1`` reads it off the values: refused by the box) of positions ranged ``[n]``
    (or less): a new wire of size ``n`` (a router's experts: ``e``)."""
    from ncd.prims.integer import OneHotOp
    from ncd.trace.boxes import _unlike
    from ncd.trace.indexing import _retag

    x = node.args[0]
    n = node.args[1] if len(node.args) > 1 else node.kwargs.get("num_classes", -1)
    if not (_integer(x) and isinstance(n, int) and n >= 1 and x.live):
        raise Decline("not positions of a live integer tensor with the number of classes given")
    vid = conv.value(x)
    seg = conv.segs[vid]
    if seg.dtype != "index" or seg.range is None or int(seg.range) > n:
        raise Decline("positions without a range within the classes")
    vid = _retag(conv, vid, list(seg.names), tuple(int(a.size) for a in seg.axes), n)
    roles = conv.namer.config.get(n, set())
    name = _unlike(conv, conv.namer.fresh(n, "e" if "e" in roles else None), set(seg.names))
    box = Box(OneHotOp(Axis(name, sympy.Integer(n))))
    out = conv.apply(box, [vid])
    if tuple(int(a.size) for a in conv.segs[out].axes) != tuple(int(s) for s in node.value.shape):
        raise Decline(f"the wires come out as '{conv.segs[out]}'")
    conv.bind(node, out)


@rule("aten.any", "aten.all")
def any_all(conv: Converter, node: Node) -> None:
    """``m.any()``/``m.all()`` of a boolean mask, over every wire or ``dim`` (one or several; ``keepdim`` a view)."""
    from ncd.prims.integer import AnyOp
    from ncd.trace.boxes import _dims, _own

    x = node.args[0]
    if not (isinstance(x, Node) and x.live and isinstance(x.value, torch.Tensor) and x.value.dtype == torch.bool):
        raise Decline("not a live boolean tensor")
    vid = conv.value(x)
    seg = conv.segs[vid]
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    keep = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
    own = list(range(len(seg.axes))) if dims is None or dims == [] else sorted(_dims(conv, vid, dims))
    if not own:
        raise Decline("a mask of no wires")
    every = node.target.name().split("::")[1].split(".")[0] == "all"
    out = conv.apply(Box(AnyOp(_own(conv, vid, own), every)), [vid])
    if keep:
        out = conv.view(out, kept_units(seg.names, own),
                        tuple(int(s) for s in node.value.shape))
    if tuple(int(a.size) for a in conv.segs[out].axes) != tuple(int(s) for s in node.value.shape):
        raise Decline(f"the wires come out as '{conv.segs[out]}'")
    conv.bind(node, out)


def _index_arithmetic(conv: Converter, node: Node) -> bool:
    if not applies(node):
        return False
    index_arithmetic(conv, node)
    return True


hook(tuple(f"aten.{packet}" for packet in PACKETS if packet not in ("min", "max")), _index_arithmetic)


def _bitwise_number(conv: Converter, node: Node) -> bool:
    """``t & 7``, ``t | c``, ``t ^ c`` of an integer tensor and a number: the arithmetic box of
    :func:`ncd.trace.scalars.scalar_arithmetic` (flags with flags stay logic, two tensors index arithmetic)."""
    from ncd.trace.scalars import _number, scalar_arithmetic

    out = node.value
    if not isinstance(out, torch.Tensor) or out.dtype == torch.bool or out.is_floating_point() or out.is_complex() \
            or len(node.args) != 2 or node.kwargs or _number(node.args[1]) is None:
        return False
    scalar_arithmetic(conv, node)
    return True


hook(("aten.__and__", "aten.bitwise_and", "aten.__or__", "aten.bitwise_or", "aten.__xor__", "aten.bitwise_xor"),
     _bitwise_number)


def _two_extremum(conv: Converter, node: Node) -> bool:
    """``torch.min(a, b)``/``torch.max(a, b)`` (``min.other``) of two integer tensors: ``torch.minimum``'s box (T5's
    buckets, ``torch.min(large, torch.full_like(large, n - 1))``); the other overloads go on to the rules of ``min``."""
    if getattr(node.target, "_overloadname", "") != "other" or not applies(node):
        return False
    index_arithmetic(conv, node)
    return True


hook(("aten.min", "aten.max"), _two_extremum)


def _index_unary(conv: Converter, node: Node) -> bool:
    """``|i|`` or ``−i`` of a live integer tensor, in its own type (the float functions go on to their rules)."""
    from ncd.prims.integer import IndexUnaryOp

    x = node.args[0]
    if not (_integer(x) and x.live and isinstance(node.value, torch.Tensor) and node.value.dtype == x.value.dtype):
        return False
    if x.value.dtype == torch.bool:
        raise Decline("the absolute value or negation of bools")
    vid = conv.value(x)
    seg = conv.segs[vid]
    if seg.dtype != "index":
        raise Decline(f"integers drawn as '{seg}'")
    operator = node.target.name().split("::")[1].split(".")[0]
    conv.bind(node, conv.apply(Box(IndexUnaryOp(operator, Segment((), "index", seg.range))), [vid]))
    return True


hook(("aten.abs", "aten.neg"), _index_unary)


def _count(conv: Converter, node: Node) -> bool:
    """``x.sum(d)`` of a live integer or boolean tensor over one axis: a :class:`~ncd.prims.counting.CountOp` (XLM's
    sequence lengths); anything else goes on to the float reductions."""
    from ncd.prims.counting import CountOp

    x = node.args[0]
    if not (isinstance(x, Node) and x.live and _integer(x) and len(node.args) > 1 and isinstance(node.value, torch.Tensor)
            and node.value.dtype == torch.long and node.kwargs.get("dtype") in (None, torch.long)):
        return False
    dims = node.args[1] if isinstance(node.args[1], (list, tuple)) else [node.args[1]]
    vid = conv.value(x)
    seg = conv.segs[vid]
    if len(dims) != 1 or seg.dtype not in ("index", "bool") or (seg.dtype == "index" and seg.range is None):
        raise Decline("a count over several axes, or of positions without a range")
    d = int(dims[0]) % len(seg.axes)
    source = Segment((seg.axes[d],), seg.dtype, seg.range)
    out = conv.apply(Box(CountOp(source)), [vid])
    keep = len(node.args) > 2 and node.args[2]
    names = conv.names(out)
    if keep:
        names = names[:d] + ["1"] + names[d:]
        out = conv.view(out, names, tuple(int(s) for s in node.value.shape))
    if tuple(int(a.size) for a in conv.segs[out].axes) != tuple(int(s) for s in node.value.shape):
        raise Decline(f"the wires come out as '{conv.segs[out]}'")
    conv.bind(node, out)
    return True


hook(("aten.sum",), _count)
