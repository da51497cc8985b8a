"""The attention pattern: softmax-then-contract attention that SDPA computes, and where it is found.

:func:`attention_of` checks a chain of boxes — as the lowered program's steps hold them (the rewrite
``ncd.torch.fusion.fuse_attention``) or as a diagram's parts do (:func:`recognise_attention`) — in
the paper's wiring::

    (Einsum("y k h, x k h -> y x h") >> Scale(c) >> [CausalMask | PaddingMask] >> Softmax("x") >> [Dropout(p)])
        @ Identity("x k h")
    >> Einsum("y x h, x k h -> y k h")

with any axis names and any woven (broadcast) axes, possibly spread over several parts each
of the form ``scores-part @ Identity(V)``.  Every box is checked *by axis name* on the full
(woven) types: the first einsum must contract only axes shared by Q and K, the softmax must
run over the single key axis ``x`` (present in K, absent from Q), the second einsum must
contract exactly ``x`` against V, and masks must act on the query/key axes.  Axes in both
Q and K become SDPA's batch dimensions, Q-only axes its query length ``L`` (bound together
if several, so a K shared across heads — multi-query attention — fuses too), contracted
axes its ``E`` and V-only axes its ``Ev``.  Anything else returns ``None``.

Code generation lowers the boxes one by one and then rewrites the steps the program's dataflow shows to
be this pattern into one ``F.scaled_dot_product_attention`` (``ncd.torch.fusion``), on bound or symbolic
sizes alike; ``ncd.cost`` costs the rewritten program.  The diagram's reading chooses the layouts of the
learned maps around an attention before they are lowered (:func:`chosen_rows`, :func:`chosen_columns`).
Use :func:`disabled` to lower and cost without fusion.

>>> import ncd
>>> scores = ncd.Einsum("y k, x k -> y x") >> ncd.Scale("k**-0.5") >> ncd.Softmax("x")
>>> d = (scores @ ncd.Identity.of("x k")) >> ncd.Einsum("y x, x k -> y k")
>>> length, found = recognise_attention(d.parts, 0)
>>> length, found.key, found.query, found.scale
(2, 'x', ['y'], 1/sqrt(k))
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import sympy

from ncd.ir.axes import Axis, Segment, Type
from ncd.ir.diagram import Block, Box, Diagram, Identity, Par, Seq, Weave, unweave
from ncd.prims.attention import CausalMaskOp, PaddingMaskOp
from ncd.prims.elementwise import ScaleOp
from ncd.prims.linear import EinsumOp
from ncd.prims.regularization import DropoutOp
from ncd.prims.softmax import SoftmaxOp
from ncd.prims.structure import AddOp

__all__ = ["Attention", "recognise_attention", "attention_of", "disabled", "ENABLED", "packs", "chosen_rows", "chosen_columns"]

#: Set to False (or use :func:`disabled`) to lower and cost attention box by box.
ENABLED = True


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Lower (and cost) without attention fusion inside this ``with`` block."""
    global ENABLED
    before, ENABLED = ENABLED, False
    try:
        yield
    finally:
        ENABLED = before


def _chain(d: Diagram) -> list[Box] | None:
    """The boxes acting on the scores, in order, if ``d`` is a plain chain (mask wires may run beside)."""
    d = unweave(d)[0]
    if isinstance(d, Box):
        return [d]
    if isinstance(d, Seq):
        boxes: list[Box] = []
        for part in d.parts:
            inner = _chain(part)
            if inner is None:
                return None
            boxes += inner
        return boxes
    if isinstance(d, Par) and len(d.parts) == 2 and _is_wire(d.parts[1], "bool"):
        return _chain(d.parts[0])
    return None


def _is_wire(d: Diagram, dtype: str) -> bool:
    d = unweave(d)[0]
    return isinstance(d, Identity) and len(d.type) == 1 and d.type[0].dtype == dtype


@dataclass
class Attention:
    """A recognised attention pattern, by axis name."""

    q: list[str]
    k: list[str]
    v: list[str]
    mask: list[str] | None
    out: list[str]
    batch: list[str]
    query: list[str]
    key: str
    contracted: list[str]
    value: list[str]
    #: the product of the scales before the softmax (a number once sizes are bound)
    scale: sympy.Expr
    causal: bool
    dropout: float
    sizes: dict[str, sympy.Expr]
    out_axes: tuple[Axis, ...]
    #: storage order of the operands (0: Q, 1: K, -1: V) whose learned map stores its rows in the order
    #: SDPA reads (:func:`chosen_rows`); the others are stored in their declared order
    stored: dict[int, list[str]] = field(default_factory=dict)
    #: grouped-query attention: the key/value heads' axis (the last batch axis) when the queries are a group axis
    #: then positions (``b g r t k`` against ``b g t' k``): SDPA runs with ``enable_gqa`` on the query heads ``(g r)``,
    #: as a model calling it so does (causal too); ``None``: the query axes are packed into one
    gqa: str | None = None
    #: the axes of a float mask added to the scaled scores (SDPA's float ``attn_mask``: T5's position bias)
    bias: list[str] | None = None

    def operands(self) -> list[tuple[int, list[str], list[str]]]:
        """``(index, declared axes, the order SDPA reads)`` of Q, K and V."""
        return [(0, self.q, self.batch + self.query + self.contracted), (1, self.k, self.batch + [self.key] + self.contracted),
                (-1, self.v, self.batch + [self.key] + self.value)]


def packs(have: Sequence[str], target: Sequence[str]) -> bool:
    """Whether the fused attention packs an operand densely (``.contiguous()``) after arranging it.

    Arranging an operand from ``have`` into the ``target`` order is a view; when it moves the
    operand's last axis (its contiguous one) away from the end, SDPA would read a strided last
    dimension, several times slower on CPU than packing it first (``benchmarks/bench_lowering.py``).
    Lowering and costs both ask this function.
    """
    present = [t for t in target if t in have]
    return bool(present) and present[-1] != have[-1]


def chosen_rows(parts: Sequence[Diagram], k: int) -> dict[int, tuple[str, ...]]:
    """The layouts chosen for the learned maps of ``parts[k]`` that feed an attention at ``parts[k + 1]``.

    A map whose output axes are declared ``k h`` while SDPA reads ``h … k`` would force a copy of
    its output (:func:`packs`); it stores its weight's rows in ``h k`` order instead, so that its
    output, seen in the declared order, is a view whose last dimension SDPA reads densely.  Returns
    ``{id(box): output axes in stored order}``; lowering and costs both ask this function.

    >>> import ncd
    >>> q = ncd.Linear("m -> k h", name="Q")
    >>> scores = ncd.Einsum("t k h, x k h -> h t x") >> ncd.Softmax("x")
    >>> attend = (scores @ ncd.Identity.of("x k h")) >> ncd.Einsum("h t x, x k h -> t k h")
    >>> d = (q.weave("t") @ ncd.Identity.of("x k h") @ ncd.Identity.of("x k h")) >> attend
    >>> list(chosen_rows(d.parts, 0).values())
    [('h', 'k')]
    """
    if k + 1 >= len(parts):
        return {}
    found = recognise_attention(parts, k + 1)
    attention = found[1] if found is not None else _opening(parts[k + 1])
    if attention is None:
        return {}
    return {id(box): tuple(order) for _, box, order in _choices(_closing(parts[k]), attention)}


def chosen_columns(parts: Sequence[Diagram], k: int) -> dict[int, tuple[str, ...]]:
    """The layout chosen for the learned map ``parts[k]`` when it reads the output of an attention ending just before.

    SDPA writes its output with the heads before the values (``y h k`` for a query stored so, as the
    projections' chosen rows store it); a map declared ``k h -> m`` would flatten ``k h``, a copy, so it
    stores its weight's columns in ``h k`` order and reads a view.  The attention may end the block before
    (the gallery's ``ScaledDotProductAttention``).  Returns ``{id(box): input axes in stored order}``;
    lowering and costs both ask this function.

    >>> import ncd
    >>> scores = ncd.Einsum("t k h, x k h -> h t x") >> ncd.Softmax("x")
    >>> attend = (scores @ ncd.Identity.of("x k h")) >> ncd.Einsum("h t x, x k h -> t k h")
    >>> d = attend >> ncd.Linear("k h -> m", name="O").weave("t")
    >>> list(chosen_columns(d.parts, 2).values())
    [('h', 'k')]
    """
    from ncd.prims.linear import LinearOp, on_trailing_axes

    inner, woven = unweave(parts[k])
    if k == 0 or not isinstance(inner, Box) or not isinstance(inner.prim, LinearOp) or not on_trailing_axes(inner, woven):
        return {}
    own = [a.name for a in inner.prim.dom_axes]
    attention = _ending(parts, k) if len(own) >= 2 else None  # a map of one axis reads any layout as it is
    if attention is None or not set(own) <= set(attention.batch) | set(attention.value):
        return {}
    if list(parts[k].dom[0].names[-len(own):]) != own or attention.out[-len(own):] != own:
        return {}
    stored = tuple(n for n in attention.batch + attention.value if n in own)
    return {id(inner): stored} if list(stored) != own else {}


#: how many parts before a learned map an attention pattern may start (its score chain spans few parts)
_REACH = 8


def _ending(parts: Sequence[Diagram], k: int) -> Attention | None:
    """The attention whose last part is ``parts[k - 1]`` (or that ends the block ``parts[k - 1]``)."""
    inner = unweave(parts[k - 1])[0]
    if isinstance(inner, Block):
        body = _body_parts(inner)
        return next((a for j in range(max(0, len(body) - _REACH), len(body))
                     if (a := _at(body, j, len(body))) is not None), None)
    return next((a for j in range(max(0, k - _REACH), k - 1) if (a := _at(parts, j, k)) is not None), None)


def _at(parts: Sequence[Diagram], j: int, end: int) -> Attention | None:
    found = recognise_attention(parts, j)
    return found[1] if found is not None and j + found[0] == end else None


def _body_parts(block: Block) -> Sequence[Diagram]:
    body: Diagram = block
    while isinstance(body, Block):
        body = body.body
    return body.parts if isinstance(body, Seq) else [body]


def _opening(part: Diagram) -> Attention | None:
    """The attention a block opens with, on the block's own inputs (the gallery's ``ScaledDotProductAttention``)."""
    inner = unweave(part)[0]
    if not isinstance(inner, Block):
        return None
    found = recognise_attention(_body_parts(inner), 0)
    return found[1] if found is not None else None


def _closing(part: Diagram) -> Diagram:
    """The last part of a block (through nested blocks): where the learned maps feeding the next part end."""
    while isinstance(part, Block):
        body = part.body
        part = body.parts[-1] if isinstance(body, Seq) else body
    return part


def _choices(producer: Diagram, a: Attention) -> list[tuple[int, Box, list[str]]]:
    """``(operand index, learned map, its output axes in stored order)`` for the operands of ``a`` that
    ``producer`` computes with a learned map on trailing axes, where storing its rows in SDPA's order
    turns a packing copy (:func:`packs`) into a view."""
    from ncd.prims.linear import LinearOp, on_trailing_axes

    if isinstance(producer, Weave):
        return []
    ends: list[tuple[Box, tuple[Weave, ...]] | None] = []
    for part in producer.parts if isinstance(producer, Par) else [producer]:
        last = part.parts[-1] if isinstance(part, Seq) else part
        inner, woven = unweave(last)
        ends += [(inner, woven)] if len(part.cod) == 1 and isinstance(inner, Box) else [None] * len(part.cod)
    chosen: list[tuple[int, Box, list[str]]] = []
    for j, have, target in a.operands():
        end = ends[j] if -len(ends) <= j < len(ends) else None
        if end is None or not isinstance(end[0].prim, LinearOp):
            continue
        box, woven = end
        prim = end[0].prim
        own = [x.name for x in prim.cod_axes]
        trailing = on_trailing_axes(box, woven)
        stored = [n for n in target if n in own]
        if not trailing or len(own) < 2 or have[len(have) - len(own):] != own or sorted(stored) != sorted(own):
            continue
        memory = have[: len(have) - len(own)] + stored
        if packs(have, target) and not packs(memory, target):
            chosen.append((j, box, stored))
    return chosen


def _unique(names: tuple[str, ...]) -> bool:
    return len(set(names)) == len(names)


def recognise_attention(parts: Sequence[Diagram], k: int) -> tuple[int, Attention] | None:
    """The attention pattern at ``parts[k:]`` of a diagram: how many parts it spans and its axes by name, else ``None``.

    Purely structural: sizes may be symbols (the scale must be provably positive under a mask).  Lowering does
    not fuse from this: it rewrites the lowered program's steps (:func:`attention_of`, ``ncd.torch.fusion``);
    this reading of the diagram chooses the layouts of the learned maps around an attention
    (:func:`chosen_rows`, :func:`chosen_columns`).
    """
    if not ENABLED:
        return None
    run: list[Diagram] = []
    boxes: list[Box] = []
    i = k
    while i < len(parts):
        inner = unweave(parts[i])[0]
        if not (isinstance(inner, Par) and len(inner.parts) == 2 and _is_wire(inner.parts[1], "float")):
            break
        chain = _chain(inner.parts[0])
        if chain is None:
            break
        run.append(parts[i])
        boxes += chain
        i += 1
    if not run or i >= len(parts):
        return None
    final = unweave(parts[i])[0]
    if not isinstance(final, Box):
        return None
    first, last = run[0], run[-1]
    padding = any(isinstance(b.prim, PaddingMaskOp) for b in boxes)
    if len(first.dom) != (4 if padding else 3) or any(len(p.cod) != 2 for p in run):
        return None
    v = first.dom[-1]
    if any(p.cod[1].names != v.names for p in run):
        return None
    found = attention_of(boxes, first.dom[0], first.dom[1], first.dom[2] if padding else None, v,
                         [p.cod[0].names for p in run] + [last.cod[0].names], final, parts[i].dom, parts[i].cod)
    if found is None:
        return None
    if k > 0:
        for j, _, stored in _choices(_closing(parts[k - 1]), found):
            have = found.operands()[j if j >= 0 else 2][1]
            found.stored[j] = have[: len(have) - len(stored)] + stored
    return i + 1 - k, found


def attention_of(boxes: Sequence[Box], q_seg: Segment, k_seg: Segment, mask_seg: Segment | None, v_seg: Segment,
                 scores_names: Sequence[tuple[str, ...]], final: Box, final_dom: Type, final_cod: Type,
                 bias_seg: Segment | None = None) -> Attention | None:
    """The attention computed by a chain of ``boxes`` (score einsum, scales and masks, softmax, optional dropout)
    on queries ``q_seg`` and keys ``k_seg`` (with ``mask_seg`` for a padding mask), then ``final`` (the einsum of the
    probabilities with the values ``v_seg``), all checked by axis name on their full (woven) types:
    ``scores_names`` are the axes of every tensor between the two einsums, ``final_dom``/``final_cod`` the woven
    type of ``final``; ``bias_seg``: a float mask the chain adds to the scores after every scale (SDPA's float
    ``attn_mask``, one query axis, no other mask).  ``None`` unless it is exactly SDPA's computation.  Both readings
    ask it: the lowered program's steps (``ncd.torch.fusion``) and a diagram's parts (:func:`recognise_attention`).
    """
    if not (isinstance(final.prim, EinsumOp) and len(final.prim.inputs) == 2):
        return None
    # -- the chain: einsum, scales and masks, softmax, optional dropout ------------------------
    if not boxes or not isinstance(boxes[0].prim, EinsumOp) or len(boxes[0].prim.inputs) != 2:
        return None
    scale: sympy.Expr = sympy.Integer(1)
    causal, padding, masked, softmax, dropout, added = None, None, False, None, None, False
    for box in boxes[1:]:
        prim = box.prim
        if softmax is None and isinstance(prim, AddOp) and bias_seg is not None and not added and prim.n == 2:
            added = True
        elif softmax is None and isinstance(prim, ScaleOp):
            if added:  # a scale after the bias scales it too: not SDPA's scores * scale + mask
                return None
            factor = prim.factor
            if masked and not (factor.is_positive or (not factor.free_symbols and float(factor) > 0)):
                return None
            scale = scale * factor
        elif softmax is None and isinstance(prim, CausalMaskOp) and causal is None:
            if prim.window is not None or prim.lower_right:  # is_causal has neither a window nor the lower-right
                return None  # diagonal: the unfused lowering holds the band
            causal, masked = prim, True
        elif softmax is None and isinstance(prim, PaddingMaskOp) and padding is None:
            padding, masked = prim, True
        elif softmax is None and isinstance(prim, SoftmaxOp) and not prim.log:
            softmax = prim
        elif softmax is not None and isinstance(prim, DropoutOp) and dropout is None:
            dropout = prim.p
        else:
            return None
    if softmax is None or (padding is None) != (mask_seg is None) or added != (bias_seg is not None):
        return None
    if bias_seg is not None and (padding is not None or causal is not None or bias_seg.dtype == "bool"):
        return None
    # -- names on the full (woven) types -------------------------------------------------------
    q, kk, v = q_seg.names, k_seg.names, v_seg.names
    mask = mask_seg.names if mask_seg is not None else None
    if mask_seg is not None and mask_seg.dtype != "bool":
        return None
    scores = scores_names[-1]
    out = final_cod[0].names
    if not all(_unique(n) for n in (q, kk, v, scores, out) + ((mask,) if mask else ())):
        return None
    contracted = set(boxes[0].prim.contracted)
    if not contracted <= set(q) & set(kk) or (set(q) | set(kk)) - contracted != set(scores):
        return None
    if any(set(names) != set(scores) for names in scores_names):
        return None
    if final_dom[0].names != scores or final_dom[1].names != v:
        return None
    key = softmax.axis.name
    if key not in kk or key in q or set(kk) - set(q) - contracted != {key}:
        return None
    # SDPA's batch and queries in the scores' order (what it computes; the result is arranged into ``out`` after): a
    # product writing its result in another order (a crossing folded into it, ``ncd.trace.crossings``) is the same call
    batch = [n for n in scores if n in out and n in q and n in kk]
    query = [n for n in scores if n in out and n in q and n not in kk]
    if not query or set(batch) | set(query) | {key} != set(scores):
        return None
    gqa = batch[-1] if len(query) == 2 and batch and batch[-1] in v and query[0] not in v \
        and (causal is None or query[-1] == causal.query.name) else None
    if causal is not None and (query[-1:] != [causal.query.name] or causal.key.name != key
                               or len(query) > 1 and gqa is None):
        return None
    if padding is not None and (mask is None or padding.key.name != key or key not in mask or not set(mask) <= set(scores)):
        return None
    if bias_seg is not None and (len(query) != 1 or not _unique(bias_seg.names) or not set(bias_seg.names) <= set(scores)):
        return None
    if set(final.prim.contracted) != {key} or key not in v:
        return None
    value = [n for n in out if n in v and n not in scores]
    if not value or not (set(v) - {key} - set(value)) <= set(batch) or set(out) != set(batch) | set(query) | set(value):
        return None
    sizes: dict[str, sympy.Expr] = {}
    for seg in [q_seg, k_seg] + [m for m in (mask_seg, bias_seg) if m is not None] + [v_seg] + list(final_cod):
        for a in seg:
            sizes[a.name] = a.size
    return Attention(
        list(q), list(kk), list(v), list(mask) if mask else None, list(out), batch, query, key,
        [n for n in q if n in contracted], value, scale, causal is not None, dropout or 0.0, sizes, final_cod[0].axes,
        gqa=gqa if bias_seg is None else None, bias=list(bias_seg.names) if bias_seg is not None else None,
    )
