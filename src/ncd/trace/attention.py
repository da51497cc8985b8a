"""Attention as the paper draws it: ``scaled_dot_product_attention`` and what models feed it.

* ``scaled_dot_product_attention`` is drawn as scores einsum, scale, mask, softmax on the key
  axis and value einsum; grouped-query attention as an inner broadcast (query heads
  ``h = (g r)``, keys and values lack ``r``).
* The key/value head expansion models write before it (``repeat_kv``: ``x[:, :, None]``
  expanded and merged into the heads, or ``repeat_interleave`` on the head axis) is read as
  grouped-query attention on ``x`` itself.  Exact by construction: the three recorded
  operations repeat head ``g`` at heads ``g·r … g·r+r-1``, which is how grouped-query
  attention shares a key/value head.
* A mask computed from an input (``attention_mask``, a padding mask) is read as a causal
  (or sliding-window, or no) mask and a :class:`~ncd.prims.attention.PaddingMaskOp` on that
  input, after the recorded operations that build it were re-run on the traced input and on
  random 0/1 masks and gave exactly ``structure & input[batch, key]`` every time; a float mask
  (added to the scores) likewise when it is ``0`` exactly there and ``-inf`` everywhere else,
  or ``0`` where the input is ``0`` (``nn.MultiheadAttention``'s ``key_padding_mask``, ``True``
  at the padded keys, made ``-inf`` there): the padding mask keeps the keys where the input is
  ``0`` then.  Adding ``0`` leaves a score as it is, and a row of ``-inf`` gives ``0`` in both.
* ``expand`` of a live value is a broadcast copy (:class:`~ncd.prims.derivative.ExpandOp`).

A pre-pass (:func:`prepare`) finds both readings before the walk and leaves the operations
they replace out of it; if the attention then cannot be drawn, those operations are drawn
as they were recorded and the attention becomes an opaque box over them (never a guess).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import sympy
import torch

from ncd.ir.axes import SCALAR, Segment, Type
from ncd.ir.diagram import Box
from ncd.prims.linear import EinsumOp
from ncd.prims.softmax import SoftmaxOp
from ncd.prims.structure import AddOp
from ncd.trace.capture import Node, refs
from ncd.trace.convert import RULES, Converter, Decline, op_name, rule
from ncd.trace.idioms import _live, _scale, _shape, _tensor, operand, relabel
from ncd.trace.live_masks import LiveMask, _read_mask
from ncd.trace.naming import PRIME

__all__ = ["prepare", "attention", "expand"]

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


# -- expand ------------------------------------------------------------------------------------------
def _batch_name(conv: Converter, size: int) -> str:
    """A new leading wire of the batch's size is the batch (a class token expanded over the examples)."""
    for vid in conv.inputs:
        axes = conv.segs[vid].axes
        if axes and axes[0].name == "b" and not axes[0].size.free_symbols and int(axes[0].size) == size:
            return "b"
    return conv.namer.fresh(size)


def _broadcast_name(conv: Converter, node: Node, at: int, size: int, taken: set[str]) -> str | None:
    """The name of the wire a new wire of an expansion is broadcast against: the wire at the same place of a live
    value its reader also reads, of the expansion's rank (a learned query expanded to ``stacked.shape[:-2]`` and read
    by the attention beside ``stacked``: the tokens ``t``, not the name every other wire of their size shares)."""
    rank = len(_shape(node))
    for reader in conv.consumers.get(id(node), ()):
        for other in refs((reader.args, reader.kwargs)):
            if other is node or not other.live or id(other) not in conv.values or not isinstance(other.value, torch.Tensor):
                continue
            names = conv.names(conv.values[id(other)])
            if len(names) == rank and int(other.value.shape[at]) == size and names[at] != "1" \
                    and names[at].rstrip(PRIME) not in {n.rstrip(PRIME) for n in taken}:
                return names[at]
    return None


@rule("aten.expand", "aten.expand_as", "aten.broadcast_to")
def expand(conv: Converter, node: Node) -> None:
    """A broadcast copy of a value (live, or a parameter or constant expanded like a live one: GPT-NeoX Japanese's
    ``attn_bias.expand_as(residual)``) along new or size-1 wires; ``torch.broadcast_to`` is the same call (Falcon's
    keys and values broadcast to the query heads)."""
    from ncd.prims.derivative import ExpandOp

    source = node.args[0]
    if not _tensor(source) or source.value.dtype != node.value.dtype:
        raise Decline("not a tensor of the same dtype")
    vid = conv.value(source)
    shape_in, shape_out = _shape(source), _shape(node)
    if shape_in == shape_out:
        conv.bind(node, vid)
        return
    names = conv.names(vid)
    lead = len(shape_out) - len(shape_in)
    if lead < 0:
        raise Decline("fewer wires")
    kept: list[str] = []
    kept_shape: list[int] = []
    out: list[str] = []
    taken = set(names)
    for j, size in enumerate(shape_out):
        i = j - lead
        if i >= 0 and shape_in[i] == size:
            out.append(names[i])
            kept.append(names[i])
            kept_shape.append(size)
            continue
        if i >= 0 and shape_in[i] != 1:
            raise Decline("expands a wire that is not of size 1")
        name = _batch_name(conv, size) if j == 0 else (_broadcast_name(conv, node, j, size, taken)
                                                         or conv.namer.fresh(size))
        while name in taken:
            name += PRIME
        taken.add(name)
        out.append(name)
    seg = conv.segs[vid]
    rng = None if seg.range is None else int(seg.range)
    src = conv.view(vid, kept, tuple(kept_shape))
    target = conv.namer.segment(out, shape_out, seg.dtype, rng)
    (result,) = conv.emit(Box(ExpandOp(conv.segs[src], target)), [src], [target])
    conv.bind(node, result)


# -- attention ---------------------------------------------------------------------------------------
@rule(SDPA)
def attention(conv: Converter, node: Node) -> None:
    """softmax(q kᵀ · scale + mask) v, drawn with the key axis renamed apart from the query axis.

    When the pre-pass left out the head expansion or the mask's operations and the attention cannot be drawn, they
    are drawn as recorded and the attention becomes an opaque box over them.
    """
    found = readings(conv)
    q, k, v = node.args[:3]
    mask = _mask_arg(node)
    rk, rv = found.repeats.get(id(k)), found.repeats.get(id(v))
    repeat = rk is not None and rv is not None and id(k) in found.skipped and id(v) in found.skipped
    live_mask = found.masks.get(id(mask)) if isinstance(mask, Node) and id(mask) in found.skipped \
        and id(mask) not in conv.values else None
    if not repeat and live_mask is None:
        _attention(conv, node, k, v, None)
        return
    mark = conv.mark()
    try:
        _attention(conv, node, rk.source if repeat and rk else k, rv.source if repeat and rv else v, live_mask,
                   forced_gqa=repeat)
    except Exception as error:  # noqa: BLE001 - drawn as recorded: the replaced operations, then an opaque attention
        conv.rollback(mark)
        conv.declined(node, "ncd.trace.attention (grouped heads or a live mask)", error)
        for n in ((rk.nodes + rv.nodes) if repeat and rk and rv else []) + (live_mask.nodes if live_mask else []):
            _convert_one(conv, n)
        conv.opaque(node)


def _convert_one(conv: Converter, n: Node) -> None:
    if id(n) in conv.values:
        return
    conv.current = n
    fn = RULES.get(op_name(n.target)[0])
    if fn is not None:
        mark = conv.mark()
        try:
            fn(conv, n)
            return
        except Exception as error:  # noqa: BLE001 - as the walk does: an opaque box
            conv.rollback(mark)
            conv.declined(n, f"{fn.__module__}.{fn.__qualname__}", error)
    conv.opaque(n)


def _attention(conv: Converter, node: Node, k: Node, v: Node, live_mask: LiveMask | None,
               forced_gqa: bool = False) -> None:
    q = node.args[0]
    extra = list(node.args[3:]) + [None] * 4
    mask = node.kwargs.get("attn_mask", extra[0])
    dropout = node.kwargs.get("dropout_p", extra[1] or 0.0)
    causal = node.kwargs.get("is_causal", extra[2] or False)
    scale = node.kwargs.get("scale", extra[3])
    gqa = node.kwargs.get("enable_gqa", False) or forced_gqa
    if dropout or not all(_live(t) for t in (q, k, v)):
        raise Decline("dropout or constant operands")
    vq, vk, vv = conv.value(q), conv.value(k), conv.value(v)
    nq = conv.names(vq)
    groups = 1
    merged: list[str] = []
    full_v = False  # values carry every query head (grouped keys only)
    if gqa and len(nq) >= 3 and _shape(q)[-3] != _shape(k)[-3]:
        # grouped-query attention: query heads h = (g r), g the key/value heads, each shared by r query heads
        heads, kv_heads = _shape(q)[-3], _shape(k)[-3]
        if heads % kv_heads or _shape(q)[:-3] != _shape(k)[:-3]:
            raise Decline("query heads are not a multiple of the key/value heads")
        groups = heads // kv_heads
        g = conv.names(vk)[-3]
        if g in nq:
            g = conv.namer.fresh(kv_heads, "g")
        while g in nq:
            g += PRIME
        r = conv.namer.fresh(groups, "r")
        while r in nq or r == g:
            r += PRIME
        merged = nq
        vq = conv.view(vq, nq[:-3] + [g, r] + nq[-2:], _shape(q)[:-3] + (kv_heads, groups) + _shape(q)[-2:])
        nq = conv.names(vq)
        if _shape(k)[:-1] != _shape(v)[:-1]:
            # values with the queries' heads (SDPA repeats each operand to the queries' heads on its own): h = (g r)
            if _shape(v)[:-3] != _shape(k)[:-3] or _shape(v)[-3] != heads or _shape(v)[-2] != _shape(k)[-2]:
                raise Decline("broadcast attention")
            full_v = True
    elif len(nq) < 2 or len(_shape(q)) != len(_shape(k)) or _shape(k)[:-1] != _shape(v)[:-1] or any(
            a != b and b != 1 for a, b in zip(_shape(q)[:-2], _shape(k)[:-2])):
        raise Decline("broadcast attention")
    kept = [p for p, (a, b) in enumerate(zip(_shape(q)[:-2], _shape(k)[:-2])) if a == b or groups > 1]
    if len(kept) < len(nq) - 2:  # one key/value head (or batch entry) for all the queries' (multi-query): woven past
        vk, vv = (conv.view(vid, [conv.names(vid)[p] for p in kept] + conv.names(vid)[-2:],
                            tuple(_shape(t)[p] for p in kept) + _shape(t)[-2:]) for vid, t in ((vk, k), (vv, v)))
    batch, y, d = nq[:-2], nq[-2], nq[-1]
    x = conv.names(vk)[-2].rstrip(PRIME)
    while x in nq:
        x += PRIME
    dv = conv.names(vv)[-1]
    if dv in batch + [y, x]:
        dv = d if _shape(v)[-1] == _shape(q)[-1] else dv + PRIME
    kv_batch = batch[:-1] if groups > 1 else [batch[p] for p in kept]  # grouped: keys and values lack the r wire
    vk = relabel(conv, vk, kv_batch + [x, d])
    if full_v:  # h = (g r), as the queries
        vv = conv.view(vv, batch + [x, dv], tuple(int(a.size) for a in conv.segs[vq].axes[:-2]) + _shape(v)[-2:])
    else:
        vv = relabel(conv, vv, kv_batch + [x, dv])
    scores_seg = Segment(tuple(conv.segs[vq].axes[:-1]) + (conv.segs[vk].axes[-2],))
    padding = None if live_mask is None else _padding_wire(conv, scores_seg, live_mask)  # before the scores: fusable
    (s,) = conv.emit(Box(EinsumOp(Type((conv.segs[vq], conv.segs[vk])), scores_seg)), [vq, vk], [scores_seg])
    factor = scale if scale is not None else 1.0 / math.sqrt(_shape(q)[-1])
    s = _scale(conv, s, float(factor), [d])
    shape = tuple(int(a.size) for a in scores_seg.axes)
    names = list(scores_seg.names)
    additive = None
    if causal:
        n_y, n_x = shape[-2], shape[-1]
        additive = torch.zeros(n_y, n_x).masked_fill(~torch.ones(n_y, n_x, dtype=torch.bool).tril(), float("-inf"))
    if live_mask is not None:
        structure = torch.zeros(live_mask.structure.shape).masked_fill(~live_mask.structure, float("-inf"))
        additive = structure if additive is None else additive + structure
    elif isinstance(mask, Node) and _tensor(mask) and _live(mask):
        # a bias or a mask computed by the model (T5's relative positions, SAM's, a sparse indexer's selection):
        # added to the scores (a float mask), or -inf where a boolean mask is False — what SDPA does with it
        vm = _grouped_operand(conv, mask, names, shape) if groups > 1 else operand(conv, mask, names, shape)
        if mask.value.dtype == torch.bool:
            from ncd.prims.attention import PaddingMaskOp

            s = conv.apply(Box(PaddingMaskOp(conv.segs[s].axes[-1])), [s, vm])
        elif mask.value.is_floating_point():  # a row the mask makes all -inf is 0, as in SDPA: a padding mask of the
            from ncd.prims.attention import PaddingMaskOp  # finite entries says so to the softmax (values unchanged)
            from ncd.prims.gather import CompareOp

            s = conv.apply(Box(AddOp(2)), [s, vm])
            finite = conv.apply(Box(CompareOp(">", float("-inf"), SCALAR)), [vm])
            s = conv.apply(Box(PaddingMaskOp(conv.segs[s].axes[-1])), [s, finite])
        else:
            raise Decline(f"a {mask.value.dtype} mask")
        if list(conv.segs[s].names) != names:
            raise Decline("mask does not line up")
    elif mask is not None:
        m = mask.value if isinstance(mask, Node) else torch.as_tensor(mask)
        m = torch.zeros(m.shape).masked_fill(~m, float("-inf")) if m.dtype == torch.bool else m.to(node.value.dtype)
        if groups > 1:
            if m.dim() >= 3 and m.shape[-3] != 1:
                raise Decline("a mask per query head under grouped-query attention")
            m = m.unsqueeze(-3)
        additive = m if additive is None else additive + m
    window = _causal_window(additive) if additive is not None else None
    if additive is not None and (_is_causal(additive) or window):  # ◸ (with a sliding window): no table, any length
        from ncd.prims.attention import CausalMaskOp

        axes = conv.segs[s].axes
        s = conv.apply(Box(CausalMaskOp(axes[-2], axes[-1], None if window is None else sympy.Integer(window))), [s])
    elif additive is not None and live_mask is not None and tuple(additive.shape[-2:]) == shape[-2:] \
            and bool((additive <= -1e30).any()) and _is_causal(additive, lower_right=True):
        # a decoding step's queries after cached keys, the diagonal ending at the last query and key: ◸↘ (a table of
        # the scores' own queries and keys that blocks something: one row broadcast over the queries is no such table)
        from ncd.prims.attention import CausalMaskOp

        axes = conv.segs[s].axes
        s = conv.apply(Box(CausalMaskOp(axes[-2], axes[-1], None, True)), [s])
    elif additive is not None and live_mask is not None:
        if not bool((additive == 0).all()):
            raise Decline("a mask that is neither causal nor none, and a padding mask")
    elif additive is not None:
        vm = operand(conv, Node("mask", "constant", value=additive, source="mask"), names, shape)
        s = conv.apply(Box(AddOp(2)), [s, vm])
        if list(conv.segs[s].names) != names:
            raise Decline("mask does not line up")
        if additive.numel() and bool(torch.isneginf(additive).all(-1).any()):
            # a query the mask lets see no key: 0, as in SDPA (the softmax of a row of -inf is NaN): a padding mask of
            # the finite entries says so to the softmax, as for a mask the model computes (values unchanged)
            from ncd.prims.attention import PaddingMaskOp
            from ncd.prims.gather import CompareOp

            finite = conv.apply(Box(CompareOp(">", float("-inf"), SCALAR)), [vm])
            s = conv.apply(Box(PaddingMaskOp(conv.segs[s].axes[-1])), [s, finite])
    if padding is not None:
        from ncd.prims.attention import PaddingMaskOp

        s = conv.apply(Box(PaddingMaskOp(conv.segs[s].axes[-1])), [s, padding])
    s = conv.apply(Box(SoftmaxOp(conv.segs[s].axes[-1])), [s])
    out_seg = Segment(tuple(conv.segs[vq].axes[:-1]) + (conv.segs[vv].axes[-1],))
    (o,) = conv.emit(Box(EinsumOp(Type((conv.segs[s], conv.segs[vv])), out_seg)), [s, vv], [out_seg])
    if groups > 1:  # the query heads again: (g r) -> h
        o = conv.view(o, merged[:-1] + [conv.names(o)[-1]], _shape(node))
    conv.bind(node, o)


def _grouped_operand(conv: Converter, mask: Node, names: list[str], shape: tuple[int, ...]) -> int:
    """A mask laid out over the query heads ``h`` read on grouped scores ``… g r y x`` (``h = (g r)``, the key/value
    head ``g`` outermost, as ``repeat_kv`` repeats it), its broadcast size-1 wires dropped."""
    ms = tuple(int(n) for n in mask.value.shape)
    if len(ms) >= 3:
        heads = ms[-3]
        if heads not in (1, shape[-4] * shape[-3]):
            raise Decline(f"a mask over {heads} heads on {shape[-4]} x {shape[-3]} grouped query heads")
        ms = ms[:-3] + ((shape[-4], shape[-3]) if heads != 1 else (1, 1)) + ms[-2:]
    if len(ms) > len(shape):
        raise Decline("a mask with more axes than the scores")
    tail, tail_shape = names[len(names) - len(ms):], shape[len(shape) - len(ms):]
    if any(m not in (1, o) for m, o in zip(ms, tail_shape)):
        raise Decline("the mask does not broadcast to the scores")
    keep = [not (m == 1 and o != 1) for m, o in zip(ms, tail_shape)]
    return conv.view(conv.value(mask), [n for n, k in zip(tail, keep) if k], tuple(m for m, k in zip(ms, keep) if k))


def _padding_wire(conv: Converter, scores: Segment, live_mask: LiveMask) -> int:
    """The mask input as booleans on the scores' first and key wires (``b x``): where the scores are kept."""
    vid = readings(conv).cast.get((id(live_mask.input), live_mask.negated))
    if vid is None:
        raise Decline("the mask input is not bound")
    seg = conv.segs[vid]
    first, key = scores.axes[0], scores.axes[-1]
    if int(first.size) != int(seg.axes[0].size) or int(key.size) != int(seg.axes[1].size):
        raise Decline("the padding mask does not line up with the scores")
    return conv.view(vid, [first.name, key.name], (int(first.size), int(key.size)))


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


def _causal_window(additive: torch.Tensor) -> int | None:
    """``w`` if the additive mask is causal with a sliding window of ``w`` (query ``i`` sees keys ``i-w+1 … i``) on
    its last two axes, with ``1 < w < n`` (the window cuts something off); else ``None``."""
    if additive.dim() < 2 or additive.shape[-1] != additive.shape[-2] or additive.device.type == "meta":
        return None
    n = additive.shape[-1]
    blocked = additive <= -1e30
    first = blocked[..., -1, :]  # the last query sees exactly its window
    seen = int((~first).reshape(-1, n)[0].sum())
    if not 1 < seen < n:
        return None
    band = torch.ones(n, n, dtype=torch.bool)
    outside = ~band.tril() | band.tril(-seen)
    if bool((blocked == outside.expand_as(blocked)).all()) and bool((additive.masked_fill(outside, 0) == 0).all()):
        return seen
    return None


def _is_causal(additive: torch.Tensor, lower_right: bool = False) -> bool:
    """An additive mask that is the causal one on its last two axes (0 on and below the diagonal, ≤ -1e30 above);
    ``lower_right``: instead, with fewer queries ``y`` than keys ``x``, the diagonal ending at the last query and key
    (``~ones(y, x).tril(x - y)`` blocked: queries after ``x - y`` cached keys)."""
    if additive.dim() < 2 or additive.device.type == "meta":
        return False
    rows, n = additive.shape[-2], additive.shape[-1]
    if (rows >= n) if lower_right else (rows != n):
        return False
    above = ~torch.ones(rows, n, dtype=torch.bool).tril(n - rows)
    blocked = additive <= -1e30
    return bool((blocked == above.expand_as(blocked)).all()) and bool((additive.masked_fill(above, 0) == 0).all())
