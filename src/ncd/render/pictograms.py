"""The drawing rule table, keyed by primitive ``op``, and the shapes rules are built from.

Two tables: :data:`BOX_RULES` draw a box on its own wires; :data:`SCALAR_RULES` draw a
scalar primitive (elementwise functions, ``Scale``, ``Add``, ``Multiply``) together with the
weave that reaches tensors, so the woven wires run through a glyph instead of a stack of
broadcast boxes.  Any op without a rule gets :func:`generic_box` (its label in a box), so a
new primitive never breaks drawing.  Family modules (:mod:`ncd.render.pictograms_more`)
register more rules with :func:`rule` / :func:`scalar`.

>>> import ncd
>>> box_rule("linear").__name__, box_rule("no-such-op").__name__
('draw_linear', 'draw_fallback')
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ncd.ir.axes import Type
from ncd.ir.diagram import Block, Box
from ncd.ir.rules import DRAWING, SCALAR_DRAWING
from ncd.render.layout import Frag, Layout, flat
from ncd.render.model import Circle, Footprint, Path, Polygon, Port, Rect
from ncd.render.pictogram_shapes import (  # noqa: F401 - the building blocks; their names are still answered here
    INK,
    LEARNED_FILL,
    _by_name,
    _cap_x,
    _centre,
    _ports,
    arrowhead,
    generic_box,
    glyph_through,
    meeting,
    wiring,
)
from ncd.render.style import fence_colour
from ncd.render.typeset import DiagramAxes, Piece, factor_pieces, pieces, typeset_text
from ncd.torch.read_back import KEYS

__all__ = ["BOX_RULES", "SCALAR_RULES", "rule", "scalar", "box_rule", "scalar_rule", "generic_box", "wiring",
           "glyph_through", "component_box", "arrowhead", "meeting", "INK", "LEARNED_FILL",
           "LABELLED_BOX_OPS", "LABELLED_BOX_FAMILIES"]

Rule = Callable[[Layout, Box], Frag]
ScalarRule = Callable[[Layout, Box, Type, Type], Frag]

BOX_RULES: dict[str, Rule] = {}
SCALAR_RULES: dict[str, ScalarRule] = {}

#: Primitives deliberately drawn as their label in a box (:func:`draw_fallback`): opaque imports,
#: constants, and (by family) the backward-pass helpers.  A coverage test requires every other
#: primitive to have a rule, so a new primitive gets its pictogram chosen on purpose.
LABELLED_BOX_OPS = frozenset({"opaque", "view", "constant", "sinusoidal"})
LABELLED_BOX_FAMILIES = frozenset({"derivative", "opaque"})

def rule(*ops: str) -> Callable[[Rule], Rule]:
    """Register a box drawing rule for primitives ``ops``."""

    def register(fn: Rule) -> Rule:
        for op in ops:
            BOX_RULES[op] = fn
        return fn

    return register


def scalar(*ops: str) -> Callable[[ScalarRule], ScalarRule]:
    """Register a rule drawing scalar primitive ``ops`` woven over whole tensors."""

    def register(fn: ScalarRule) -> ScalarRule:
        for op in ops:
            SCALAR_RULES[op] = fn
        return fn

    return register


def box_rule(op: str) -> Rule:
    """The drawing rule of ``op``: a family's ``ncd.ir.rules.DRAWING`` rule, a rule here, or the labelled box."""
    _load_families()
    typed = DRAWING.get(op)
    if typed is not None:
        return lambda layout, box: typed(box.prim, layout, box)
    return BOX_RULES.get(op, draw_fallback)


def scalar_rule(op: str) -> ScalarRule:
    _load_families()
    typed = SCALAR_DRAWING.get(op)
    if typed is not None:
        return lambda layout, box, dom, cod: typed(box.prim, layout, box, dom, cod)
    return SCALAR_RULES.get(op, draw_scalar_fallback)


_LOADED = False


def _load_families() -> None:
    global _LOADED
    if not _LOADED:
        import ncd.render.pictograms_more  # noqa: F401  (registers the other families)
        import ncd.render.pictograms_scan  # noqa: F401  (the scan: ncd.prims.scan)
        _LOADED = True  # after the import: another thread must not see half of the families


def shown_meta(node: Block) -> list[tuple[str, Any]]:
    """The entries of a block's ``meta`` its component box shows as parameters after its name."""
    # (a backward block's "inputs"/"outputs" name its ports: a title listing 30 of them is not read)
    return [(k, v) for k, v in node.meta if k not in ("defaults", "legend", "mesh", "placements", "fsdp", "inputs", "outputs",
                                                   *KEYS)]


def component_box(ctx: Layout, node: Block, title: str | None = None) -> Frag:
    """A collapsed block: a 3-D box with its name (or ``title``) and parameters; the sizes label its ports."""
    params = ", ".join(str(v) if k.startswith("_") else f"{k}={v}" for k, v in shown_meta(node))
    parts = typeset_text(title or node.name) + ((Piece(f" ({params})"),) if params else ())
    fill = fence_colour(node.name, avoid=ctx.fences[-1] if ctx.fences else None)
    frag = generic_box(ctx, node.dom, node.cod, parts, fill=fill, kind="component", name=node.name)
    d = 6.0
    rect = next(it for it in frag.items if isinstance(it, Rect))
    x1, top, bottom = rect.w, rect.y, rect.y + rect.h
    fid = rect.owner
    frag.add(Polygon(((0.0, top), (d, top - d), (x1 + d, top - d), (x1, top)), fill=_darker(rect.fill), role="shadow", owner=fid))
    frag.add(Polygon(((x1, top), (x1 + d, top - d), (x1 + d, bottom - d), (x1, bottom)), fill=_darker(rect.fill, 0.8),
                     role="shadow", owner=fid))
    frag.items = [it for it in frag.items if not (isinstance(it, (Port, Footprint)))]
    frag.w = x1 + d
    frag.top = top - d
    frag.add(Footprint(0.0, top - d, x1 + d, bottom - top + d, fid or 0, "component", node.name))
    _ports(frag, fid or 0)
    return frag


def _darker(colour: str | None, factor: float = 0.9) -> str:
    colour = colour or "#dddddd"
    r, g, b = (int(colour[k:k + 2], 16) for k in (1, 3, 5))
    return f"#{int(r * factor):02x}{int(g * factor):02x}{int(b * factor):02x}"


# -- core families ---------------------------------------------------------------------------------
@rule("linear")
def draw_linear(ctx: Layout, box: Box) -> Frag:
    """Bold **L** (**L₊** with bias), superscript name: ``L^Q``."""
    parts = [Piece("L")]
    if getattr(box.prim, "bias", False):
        parts.append(Piece("+", script=-1))
    if box.label:
        parts.append(Piece(box.label, script=1))
    return generic_box(ctx, box.dom, box.cod, parts, size=ctx.style.letter_size, bold_text=True, fill=LEARNED_FILL,
                       stroke=None, name=box.text())


@rule("einsum")
def draw_einsum(ctx: Layout, box: Box) -> Frag:
    """Caps for contractions, dots for diagonals, crossings for transposes, on a tinted region."""
    sources, caps = _by_name(box.dom, box.cod)
    return wiring(ctx, box.dom, box.cod, sources, caps, fill="#e3dcf1", name="einsum")


@rule("unit")
def draw_unit(ctx: Layout, box: Box) -> Frag:
    """The cup: two wires born joined."""
    p = ctx.style.pitch
    outs = ctx.stack(box.cod)
    y0, y1 = flat(outs)
    w = 1.6 * p
    uid = ctx.new_id()
    frag = Frag(w, y0 - 0.5 * p, y1 + 0.5 * p, [], outs)
    x0 = 0.45 * p
    frag.add(Path((("M", w, y0), ("L", x0 + 0.3 * p, y0), ("C", x0 - 0.2 * p, y0, x0 - 0.2 * p, y1, x0 + 0.3 * p, y1),
                   ("L", w, y1)), owner=uid))
    frag.add(Footprint(0.0, frag.top, w, frag.bottom - frag.top, uid, "wiring", "unit"))
    _ports(frag, uid)
    return frag


@rule("softmax")
def draw_softmax(ctx: Layout, box: Box) -> Frag:
    """The triangle ``◁`` on the normalised wire (``log`` written under it for log-softmax)."""
    p = ctx.style.pitch
    ins = ctx.stack(box.dom)
    y = flat(ins)[0]
    w = 1.9 * p
    sid = ctx.new_id()
    h = 0.5 * p
    frag = Frag(w, y - 0.75 * p, y + 0.75 * p, ins, [list(s) for s in ins])
    frag.add(Rect(0.0, frag.top, w, 1.5 * p, fill="#d5ecd6", stroke=None, radius=2.0, owner=sid))
    frag.add(Path.through([(0.0, y), (w, y)], owner=sid))
    frag.add(Polygon(((0.3 * p, y), (w - 0.3 * p, y - h), (w - 0.3 * p, y + h)), fill="#ffffff", stroke=INK, owner=sid))
    if getattr(box.prim, "log", False):
        frag.add(*ctx.text(typeset_text("log"), 0.3 * p, frag.bottom + 9, 8.0, owner=sid))
        frag.include(frag.top, frag.bottom + 11)
    frag.add(Footprint(0.0, frag.top, w, frag.bottom - frag.top, sid, "glyph", "softmax"))
    _ports(frag, sid)
    return frag


@rule("copy")
def draw_copy(ctx: Layout, box: Box) -> Frag:
    n_in = sum(len(s) for s in box.dom)
    sources = [[k % n_in] for k in range(sum(len(s) for s in box.cod))] if n_in else []  # scalars: no wires
    return wiring(ctx, box.dom, box.cod, sources, align="top", name="copy", width=1.8 * ctx.style.pitch)


@rule("delete")
def draw_delete(ctx: Layout, box: Box) -> Frag:
    caps = [[i] for i in range(sum(len(s) for s in box.dom))]
    return wiring(ctx, box.dom, box.cod, [], caps, name="delete", width=1.4 * ctx.style.pitch)


@rule("swap")
def draw_swap(ctx: Layout, box: Box) -> Frag:
    offsets, k = [], 0
    for seg in box.dom:
        offsets.append(k)
        k += len(seg)
    perm = box.prim.perm  # type: ignore[attr-defined]
    sources = [[offsets[j] + a] for j in perm for a in range(len(box.dom[j]))]
    return wiring(ctx, box.dom, box.cod, sources, name="swap")


@rule("transpose")
def draw_transpose(ctx: Layout, box: Box) -> Frag:
    return wiring(ctx, box.dom, box.cod, [[k] for k in box.prim.perm], name="transpose")  # type: ignore[attr-defined]


@rule("rename")
def draw_rename(ctx: Layout, box: Box) -> Frag:
    """Renaming changes only the labels: the wires run straight on."""
    n = sum(len(s) for s in box.dom)
    return wiring(ctx, box.dom, box.cod, [[k] for k in range(n)], name="rename", width=0.8 * ctx.style.pitch)


def _slot(box: Box) -> tuple[Piece, ...]:
    prim = box.prim
    key = typeset_text(getattr(prim, "key", "C"))
    index = getattr(prim, "index", None)
    return key + (tuple(Piece(q.text, q.italic, -1) for q in pieces(index)) if index is not None else ())


@rule("save")
def draw_save(ctx: Layout, box: Box) -> Frag:
    """``→ C_λ``: the wires go on; every wire of the tensor branches at a dot into the tag (one stem through the dots)."""
    p, size = ctx.style.pitch, ctx.style.text_size
    ins = ctx.stack(box.dom)
    ys = flat(ins) or [0.0]
    parts = (Piece("→ "),) + _slot(box)
    tw, ta, td = ctx.text_size(parts, size)
    w = tw + 16.0
    tid = ctx.new_id()
    tag_bottom = ys[0] - 0.55 * p
    tag_top = tag_bottom - ta - td - 6.0
    frag = Frag(w, tag_top, max(ys), ins, [list(s) for s in ins])
    for y in flat(ins):
        frag.add(Path.through([(0.0, y), (w, y)]))
    for y in ys:
        frag.add(Circle(5.0, y, 2.2))
    frag.add(Path((("M", 5.0, max(ys)), ("L", 5.0, tag_bottom)), owner=tid))
    frag.add(Rect(2.0, tag_top, w - 4.0, tag_bottom - tag_top, fill="#f8f1b8", stroke=None, radius=2.0, owner=tid))
    frag.add(*ctx.text(parts, 8.0, tag_bottom - 3.0 - td, size, owner=tid))
    frag.add(Footprint(2.0, tag_top, w - 4.0, tag_bottom - tag_top, tid, "box", "save"))
    frag.add(Port(5.0, tag_bottom, tid))
    return frag


@rule("load")
def draw_load(ctx: Layout, box: Box) -> Frag:
    return generic_box(ctx, box.dom, box.cod, _slot(box) + (Piece(" →"),), fill="#f8f1b8", stroke=None, name="load")


def draw_fallback(ctx: Layout, box: Box) -> Frag:
    """Any primitive without its own pictogram: its label in a box (bold border when learned)."""
    return generic_box(ctx, box.dom, box.cod, typeset_text(box.text()), width=2.2 if box.learned else 0.9,
                       name=box.prim.op)


# -- scalar primitives woven over tensors -----------------------------------------------------------
@scalar("elementwise")
def draw_activation(ctx: Layout, box: Box, dom: Type, cod: Type) -> Frag:
    """``➤R➤`` above the wires, which run straight through."""
    label = box.prim.label()
    parts = (Piece(label, italic=len(label) == 1),)
    return glyph_through(ctx, dom, parts, name=label)


@scalar("scale")
def draw_scale(ctx: Layout, box: Box, dom: Type, cod: Type) -> Frag:
    """``∗k^−1/2 ➤`` above the wires: the scale arrow labelled with its factor."""
    parts = (Piece("∗"),) + factor_pieces(box.prim.factor, ctx.axes or DiagramAxes()) + (Piece(" ➤"),)  # type: ignore[attr-defined]
    return glyph_through(ctx, dom, parts, arrows=False, name="scale")


@scalar("add", "multiply")
def draw_merge(ctx: Layout, box: Box, dom: Type, cod: Type) -> Frag:
    """Equal wires meet at dots under ``+`` (or ``⊙``)."""
    return meeting(ctx, dom, cod, (Piece("+" if box.prim.op == "add" else "⊙"),), box.prim.op)


def draw_scalar_fallback(ctx: Layout, box: Box, dom: Type, cod: Type) -> Frag:
    if len(dom) == 1 and len(cod) == 1 and dom[0].same(cod[0]):
        return glyph_through(ctx, dom, typeset_text(box.text()), name=box.prim.op)
    return meeting(ctx, dom, cod, typeset_text(box.text()), box.prim.op)

