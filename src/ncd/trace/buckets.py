"""T5's relative-position bucket recorded over live distances, read as one box: :class:`~ncd.prims.integer.BucketOp`.

LayoutLMv3 (and T5's copies elsewhere) bucket the distances between the tokens' positions or box coordinates, read
from the input, with the code of T5's ``_relative_position_bucket`` (bidirectional)::

    ret = 0
    ret += (n > 0).long() * half                       # gt, to(int64), mul, add 0
    m = torch.abs(n)
    is_small = m < exact
    large = exact + (torch.log(m.float() / exact) / math.log(max_distance / exact) * (half - exact)).to(torch.long)
    large = torch.min(large, torch.full_like(large, half - 1))
    ret += torch.where(is_small, m, large)

Recorded, that is sixteen calls, some thirty boxes with their copies and crossings, for each bucketing (three in
LayoutLMv3).  :func:`find_buckets` checks exactly that chain of calls — each operator, each number, the dtypes
converted to, the table of ``full_like`` all equal to the last bucket — every intermediate read only by the chain and
none an output of the model; then skips it and draws the one box, whose lowering runs the same float operations in the
same order and types (exact by construction: integers but for the float part, which is the model's own).  Its result
is ranged by the bucket count, so the bias tables read at it are gathers (the distances of box coordinates range past
the table).  Any other form (the causal bucket, another order, a number differing) is drawn as recorded.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from ncd.ir.axes import Segment
from ncd.ir.diagram import Box
from ncd.trace.capture import Node
from ncd.trace.registry import called

if TYPE_CHECKING:
    from ncd.trace.convert import Converter

__all__ = ["find_buckets"]


def _call(value: Any, name: str, arity: int) -> Node | None:
    """``value`` if it is a live call of ``name`` with ``arity`` positional arguments and no keywords."""
    if not (isinstance(value, Node) and value.kind == "call" and value.live and called(value) == name
            and len(value.args) == arity and not value.kwargs and not value.sized
            and isinstance(value.value, torch.Tensor)):
        return None
    return value


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _chain(out: Node) -> tuple[Node, list[Node], tuple[int, int, float, int, int]] | None:
    """For the final ``add`` of a bucketing: the distances, the calls of the chain (``out`` last) and the numbers
    ``half, exact, divisor, span, top``; None unless every call is exactly as T5 writes it."""
    if _call(out, "aten.add", 2) is None:
        return None
    a, w = out.args
    a, w = _call(a, "aten.add", 2), _call(w, "aten.where", 3)
    if a is None or w is None or a.args[1] != 0 or not _whole(a.args[1]):
        return None
    m = _call(a.args[0], "aten.mul", 2)
    s = _call(m.args[0], "aten.to", 2) if m is not None else None
    g = _call(s.args[0], "aten.gt", 2) if s is not None else None
    if m is None or s is None or g is None or s.args[1] is not torch.int64 or g.args[1] != 0 or not _whole(g.args[1]) \
            or not _whole(m.args[1]):
        return None
    n = g.args[0]
    small, absolute, k = w.args
    small, absolute, k = _call(small, "aten.lt", 2), _call(absolute, "aten.abs", 1), _call(k, "aten.min", 2)
    if small is None or absolute is None or k is None or absolute.args[0] is not n or small.args[0] is not absolute \
            or getattr(k.target, "_overloadname", "") != "other":
        return None
    exact = small.args[1]
    j, full = k.args
    j = _call(j, "aten.add", 2)
    i = _call(j.args[0], "aten.to", 2) if j is not None else None
    p = _call(i.args[0], "aten.mul", 2) if i is not None else None
    r = _call(p.args[0], "aten.div", 2) if p is not None else None
    log = _call(r.args[0], "aten.log", 1) if r is not None else None
    q = _call(log.args[0], "aten.div", 2) if log is not None else None
    f = _call(q.args[0], "aten.to", 2) if q is not None else None
    if j is None or i is None or p is None or r is None or log is None or q is None or f is None:
        return None
    if f.args[0] is not absolute or f.args[1] is not torch.float32 or i.args[1] is not torch.int64:
        return None
    divisor, span, half = r.args[1], p.args[1], m.args[1]
    if not (_whole(exact) and j.args[1] == exact and _whole(j.args[1]) and q.args[1] == exact and _whole(q.args[1])
            and isinstance(divisor, float) and _whole(span)):
        return None
    if not (isinstance(full, Node) and not full.live and isinstance(full.value, torch.Tensor)
            and full.value.dtype == torch.int64 and tuple(full.value.shape) == tuple(j.value.shape)
            and full.value.numel() > 0 and full.value.device.type != "meta"):
        return None
    top = int(full.value.reshape(-1)[0])
    if not bool((full.value == top).all()):
        return None
    if not (isinstance(n, Node) and n.live and isinstance(n.value, torch.Tensor)
            and n.value.dtype in (torch.int64, torch.int32) and out.value.dtype == torch.int64):
        return None
    if min(half, exact - 1, span, top) < 0 or not (math.isfinite(divisor) and divisor > 0):
        return None
    return n, [g, s, m, a, absolute, small, f, q, log, r, p, i, j, k, w, out], (half, exact, divisor, span, top)


def find_buckets(conv: Converter) -> dict[int, Any]:
    """Skip every bucketing of T5's kind (the module's docstring); returns the emitters of their results."""
    emitters: dict[int, Any] = {}
    outputs = {id(o) for o in conv.captured.outputs if isinstance(o, Node)}
    for node in conv.captured.nodes:
        if node.kind != "call" or not node.live or id(node) in conv.skip or called(node) != "aten.add":
            continue
        found = _chain(node)
        if found is None:
            continue
        distances, calls, numbers = found
        inside = {id(c) for c in calls}
        if any(id(c) in conv.skip for c in calls) or any(
                id(c) in outputs or any(id(u) not in inside for u in conv.consumers.get(id(c), []))
                for c in calls[:-1]):
            continue  # an intermediate read elsewhere: drawn as recorded
        conv.skip |= inside - {id(node)}
        emitters[id(node)] = _emitter(distances, calls, numbers)
    return emitters


def _emitter(distances: Node, calls: list[Node], numbers: tuple[int, int, float, int, int]) -> Any:
    def emit(conv: Converter, node: Node) -> None:
        from ncd.prims.integer import BucketOp
        from ncd.trace.attention import _convert_one

        mark = conv.mark()
        try:
            vid = conv.value(distances)
            seg = conv.segs[vid]
            if seg.dtype != "index" or seg.range is None:
                raise ValueError(f"distances drawn as '{seg}', not integers of a range")
            conv.bind(node, conv.apply(Box(BucketOp(Segment((), "index", seg.range), *numbers)), [vid]))
        except Exception:  # noqa: BLE001 - drawn as recorded (every call by its rule or opaque)
            conv.rollback(mark)
            for call in calls:
                _convert_one(conv, call)

    return emit
