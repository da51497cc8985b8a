"""Attention masks: causal masking and key padding, applied to attention scores before the softmax.

``CausalMask(query="y", key="x")`` acts on scores ``"y x"`` and sets every entry whose key
index is greater than its query index to ``-inf`` (top-left aligned, as
``F.scaled_dot_product_attention(is_causal=True)``); ``window=w`` also masks keys ``w`` or more
positions before the query (a sliding window); ``lower_right=True`` aligns the diagonal with the
last query and the last key instead, as a decoding step over cached keys does (query ``i`` sees
keys ``0 … i + |x| - |y|``: ``torch.ones(y, x).tril(x - y)``).  ``PaddingMask(key="x")`` takes the
scores and a boolean segment ``"x [bool]"``: **True keeps** a key, False masks it with
``-inf`` (the convention of ``F.scaled_dot_product_attention``'s boolean ``attn_mask``;
note ``nn.MultiheadAttention``'s ``key_padding_mask`` uses the opposite one).  Both are
woven over every other axis, e.g. heads and batch; the boolean mask may lack axes the
scores have (it is then shared across them).

>>> import ncd
>>> str((ncd.Identity.of("y x h") >> ncd.CausalMask("y", "x")).cod)
'y x h'
>>> str((ncd.Identity.of("h y x, x [bool]") >> ncd.PaddingMask("x")).cod)
'h y x'
>>> ncd.CausalMask("y", "x", lower_right=True).prim.label()
'◸↘'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import sympy

from ncd.errors import ParseError, SizeError
from ncd.ir import weaving
from ncd.ir.axes import Axis, AxisLike, Segment, Type, as_axis
from ncd.ir.diagram import Box, Seq
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import BACKWARD, COST, IMPORT, LOWERING, NOT_TRACED, SECOND_ORDER, BoxBackward
from ncd.ir.size import Size, SizeLike, evaluate, size, size_text
from ncd.prims.structure import SwapOp

if TYPE_CHECKING:
    from ncd.analysis.backward import Builder
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.torch.rules import RuleContext


__all__ = ["CausalMaskOp", "PaddingMaskOp", "CausalMask", "PaddingMask"]


@dataclass(frozen=True)
class CausalMaskOp(Primitive):
    """Scores ``query key`` -> the same, with ``-inf`` where the key index exceeds the query index."""

    query: Axis
    key: Axis
    #: a sliding window: a query also ignores keys ``window`` or more positions before it (``None``: none)
    window: Size | None = None
    #: the diagonal ends at the last query and the last key (query ``i`` sees keys up to ``i + |key| - |query|``, a
    #: step decoding ``|query|`` new tokens after ``|key| - |query|`` cached ones); else it starts at the first of both
    lower_right: bool = False

    op: ClassVar[str] = "causal_mask"
    weave_policy = weaving.input_like_output
    family: ClassVar[str] = "attention"
    kind: ClassVar[Kind] = "nonlinear"

    def __post_init__(self) -> None:
        if self.query.name == self.key.name:
            raise ParseError(f"causal mask: the query and key axes must differ, both are {self.query.name!r}")
        if self.window is not None:
            if not isinstance(self.window, sympy.Basic):
                object.__setattr__(self, "window", size(self.window))
            if self.window.is_number and not (self.window.is_integer and self.window >= 1):
                raise SizeError(f"causal mask on {self.query.name}, {self.key.name}: the window"
                                f" {size_text(self.window)} must be a whole number >= 1")

    def signature(self) -> tuple[Type, Type]:
        t = Type((Segment((self.query, self.key)),))
        return t, t

    def label(self) -> str:
        return ("◸" if self.window is None else f"◸{size_text(self.window)}") + ("↘" if self.lower_right else "")


@dataclass(frozen=True)
class PaddingMaskOp(Primitive):
    """Scores over ``key`` and a boolean ``key [bool]`` -> scores with ``-inf`` where the mask is False."""

    key: Axis

    op: ClassVar[str] = "padding_mask"
    weave_policy = weaving.mask_aligned
    family: ClassVar[str] = "attention"
    kind: ClassVar[Kind] = "nonlinear"

    def signature(self) -> tuple[Type, Type]:
        scores = Segment((self.key,))
        return Type((scores, Segment((self.key,), "bool"))), Type((scores,))

    def label(self) -> str:
        return "▭"


def CausalMask(query: AxisLike = "y", key: AxisLike = "x", name: str | None = None, window: SizeLike | None = None,
               lower_right: bool = False) -> Box:
    """Mask scores ``"query key"`` so that a query attends to keys at or before its own index.

    ``window``: a sliding window (Mistral's): query ``i`` attends keys ``i-window+1 … i`` only.
    ``lower_right``: the indices counted from the last query and key (a decoding step after cached keys).
    """
    return Box.make(CausalMaskOp(as_axis(query), as_axis(key), None if window is None else size(window), lower_right),
                    name)


def PaddingMask(key: AxisLike = "x", name: str | None = None) -> Box:
    """Mask scores along ``key`` with a boolean ``"key [bool]"`` segment (True = attend, False = padding)."""
    return Box.make(PaddingMaskOp(as_axis(key)), name)


# -- import recognition (ncd.trace) ------------------------------------------------------------
IMPORT.known(CausalMaskOp, aten=("aten.scaled_dot_product_attention",))
IMPORT.unsupported(PaddingMaskOp, "a traced padding mask is a tensor added to the scores (an addition box)")


# -- derivative primitives of the family (backward diagrams) -----------------------------------
def _mask_backward_policy(view: weaving.WeaveView) -> bool:
    """In place when the cotangent keeps its layout and a padding mask's axes come in its order."""
    prim = view.box.prim
    assert isinstance(prim, MaskBackwardOp)
    return weaving.mask_aligned(view) if prim.query is None else weaving.input_like_output(view)


@dataclass(frozen=True)
class MaskBackwardOp(Primitive):
    """The transpose of a mask: the cotangent with zeros where scores were masked.

    Causal (``query`` given): zeros above the diagonal of ``query key`` (and, with ``window``, that many
    positions below it and further); padding (no ``query``):
    ``(g: key, mask: key [bool]) ↦ g`` with zeros where the mask is False.
    """

    key: Axis
    query: Axis | None = None
    #: the causal mask's sliding window: zeros also ``window`` or more positions below the diagonal
    window: Size | None = None
    #: the causal mask's diagonal ends at the last query and key (:attr:`CausalMaskOp.lower_right`)
    lower_right: bool = False

    op: ClassVar[str] = "mask_backward"
    weave_policy = _mask_backward_policy
    family: ClassVar[str] = "derivative"
    kind: ClassVar[Kind] = "linear"

    def signature(self) -> tuple[Type, Type]:
        if self.query is not None:
            t = Type((Segment((self.query, self.key)),))
            return t, t
        scores = Segment((self.key,))
        return Type((scores, Segment((self.key,), "bool"))), Type((scores,))

    def label(self) -> str:
        return ("◸" if self.query is not None else "▭") + "ᵀ"


def MaskBackward(key: AxisLike = "x", query: AxisLike | None = None, window: SizeLike | None = None,
                 lower_right: bool = False) -> Box:
    """The transpose of ``CausalMask(query, key, window=window, lower_right=…)`` (``query`` given) or of
    ``PaddingMask(key)``."""
    return Box.make(MaskBackwardOp(as_axis(key), None if query is None else as_axis(query),
                                   None if window is None else size(window), lower_right))


# -- lowering ----------------------------------------------------------------------------------
@LOWERING.rule(CausalMaskOp)
def lower_causal_mask(prim: CausalMaskOp, ctx: RuleContext) -> list[str]:
    rows = ctx.int(prim.query.size, f"axis {prim.query.name}")
    cols = ctx.int(prim.key.size, f"axis {prim.key.name}")
    layout = ctx.markers("dom", 0)
    first = layout.index(("own", 0))
    shape = [rows if m == ("own", 0) else cols if m == ("own", 1) else 1 for m in layout[first:]]
    x = ctx.args[0].var
    window = None if prim.window is None else \
        ctx.int(prim.window, f"the window of the causal mask on {prim.query.name}, {prim.key.name}")
    mask = ctx.em.assign("causal", _blocked(rows, cols, window, prim.lower_right, x), (prim.query, prim.key))
    view = "" if len(shape) == 2 else f".view({', '.join(map(str, shape))})"
    return [f"{x}.masked_fill({mask}{view}, float('-inf'))"]


def _blocked(rows: Any, cols: Any, window: Any, lower_right: bool, var: str) -> str:
    """The source of the boolean ``rows x cols`` table a causal mask (or its transpose) blocks: above the diagonal
    (``lower_right``: the one ending at the last row and column) and, with a ``window``, that many positions below
    (sizes as numbers or as the expressions the source writes)."""
    ones = f"torch.ones({rows}, {cols}, dtype=torch.bool, device={var}.device)"
    shift = cols - rows if lower_right else 0
    blocked = f"{ones}.triu({1 + shift})"
    return blocked if window is None else f"({blocked} | {ones}.tril({shift - window}))"


def align(ctx: RuleContext, target: int, source: int, var: str) -> str:
    """``var`` (input ``source``) indexed with ``None`` so it broadcasts against input ``target`` by axis."""
    want = ctx.markers("dom", target)
    have = ctx.markers("dom", source)
    index = [":" if m in have else "None" for m in want]  # leading batch dimensions line up in front
    if all(i == ":" for i in index):
        return var
    return f"{var}[..., {', '.join(index)}]"


@LOWERING.rule(PaddingMaskOp)
def lower_padding_mask(prim: PaddingMaskOp, ctx: RuleContext) -> list[str]:
    scores, mask = ctx.args
    return [f"{scores.var}.masked_fill(~{align(ctx, 0, 1, mask.var)}, float('-inf'))"]


# -- costs and backward ------------------------------------------------------------------------
@COST.rule(CausalMaskOp)
def cost_causal_mask(prim: CausalMaskOp, ctx: CostContext) -> list[Tensor]:
    """``masked_fill`` with a fresh ``triu`` mask: autograd keeps the (boolean) mask."""
    x = ctx.inputs[0]
    if x.grad:
        ctx.save(ctx.new((prim.query, prim.key), grad=False, dtype="bool"))
    else:
        ctx.new((prim.query, prim.key), grad=False, dtype="bool")
    ctx.other(ctx.numel(), ctx.numel() if x.grad else sympy.Integer(0))
    return [ctx.like(0, x)]


@COST.rule(PaddingMaskOp)
def cost_padding_mask(prim: PaddingMaskOp, ctx: CostContext) -> list[Tensor]:
    """``masked_fill(~mask)``: autograd keeps the negated mask (a new boolean tensor)."""
    x, mask = ctx.inputs
    inverted = ctx.new(mask.axes, mask.order, grad=False, dtype="bool")
    if x.grad:
        ctx.save(inverted)
    ctx.other(ctx.numel(), ctx.numel() if x.grad else sympy.Integer(0))
    return [ctx.like(0, x)]



# -- backward ------------------------------------------------------------------------------


@BACKWARD.rule(CausalMaskOp)
def backward_causal_mask(prim: CausalMaskOp, box: Box, builder: Builder) -> BoxBackward:
    """Masked scores get no gradient: the cotangent with zeros above the diagonal."""
    return BoxBackward((), Box(MaskBackwardOp(prim.key, prim.query, prim.window, prim.lower_right)))


@BACKWARD.rule(PaddingMaskOp)
def backward_padding_mask(prim: PaddingMaskOp, box: Box, builder: Builder) -> BoxBackward:
    """The cotangent with zeros where the (stored) mask is False."""
    t = box.dom
    return BoxBackward((("in", 1),), Seq.of(Box(SwapOp(Type((t[1], t[0])), (1, 0))), Box(MaskBackwardOp(prim.key))))


@LOWERING.rule(MaskBackwardOp)
def lower_mask_backward(prim: MaskBackwardOp, ctx: RuleContext) -> list[str]:
    g = ctx.args[0].var
    if prim.query is None:
        want, have = ctx.markers("dom", 0), ctx.markers("dom", 1)
        index = [":" if m in have else "None" for m in want]
        mask = ctx.args[1].var + ("" if all(i == ":" for i in index) else f"[..., {', '.join(index)}]")
        return [f"{g}.masked_fill(~{mask}, 0.0)"]
    rows, cols = evaluate(prim.query.size), evaluate(prim.key.size)
    layout = ctx.markers("dom", 0)
    first = layout.index(("own", 0))
    shape = [rows if m == ("own", 0) else cols if m == ("own", 1) else 1 for m in layout[first:]]
    window = None if prim.window is None else evaluate(prim.window)
    mask = ctx.em.assign("causal", _blocked(rows, cols, window, prim.lower_right, g), (prim.query, prim.key))
    view = "" if len(shape) == 2 else f".view({', '.join(map(str, shape))})"
    return [f"{g}.masked_fill({mask}{view}, 0.0)"]


@COST.rule(MaskBackwardOp)
def cost_mask_backward(prim: MaskBackwardOp, ctx: CostContext) -> list[Tensor]:
    """``masked_fill(mask, 0)``, like the masks themselves: autograd keeps the boolean mask."""
    g = ctx.inputs[0]
    if prim.query is not None:
        mask = ctx.new((prim.query, prim.key), grad=False, dtype="bool")
    else:
        mask = ctx.new(ctx.inputs[1].axes, ctx.inputs[1].order, grad=False, dtype="bool")
    if g.grad:
        ctx.save(mask)
    ctx.other(ctx.numel(), ctx.numel() if g.grad else sympy.Integer(0))
    return [ctx.like(0, g)]

for _cls in (MaskBackwardOp,):
    BACKWARD.unsupported(_cls, SECOND_ORDER)
    IMPORT.unsupported(_cls, NOT_TRACED)
