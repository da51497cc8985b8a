"""Attention masks: causal masking and key padding, applied to attention scores before the softmax.

``CausalMask(query="y", key="x")`` acts on scores ``"y x"`` and sets every entry whose key
index is greater than its query index to ``-inf`` (top-left aligned, as
``F.scaled_dot_product_attention(is_causal=True)``); ``window=w`` also masks keys ``w`` or more
positions before the query (a sliding window).  ``PaddingMask(key="x")`` takes the
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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import sympy

from ncd.errors import ParseError, SizeError
from ncd.ir import weaving
from ncd.ir.axes import Axis, AxisLike, Segment, Type, as_axis
from ncd.ir.diagram import Box
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import IMPORT
from ncd.ir.size import Size, SizeLike, size, size_text

__all__ = ["CausalMaskOp", "PaddingMaskOp", "CausalMask", "PaddingMask"]


@dataclass(frozen=True)
class CausalMaskOp(Primitive):
    """Scores ``query key`` -> the same, with ``-inf`` where the key index exceeds the query index."""

    query: Axis
    key: Axis
    #: a sliding window: a query also ignores keys ``window`` or more positions before it (``None``: none)
    window: Size | None = None

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
        return "◸" if self.window is None else f"◸{size_text(self.window)}"


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


def CausalMask(query: AxisLike = "y", key: AxisLike = "x", name: str | None = None, window: SizeLike | None = None) -> Box:
    """Mask scores ``"query key"`` so that a query attends to keys at or before its own index.

    ``window``: a sliding window (Mistral's): query ``i`` attends keys ``i-window+1 … i`` only.
    """
    return Box.make(CausalMaskOp(as_axis(query), as_axis(key), None if window is None else size(window)), name)


def PaddingMask(key: AxisLike = "x", name: str | None = None) -> Box:
    """Mask scores along ``key`` with a boolean ``"key [bool]"`` segment (True = attend, False = padding)."""
    return Box.make(PaddingMaskOp(as_axis(key)), name)


# -- import recognition (ncd.trace) ------------------------------------------------------------
IMPORT.known(CausalMaskOp, aten=("aten.scaled_dot_product_attention",))
IMPORT.unsupported(PaddingMaskOp, "a traced padding mask is a tensor added to the scores (an addition box)")
