"""Conversion rules for selection entry by entry: ``where``, ``masked_fill`` and logic on boolean tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ncd.ir.axes import Segment
from ncd.ir.diagram import Box
from ncd.trace.capture import Node
from ncd.trace.convert import Converter, Decline, rule

__all__: list[str] = []


# -- where / masked_fill: selection entry by entry -----------------------------------------------------
def _select(conv: Converter, node: Node, cond: Any, a: Any, b: Any) -> None:
    """``where(cond, a, b)`` as a :class:`WhereOp` box: a boolean tensor and two float operands (tensors of the output's
    dtype or numbers), broadcast by position as torch does."""
    from ncd.prims.selection import WhereOp

    out = node.value
    if not (isinstance(out, torch.Tensor) and out.is_floating_point()):
        raise Decline("not a float selection")
    if not (isinstance(cond, Node) and isinstance(cond.value, torch.Tensor) and cond.value.dtype == torch.bool):
        raise Decline("the condition is not a boolean tensor")
    operands: list[Any] = [cond]
    for v in (a, b):
        if isinstance(v, Node) and isinstance(v.value, torch.Tensor):
            if v.value.dtype != out.dtype:
                raise Decline("a branch of another dtype")
            operands.append(v)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            operands.append(torch.tensor(float(v), dtype=out.dtype))
        elif isinstance(v, torch.Tensor) and v.dim() == 0:
            operands.append(v.to(out.dtype))
        else:
            raise Decline(f"a branch {type(v).__name__}")
    _broadcast(conv, node, Box(WhereOp()), operands)


def _broadcast(conv: Converter, node: Node, box: Box | Callable[[list[Segment]], Box], operands: list[Any]) -> None:
    """``box`` (scalar domains) on ``operands`` broadcast by position as torch does, its wires in the output's order
    (``box`` may be made from the operands' converted segments)."""
    from ncd.trace.idioms import operand, out_names

    if not any(isinstance(v, Node) and v.live for v in operands):
        raise Decline("nothing live")
    names = out_names(conv, node, operands)
    shape = tuple(int(s) for s in node.value.shape)
    vids = [operand(conv, v, names, shape) for v in operands]
    if not isinstance(box, Box):
        box = box([conv.segs[v] for v in vids])
    vid = conv.apply(box, vids)
    got = list(conv.segs[vid].names)
    if got != names and sorted(got) == sorted(names):  # woven in the condition's order: cross the wires back
        from ncd.prims.structure import TransposeOp

        seg = conv.segs[vid]
        perm = tuple(got.index(n) for n in names)
        (vid,) = conv.emit(Box(TransposeOp(seg, perm)), [vid], [seg.with_axes(seg.axes[k] for k in perm)])
    if list(conv.segs[vid].names) != names:
        raise Decline(f"the wires come out as '{conv.segs[vid]}', not {names}")
    conv.bind(node, vid)


@rule("aten.where")
def where(conv: Converter, node: Node) -> None:
    """``torch.where(c, a, b)`` with a tensor or a number on either branch (``where(c)`` alone stays opaque)."""
    if len(node.args) != 3:
        raise Decline("where(c): the positions")
    _select(conv, node, *node.args)


@rule("aten.masked_fill")
def masked_fill(conv: Converter, node: Node) -> None:
    """``x.masked_fill(mask, v)`` is ``where(mask, v, x)``."""
    x, mask, value = node.args[:3]
    _select(conv, node, mask, value, x)


_LOGIC = {"bitwise_not": "not", "logical_not": "not", "__and__": "and", "bitwise_and": "and", "logical_and": "and",
          "__or__": "or", "bitwise_or": "or", "logical_or": "or", "__xor__": "xor", "bitwise_xor": "xor", "logical_xor": "xor"}


@rule(*(f"aten.{name}" for name in _LOGIC))
def logic(conv: Converter, node: Node) -> None:
    """``~m``, ``m & n``, ``m | n``, ``m ^ n`` (and the ``logical_*`` forms) on boolean tensors."""
    from ncd.prims.selection import LOGIC, LogicOp

    operator = _LOGIC[node.target.name().split("::")[1].split(".")[0]]
    operands = list(node.args[:LOGIC[operator][0]])
    if (not isinstance(node.value, torch.Tensor) or node.value.dtype != torch.bool or node.kwargs
            or any(not (isinstance(v, Node) and isinstance(v.value, torch.Tensor) and v.value.dtype == torch.bool)
                   for v in operands)):
        raise Decline("not boolean tensors")
    _broadcast(conv, node, Box(LogicOp(operator)), operands)  # type: ignore[arg-type]
