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
* ``expand`` of a live value is a broadcast copy (:class:`~ncd.prims.derivative.ExpandOp`, :mod:`ncd.trace.expansion`).

A pre-pass (:func:`prepare`, in :mod:`ncd.trace.attention_readings`) finds both readings before the walk and leaves the operations
they replace out of it; if the attention then cannot be drawn, those operations are drawn
as they were recorded and the attention becomes an opaque box over them (never a guess).
"""

from __future__ import annotations

import math

import sympy
import torch

from ncd.ir.axes import SCALAR, Segment, Type
from ncd.ir.diagram import Box
from ncd.prims.linear import EinsumOp
from ncd.prims.softmax import SoftmaxOp
from ncd.prims.structure import AddOp
from ncd.trace.attention_readings import (  # noqa: F401 - the pre-pass; its names are still answered here
    RESHAPES,
    SDPA,
    Readings,
    Repeat,
    _as_bool,
    _gqa_fits,
    _mask_arg,
    _repeat_of,
    prepare,
    readings,
)
from ncd.trace.capture import Node
from ncd.trace.convert import RULES, Converter, Decline, op_name, rule
from ncd.trace.expansion import _batch_name, _broadcast_name, expand  # noqa: F401 - registers the expand rule
from ncd.trace.idioms import _live, _scale, _shape, _tensor, operand, relabel
from ncd.trace.live_masks import LiveMask
from ncd.trace.naming import PRIME

__all__ = ["prepare", "attention", "expand", "readings", "Readings", "Repeat", "SDPA"]


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
