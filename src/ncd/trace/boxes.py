"""Conversion rules for ATen operators that have a primitive of their own beyond the core idioms.

``roll``, ``pad`` (constant, reflect, replicate), ``cumsum``, ... each become their box (see
the family modules :mod:`ncd.prims.padding`, :mod:`ncd.prims.cumulative`, ...), named on the
wires they act on; the other wires are woven past them.  A call whose arguments the box
cannot express exactly declines (:class:`~ncd.trace.convert.Decline`) and stays opaque.

Registered by :func:`ncd.trace.idioms.load_rules` (one import line).
"""

from __future__ import annotations

from typing import Any

import torch

from ncd.ir.axes import Segment
from ncd.ir.diagram import Box
from ncd.trace.capture import Node
from ncd.trace.convert import Converter, Decline, rule
from ncd.trace.naming import PRIME

__all__: list[str] = []


def _live_float(conv: Converter, x: Any) -> int:
    """The value id of a live float tensor argument (else the call stays opaque)."""
    if not (isinstance(x, Node) and x.live and isinstance(x.value, torch.Tensor) and x.value.is_floating_point()):
        raise Decline("not a live float tensor")
    return conv.value(x)


def _dims(conv: Converter, vid: int, dims: Any) -> list[int]:
    n = len(conv.segs[vid].axes)
    values = [dims] if isinstance(dims, int) else list(dims)
    if not values or any(not isinstance(d, int) or not -n <= d < n for d in values):
        raise Decline(f"dims {dims!r}")
    out = [d % n for d in values]
    if len(set(out)) != len(out):
        raise Decline("repeated dims")
    return out


def _own(conv: Converter, vid: int, dims: list[int]) -> Segment:
    seg = conv.segs[vid]
    return Segment(tuple(seg.axes[d] for d in dims), seg.dtype, seg.range)


def _same_wires(conv: Converter, node: Node, vid: int) -> None:
    """Bind ``node`` to ``vid`` if it has the node's shape (a box that keeps its wires)."""
    if tuple(int(a.size) for a in conv.segs[vid].axes) != tuple(int(s) for s in node.value.shape):
        raise Decline("shape")
    conv.bind(node, vid)


def _renamed(conv: Converter, seg: Segment, changed: Segment) -> Segment:
    """Axes of ``seg`` that changed size (``changed``) under names of their own, derived from the old ones."""
    others = set(seg.names) - set(changed.names)
    names = []
    for a in changed:
        name = conv.namer.claim(a.name.rstrip("0123456789" + PRIME), int(a.size), "item" if a.is_item else "feature")
        while name in others or name in names:
            name += PRIME
        names.append(name)
    return conv.namer.segment(names, tuple(int(a.size) for a in changed))


# -- roll, pad ---------------------------------------------------------------------------------
@rule("aten.roll")
def roll(conv: Converter, node: Node) -> None:
    from ncd.prims.padding import RollOp

    x, shifts = node.args[:2]
    dims = node.args[2] if len(node.args) > 2 else node.kwargs.get("dims", ())
    vid = _live_float(conv, x)
    if isinstance(dims, int):
        dims = [dims]
    shifts = [shifts] if isinstance(shifts, int) else list(shifts)
    if not dims or len(shifts) != len(dims) or any(not isinstance(s, int) for s in shifts):
        raise Decline("a roll of the flattened tensor")  # torch.roll without dims
    own = _dims(conv, vid, dims)
    order = sorted(range(len(own)), key=lambda k: own[k])  # the box's axes in the tensor's order
    box = Box(RollOp(_own(conv, vid, [own[k] for k in order]), tuple(int(shifts[k]) for k in order)))
    _same_wires(conv, node, conv.apply(box, [vid]))


@rule("aten.pad", "aten.constant_pad_nd", "aten.reflection_pad1d", "aten.reflection_pad2d", "aten.reflection_pad3d",
      "aten.replication_pad1d", "aten.replication_pad2d", "aten.replication_pad3d")
def pad(conv: Converter, node: Node) -> None:
    from ncd.prims.padding import PadOp

    name = node.target.name().split("::")[1].split(".")[0]
    x, amounts = node.args[:2]
    extra = list(node.args[2:])
    if name == "pad":
        mode = extra[0] if extra else node.kwargs.get("mode", "constant")
        value = extra[1] if len(extra) > 1 else node.kwargs.get("value", None)
    else:
        mode = "constant" if name == "constant_pad_nd" else "reflect" if "reflection" in name else "replicate"
        value = extra[0] if extra else node.kwargs.get("value", None)
    vid = _live_float(conv, x)
    seg = conv.segs[vid]
    amounts = [int(a) for a in amounts]
    n = len(amounts) // 2
    if len(amounts) % 2 or not 0 < n <= len(seg.axes) or mode not in ("constant", "reflect", "replicate"):
        raise Decline(f"padding {amounts} in mode {mode!r}")
    before = tuple(amounts[2 * k] for k in reversed(range(n)))
    after = tuple(amounts[2 * k + 1] for k in reversed(range(n)))
    keep = [k for k in range(n) if before[k] or after[k]]
    if not keep:
        _same_wires(conv, node, vid)
        return
    axes = Segment(seg.axes[len(seg.axes) - n:])
    try:
        prim = PadOp(Segment(tuple(axes.axes[k] for k in keep)), tuple(before[k] for k in keep),
                     tuple(after[k] for k in keep), mode, float(value or 0.0))
        out = _renamed(conv, seg, prim.padded())
        prim = PadOp(prim.axes, prim.before, prim.after, prim.mode, prim.value, out)
    except Exception as error:  # noqa: BLE001 - a pad the box refuses stays opaque
        raise Decline(str(error)) from None
    _same_wires(conv, node, conv.apply(Box(prim), [vid]))


# -- cumulative sums ---------------------------------------------------------------------------
@rule("aten.cumsum")
def cumsum(conv: Converter, node: Node) -> None:
    from ncd.prims.cumulative import CumSumOp

    x, dim = node.args[:2]
    dtype = node.args[2] if len(node.args) > 2 else node.kwargs.get("dtype")
    if not (isinstance(x, Node) and x.live and isinstance(x.value, torch.Tensor)):
        raise Decline("not live")
    vid = conv.value(x)
    seg = conv.segs[vid]
    floating = x.value.is_floating_point()
    if dtype is not None and dtype != x.value.dtype or floating != node.value.is_floating_point():
        raise Decline("a cumulative sum that changes dtype")
    if not floating and node.value.dtype != torch.long:
        raise Decline("an integer sum of another width")
    (d,) = _dims(conv, vid, dim)
    source = Segment((seg.axes[d],), seg.dtype, seg.range)
    prim = CumSumOp(source)
    if seg.dtype == "float":
        _same_wires(conv, node, conv.apply(Box(prim), [vid]))
        return
    # an integer running sum: its range is the bound of the sum; read the other wires with it too
    target = prim.target()
    whole = Segment(seg.axes, "index", target.range)
    box = Box(prim)
    woven = conv.apply(box, [vid])
    if not conv.segs[woven].same(whole):
        raise Decline("the sum's wires")
    _same_wires(conv, node, woven)
