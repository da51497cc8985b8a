"""Notation details the paper fixes: overlines kept through boxes built from plain names, constants shown symbolically."""

from __future__ import annotations

import ncd
from ncd.render import layout
from ncd.render.model import Path, Text


def _overlined(drawing: ncd.render.model.Drawing, text: Text) -> bool:
    """Whether an overline is drawn over ``text`` (a short stroke above its glyphs, within its width)."""
    x0, top, x1, _ = text.bounds
    return any(p.role == "text" and len(p.commands) == 2 and x0 - 1 <= p.commands[0][1] and p.commands[1][1] <= x1 + 1
               and top - 2 <= p.commands[0][2] <= text.y for p in drawing.of(Path))


def test_item_overline_is_kept_across_a_causal_mask() -> None:
    # CausalMask("y", "x") is built from plain names: its output wires are feature axes, yet they are the
    # same ȳ and x̄ the scores carry, and the paper overlines them on both sides of the mask.
    d = ncd.zoo.attention(mask="causal")
    drawing = layout(d, page="none")
    labels = [t for t in drawing.of(Text) if t.role == "label" and t.string in ("x", "y")]
    assert len(labels) >= 8
    assert all(_overlined(drawing, t) for t in labels), [t.string for t in labels if not _overlined(drawing, t)]
    # a feature axis named like nothing that is an item stays plain
    plain = [t for t in drawing.of(Text) if t.role == "label" and t.string == "k"]
    assert plain and not any(_overlined(drawing, t) for t in plain)


def _scale_label(drawing: ncd.render.model.Drawing) -> str:
    return next(t.string for t in drawing.of(Text) if t.string.startswith("∗"))


def test_a_constant_scale_is_written_with_its_size_symbol() -> None:
    # 8^{-1/2} is the scale of attention over an axis of size 8: the paper writes k^{-1/2}
    d = ncd.Einsum("~y k:8, ~x k:8 -> ~y ~x") >> ncd.Scale(8 ** -0.5) >> ncd.Softmax("x")
    assert _scale_label(layout(d, page="none")).startswith("∗k−1/2")
    # two axes of size 8: which one is meant is not known, the number stays
    d2 = ncd.Einsum("~y k:8 h:8, ~x k:8 h:8 -> ~y ~x h") >> ncd.Scale(8 ** -0.5)
    assert _scale_label(layout(d2, page="none")).startswith("∗8−1/2")
    # no axis of that size: 4 significant digits
    d3 = ncd.Einsum("~y k:8, ~x k:8 -> ~y ~x") >> ncd.Scale(0.123456)
    assert _scale_label(layout(d3, page="none")).startswith("∗0.1235")
