"""Pictograms of the other families (LANGUAGE.md §5): normalisation, convolution and pooling,
movement (bind, unbind, concat, index, slice, squeeze), embedding, masks.  Registered by op name,
so they apply as soon as a family declares the primitive; unknown ops still get the fallback box.

>>> from ncd.render.pictograms import box_rule
>>> box_rule("layernorm").__name__, box_rule("conv").__name__, box_rule("bind").__name__
('draw_norm', 'draw_learned_conv', 'draw_bar')
"""

from __future__ import annotations

import math

from ncd.ir.axes import Type
from ncd.ir.diagram import Box
from ncd.render.layout import Frag, Layout, flat
from ncd.render.model import Circle, Footprint, Path, Port, Rect
from ncd.render.pictogram_shapes import INK, LEARNED_FILL, _by_name, _centre, _ports, generic_box, glyph_through, wiring
from ncd.render.pictograms import rule, scalar
from ncd.render.typeset import Piece, typeset_text

__all__ = ["draw_norm", "draw_conv_tensor", "draw_learned_conv", "draw_pool", "draw_bar", "draw_index", "draw_size_one"]

CONV_FILL = "#a9d9f4"
NORM_FILL = "#f7d8dc"


def _label(box: Box) -> tuple[Piece, ...]:
    return typeset_text(box.prim.label().replace("ᵀ", "^{T}"))


#: Convolution parameters written under ``★`` when they differ from the default: (field, letter, default).
CONV_PARAMETERS = (("stride", "s", 1), ("dilation", "d", 1), ("padding", "p", 0))


def _conv_label(box: Box, stride_in_label: bool = False) -> tuple[Piece, ...]:
    """``★3`` with its stride, dilation and padding as a subscript (``★3`` with ``s2,p1``) and its name as a
    superscript, like **L^Q**."""
    notes = []
    for field, letter, default in CONV_PARAMETERS:
        values = tuple(getattr(box.prim, field, ()) or ())
        if field == "stride" and stride_in_label:
            continue  # ★2: the convolution tensor's label is its stride already
        if values and set(values) != {default}:
            shown = str(values[0]) if len(set(values)) == 1 else "×".join(str(v) for v in values)
            notes.append(f"{letter}{shown}")
    parts = _label(box)
    if notes:
        parts += (Piece(",".join(notes), script=-1),)
    if box.label:
        parts += (Piece(box.label, script=1),)
    return parts


@rule("layernorm", "rmsnorm", "batchnorm")
def draw_norm(ctx: Layout, box: Box) -> Frag:
    """A circle touched by the normalised wires (bold when it carries a learned scale)."""
    p = ctx.style.pitch
    ins, outs = _centre(ctx, box.dom, box.cod)
    ys = flat(ins) or [0.0]
    cy = (ys[0] + ys[-1]) / 2
    r = max(0.5 * p, (ys[-1] - ys[0]) / 2 + 0.35 * p)
    parts = typeset_text(box.prim.label()) if box.prim.op != "layernorm" else ()
    size = 0.75 * ctx.style.label_size
    if parts:  # RMS, BN: the circle grows until the word fits inside it
        tw, ta, td = ctx.text_size(parts, size)
        r = max(r, math.hypot(tw / 2, (ta + td) / 2) + 1.5)
    w = 2 * r + 1.2 * p
    cx = w / 2
    nid = ctx.new_id()
    top, bottom = cy - r - 0.35 * p, cy + r + 0.35 * p
    frag = Frag(w, top, bottom, ins, outs)
    frag.add(Rect(0.0, top, w, bottom - top, fill=NORM_FILL, stroke=None, radius=2.0, owner=nid))
    for y in ys:
        dx = math.sqrt(max(r * r - (y - cy) ** 2, 0.0))
        frag.add(Path.through([(0.0, y), (cx - dx, y)], owner=nid), Port(cx - dx, y, nid))
        frag.add(Path.through([(cx + dx, y), (w, y)], owner=nid), Port(cx + dx, y, nid))
    frag.add(Circle(cx, cy, r, fill="#ffffff", stroke="#222222", width=2.0 if box.learned else 0.9, role="glyph", owner=nid))
    if parts:
        frag.add(*ctx.text(parts, cx - tw / 2, cy + (ta - td) / 2, size, owner=nid))
    frag.add(Footprint(0.0, top, w, bottom - top, nid, "glyph", box.prim.op))
    _ports(frag, nid)
    return frag


@rule("conv_tensor", "conv_tensor_t")
def draw_conv_tensor(ctx: Layout, box: Box) -> Frag:
    """The convolution tensor ``★`` (``★ᵀ``): a trapezoid with its stride."""
    return generic_box(ctx, box.dom, box.cod, _conv_label(box, stride_in_label=True), fill=CONV_FILL, shape="trapezoid",
                       name=box.prim.op)


@rule("conv", "conv_transpose")
def draw_learned_conv(ctx: Layout, box: Box) -> Frag:
    """Compact learned convolution ``★3`` (``★ᵀ3``): bold frame."""
    return generic_box(ctx, box.dom, box.cod, _conv_label(box), fill="#e4f2fb", width=2.2, name=box.prim.op)


@rule("maxpool", "avgpool", "adaptive_avgpool")
def draw_pool(ctx: Layout, box: Box) -> Frag:
    """``★`` followed by the reduction over the window (``Max``, ``𝔼``), on the convolution tensor's trapezoid."""
    return generic_box(ctx, box.dom, box.cod, _conv_label(box, stride_in_label=True), fill=CONV_FILL, shape="trapezoid",
                       name=box.prim.op)


@rule("bind", "unbind", "concat")
def draw_bar(ctx: Layout, box: Box) -> Frag:
    """A thick bar joining wires (``k h -> (k h)``) or segments (``c, c -> 2c``)."""
    p = ctx.style.pitch
    ins, outs = _centre(ctx, box.dom, box.cod)
    ys = flat(ins) + flat(outs) or [0.0]
    w = 1.6 * p
    bid = ctx.new_id()
    top, bottom = min(ys) - 0.45 * p, max(ys) + 0.45 * p
    frag = Frag(w, top, bottom, ins, outs)
    frag.add(Rect(0.0, top, w, bottom - top, fill=NORM_FILL, stroke=None, radius=2.0, owner=bid))
    xb = w / 2
    for y in flat(ins):
        frag.add(Path.through([(0.0, y), (xb, y)], owner=bid), Port(xb, y, bid))
    for y in flat(outs):
        frag.add(Path.through([(xb, y), (w, y)], owner=bid), Port(xb, y, bid))
    frag.add(Rect(xb - 2.2, min(ys) - 0.3 * p, 4.4, max(ys) - min(ys) + 0.6 * p, fill=INK, stroke=None, owner=bid))
    frag.add(Footprint(0.0, top, w, bottom - top, bid, "glyph", box.prim.op))
    _ports(frag, bid)
    return frag


@rule("index", "slice", "put")
def draw_index(ctx: Layout, box: Box) -> Frag:
    """The index tag (``[i]``), slice tag (``[a:b:s]``) or region written (``[:, i, a:b] ←``) on the wires it acts on."""
    return generic_box(ctx, box.dom, box.cod, typeset_text(box.prim.label()), fill="#fdf3d0", name=box.prim.op, min_w=16.0)


@rule("squeeze", "unsqueeze")
def draw_size_one(ctx: Layout, box: Box) -> Frag:
    """The tailed arrow: a size-1 axis removed (ends in an arrowhead) or added (born at a tail)."""
    sources, caps = _by_name(box.dom, box.cod)
    return wiring(ctx, box.dom, box.cod, sources, caps, name=box.prim.op, end="arrow", width=1.6 * ctx.style.pitch)


@rule("embedding", "unembed", "parameter", "linear_transpose", "linear_weight_grad")
def draw_learned_table(ctx: Layout, box: Box) -> Frag:
    """Learned tables (embeddings, free parameters): bold label on the learned grey."""
    return generic_box(ctx, box.dom, box.cod, _label(box), bold_text=True, fill=LEARNED_FILL, stroke=None, name=box.prim.op)


@scalar("dropout")
def draw_dropout(ctx: Layout, box: Box, dom: Type, cod: Type) -> Frag:
    """Dropout: its label above the wires, which run straight through."""
    return glyph_through(ctx, dom, typeset_text(box.prim.label()), arrows=False, name="dropout")


@rule("causal_mask", "padding_mask")
def draw_mask(ctx: Layout, box: Box) -> Frag:
    """Masks: their glyph in a small box."""
    text = {"causal_mask": "causal", "padding_mask": "pad"}.get(box.prim.op, box.prim.label())
    parts = typeset_text(text + "↘" if getattr(box.prim, "lower_right", False) else text)  # (the diagonal ends last)
    return generic_box(ctx, box.dom, box.cod, parts, fill="#eeeeee", name=box.prim.op)
scalar("compare", "cast", "arithmetic")(
    lambda ctx, box, dom, cod: glyph_through(ctx, dom, typeset_text(box.text()), name=box.prim.op))
rule("rotary")(lambda ctx, box: generic_box(ctx, box.dom, box.cod, typeset_text("ρ"), fill="#e3ecf7", name="rotary", min_w=16.0))
