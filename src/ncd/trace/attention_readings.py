"""The pre-pass of :mod:`ncd.trace.attention`: what models feed attention, found before the walk.

* The key/value head expansion before it (``repeat_kv``: ``x[:, :, None]`` expanded and merged into the heads, or
  ``repeat_interleave`` on the head axis) is read as grouped-query attention on ``x`` itself (:class:`Repeat`).
* A mask computed from an input is read as its structure and a padding mask on that input
  (:func:`ncd.trace.live_masks._read_mask`); the input is read as booleans once, before everything.

:func:`prepare` leaves the operations these readings replace out of the walk when nothing else reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ncd.ir.axes import Segment
from ncd.ir.diagram import Box
from ncd.trace.capture import Node
from ncd.trace.convert import Converter, op_name
from ncd.trace.idioms import _live, _shape, _tensor
from ncd.trace.live_masks import LiveMask, _read_mask

__all__ = ["prepare", "readings", "Readings", "Repeat", "SDPA"]

SDPA = "aten.scaled_dot_product_attention"
RESHAPES = ("aten.view", "aten.reshape", "aten._unsafe_view")


@dataclass
class Repeat:
    """``node`` is ``source`` with each head (axis -3) repeated ``times`` times, consecutively."""

    source: Node
    times: int
    nodes: list[Node]  # the recorded operations that do it, in order


@dataclass
class Readings:
    repeats: dict[int, Repeat] = field(default_factory=dict)
    masks: dict[int, LiveMask] = field(default_factory=dict)
    skipped: set[int] = field(default_factory=set)
    cast: dict[tuple[int, bool], int] = field(default_factory=dict)  # (input node id, negated) -> the keys kept


def readings(conv: Converter) -> Readings:
    found = conv.__dict__.get("_attention_readings")
    return found if isinstance(found, Readings) else Readings()


# -- the pre-pass ----------------------------------------------------------------------------------
def prepare(conv: Converter) -> None:
    """Find head expansions and input masks feeding attention; skip the operations they replace."""
    found = Readings()
    calls = [n for n in conv.captured.nodes if n.kind == "call" and n.live and op_name(n.target)[0] == SDPA]
    read: list[tuple[list[Any], LiveMask]] = []  # the masks read so far, each with its recipe (every layer's own)
    for node in calls:
        q, k, v = node.args[:3]
        rk, rv = _repeat_of(k), _repeat_of(v)
        if rk is not None and rv is not None and rk.times == rv.times and _gqa_fits(q, rk.source, rv.source):
            found.repeats[id(k)], found.repeats[id(v)] = rk, rv
        mask = _mask_arg(node)
        if isinstance(mask, Node) and mask.live and id(mask) not in found.masks:
            reading = _read_mask(conv, mask, read)
            if reading is not None:
                found.masks[id(mask)] = reading
    users = {id(n) for n in calls}
    replaced: list[Node] = [n for r in found.repeats.values() for n in r.nodes]
    replaced += [n for m in found.masks.values() for n in m.nodes]
    candidates = {id(n) for n in replaced}
    # an operation is left out only when everything that reads it is left out too, or is the attention
    changed = True
    while changed:
        changed = False
        for n in replaced:
            if id(n) in candidates and any(id(c) not in candidates and id(c) not in users
                                           for c in conv.consumers.get(id(n), [])):
                candidates.discard(id(n))
                changed = True
        for n in replaced:
            if id(n) in candidates and any(o is n for o in conv.captured.outputs):
                candidates.discard(id(n))
                changed = True
    found.skipped = candidates
    conv.skip |= candidates
    for reading in found.masks.values():  # the input read as booleans once, before everything (layers stay alike)
        key = (id(reading.input), reading.negated)
        if key not in found.cast and id(reading.input) in conv.values:
            found.cast[key] = _as_bool(conv, conv.values[id(reading.input)], reading.negated)
    conv.__dict__["_attention_readings"] = found


def _mask_arg(node: Node) -> Any:
    extra = list(node.args[3:]) + [None]
    return node.kwargs.get("attn_mask", extra[0])


def _repeat_of(node: Any) -> Repeat | None:
    """``x[..., :, None, :, :].expand(..., g, r, t, d).reshape(..., g·r, t, d)`` or ``repeat_interleave(x, r, -3)``."""
    if not (isinstance(node, Node) and node.kind == "call" and node.live and _tensor(node)):
        return None
    name = op_name(node.target)[0]
    if name == "aten.repeat_interleave":
        x = node.args[0]
        repeats = node.args[1] if len(node.args) > 1 else node.kwargs.get("repeats")
        dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim")
        if not (_live(x) and _tensor(x) and isinstance(repeats, int) and isinstance(dim, int)) or x.value.dim() < 3:
            return None
        shape = _shape(x)
        if dim % len(shape) != len(shape) - 3 or _shape(node) != shape[:-3] + (shape[-3] * repeats,) + shape[-2:]:
            return None
        return Repeat(x, repeats, [node])
    if name not in RESHAPES:
        return None
    grown = node.args[0]
    if not (isinstance(grown, Node) and grown.kind == "call" and op_name(grown.target)[0] == "aten.expand"):
        return None
    inserted = grown.args[0]
    if not (isinstance(inserted, Node) and inserted.kind == "call" and op_name(inserted.target)[0] == "aten.unsqueeze"):
        return None
    x = inserted.args[0]
    if not (_live(x) and _tensor(x)) or x.value.dim() < 3 or x.value.dtype != node.value.dtype:
        return None
    shape = _shape(x)
    n = len(shape)
    if inserted.args[1] % (n + 1) != n - 2:
        return None
    times = _shape(grown)[n - 2]
    if _shape(grown) != shape[:-2] + (times,) + shape[-2:] or _shape(node) != shape[:-3] + (shape[-3] * times,) + shape[-2:]:
        return None
    return Repeat(x, times, [inserted, grown, node])


def _gqa_fits(q: Any, k: Node, v: Node) -> bool:
    if not all(_live(t) and _tensor(t) for t in (q, k, v)) or q.value.dim() < 3:
        return False
    sq, sk, sv = _shape(q), _shape(k), _shape(v)
    return sq[:-3] == sk[:-3] and sk[:-1] == sv[:-1] and sq[-3] % sk[-3] == 0 and sq[-1] == sk[-1]



def _as_bool(conv: Converter, vid: int, negated: bool = False) -> int:
    """The value as booleans (``negated``: where it is ``0``)."""
    from ncd.prims.gather import CastOp
    from ncd.prims.selection import LogicOp

    seg = conv.segs[vid]
    saved, conv.stack = conv.stack, ()
    try:
        if seg.dtype != "bool":
            vid = conv.apply(Box(CastOp(Segment((), seg.dtype, seg.range), Segment((), "bool"))), [vid])
        return conv.apply(Box(LogicOp("not")), [vid]) if negated else vid
    finally:
        conv.stack = saved
