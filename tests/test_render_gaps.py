"""The gap between two columns, as the layout makes it (``LayoutContext.gap``).

A gap without a note finds its size and bounding box once per distinct wire label (the wires of one label
counted by their lowest and highest heights); a gap with a note looks every wire's label up and adds up every
wire's extent.  Both are checked against each other, and the bounding box a gap declares before its items exist
against the box of the items it then makes (``frag._bounds`` of each, as the page's overlap test reads them).
"""

from __future__ import annotations

import pytest

from ncd.ir.axes import parse_type
from ncd.render.context import LayoutContext
from ncd.render.extents import _bounds, _extent
from ncd.render.frag import Deferred
from ncd.render.style import Style

TYPES = ["b n m, n, b", "s d, s d, s d, h", "x̄/2 k, n", "b t (h*d)", "a"]


def _box(items: list) -> tuple[float, float, float, float]:
    boxes = [b for b in map(_bounds, items) if b is not None]
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


@pytest.mark.parametrize("text", TYPES)
@pytest.mark.parametrize("shift", [0.0, 7.25, -31.5])
@pytest.mark.parametrize("labels", [True, False])
def test_a_gap_measured_per_label_equals_one_measured_per_wire(text: str, shift: float, labels: bool) -> None:
    ctx = LayoutContext(Style())
    typ = parse_type(text, n=64, m=8, b=2, s=128, d=32, h=4, t=16, k=10, x=256, a=3)
    left = ctx.stack(typ)
    right = ctx.stack(typ, shift)
    per_label, w = ctx.gap(left, right, typ, labels)
    # a note whose subscripts are all None labels every wire as before, through the per-wire path
    per_wire, w2 = ctx.gap(left, right, typ, labels, note=((None,) * len(typ), None))
    assert isinstance(per_label, Deferred) and isinstance(per_wire, Deferred)
    assert (w, per_label.top, per_label.bottom, per_label.smallest) == (w2, per_wire.top, per_wire.bottom,
                                                                        per_wire.smallest)
    assert per_label.extent == per_wire.extent
    items = per_label.items
    assert items == per_wire.items
    assert per_label.extent == _box(items)  # declared before the items were made: the items' own box
    assert _extent(per_label, {}) == per_label.extent
    texts = [it for it in items if type(it).__name__ == "Text"]
    assert len(texts) == (sum(len(seg) for seg in typ) if labels else 0)  # one label per wire


@pytest.mark.parametrize("text", TYPES)
@pytest.mark.parametrize("shift", [0.0, -31.5])
def test_a_gap_labelling_some_wires_measures_only_those(text: str, shift: float) -> None:
    ctx = LayoutContext(Style())
    typ = parse_type(text, n=64, m=8, b=2, s=128, d=32, h=4, t=16, k=10, x=256, a=3)
    left, right = ctx.stack(typ), ctx.stack(typ, shift)
    wires = sum(len(seg) for seg in typ)
    mask = tuple(k % 2 == 1 for k in range(wires))  # every other wire labelled
    per_label, w = ctx.gap(left, right, typ, mask)
    per_wire, w2 = ctx.gap(left, right, typ, mask, note=((None,) * len(typ), None))
    assert isinstance(per_label, Deferred) and isinstance(per_wire, Deferred)
    assert (w, per_label.top, per_label.bottom, per_label.smallest) == (w2, per_wire.top, per_wire.bottom,
                                                                        per_wire.smallest)
    assert per_label.items == per_wire.items
    assert per_label.extent == _box(per_label.items)
    texts = [it for it in per_label.items if type(it).__name__ == "Text"]
    heights = [y for ys in left for y in ys]
    assert len(texts) == sum(mask)
    # each label sits just above its own wire: the labelled wires' heights, in order
    lifted = [t.y + ctx.label_rise(t.descent) for t in texts]
    assert lifted == pytest.approx([y for y, on in zip(heights, mask) if on])


def test_a_wire_is_labelled_where_a_box_makes_or_takes_it_not_where_it_runs_past() -> None:
    """``(f @ n) >> (f @ n) >> (f @ n) >> (m @ g)``: the ``n`` wires run past three boxes before ``g`` takes them,
    so they are labelled at the diagram's input, before ``g`` and at its output — not in the gaps between the
    ``f``s, where the ``m`` wires each ``f`` makes are labelled."""
    import ncd
    from ncd.render import layout
    from ncd.render.model import Text

    m, n = ncd.Identity.of("b m"), ncd.Identity.of("b n")
    g = n >> ncd.Linear("n -> n")
    d = ((m >> ncd.Linear("m -> m")) @ n) >> ((m >> ncd.Linear("m -> m")) @ n) >> ((m >> ncd.Linear("m -> m")) @ n) \
        >> (m @ g)
    where: dict[str, list[float]] = {}
    for it in layout(d).visible:
        if isinstance(it, Text) and it.role == "label":
            where.setdefault("".join(r.text for r in it.runs), []).append(round(it.x, 1))
    gaps = sorted(set(where["m"]))  # the input, the three gaps and the output
    assert len(gaps) == 5 and where["m"].count(gaps[0]) == 1
    assert sorted(set(where["n"])) == [gaps[0], gaps[3], gaps[4]]
    assert sorted(where["b"]) == sorted(gaps + [gaps[0], gaps[3], gaps[4]])  # one b wire in each segment
    none = layout(d, labels="ends")  # the ends alone, as before
    assert sum(isinstance(it, Text) and it.role == "label" for it in none.visible) == 8


def test_the_wires_running_past_are_those_of_following_each_wire_part_by_part() -> None:
    """``_passes`` (which wires a node leaves untouched, input position → output position, a one-tuple as
    ``_followed``'s) against following each
    input wire through the node: past an identity, moved by the parts beside it, stopped by a box; on random
    chains of parallel steps, nested, with identities of several segments and boxes that add or drop wires."""
    import random

    import ncd
    from ncd.ir.diagram import Identity, Par, Seq
    from ncd.render.wires import _passes

    def follow(node: ncd.Diagram) -> dict[int, int]:
        if isinstance(node, Identity):
            return {k: k for k in range(sum(len(seg.axes) for seg in node.dom.segments))}
        if isinstance(node, Par):
            out: dict[int, int] = {}
            i = o = 0
            for part in node.parts:
                for a, b in follow(part).items():
                    out[i + a] = o + b
                i += sum(len(seg.axes) for seg in part.dom.segments)
                o += sum(len(seg.axes) for seg in part.cod.segments)
            return out
        if isinstance(node, Seq):
            out = follow(node.parts[0])
            for part in node.parts[1:]:
                step = follow(part)
                out = {a: step[b] for a, b in out.items() if b in step}
            return out
        return {}

    rng = random.Random(0)
    kinds = [("b n", ncd.Linear("n -> n")), ("b n m", ncd.Einsum("b n m -> b m")), ("b n, b n", ncd.Add()),
             ("b n", ncd.ReLU())]
    checked = 0
    for _ in range(60):
        parts = []
        for _ in range(rng.randint(1, 5)):
            text, box = rng.choice(kinds)
            parts.append(box if rng.random() < 0.4 else ncd.Identity.of(text))
        step: ncd.Diagram = Par.of(*parts)
        chain = [step]
        for _ in range(rng.randint(0, 3)):  # the same wires on: identities again, or a box on one of them
            k = rng.randrange(len(parts))
            nxt = [ncd.Identity(p.cod) for p in parts]
            nxt[k] = ncd.Identity(parts[k].cod) if isinstance(parts[k], Identity) or rng.random() < 0.5 else \
                Par.of(ncd.Identity(parts[k].cod))
            chain.append(Par.of(*nxt))
        d = Seq.of(*chain) if len(chain) > 1 else chain[0]
        for node in d.walk():
            assert list(_passes(node).items()) == [(a, (b,)) for a, b in follow(node).items()]
            checked += 1
    assert checked > 100


def test_the_wires_a_gap_label_follows_are_those_of_following_each_wire_through_crossings_and_copies() -> None:
    """``_followed`` (the wires whose label a gap follows from before a node: input position → output positions)
    against following each input wire through the node, a crossing of segments (a ``Swap`` box) moving it to its
    segment's new place and a copy (a ``Copy`` box) to each copy; ``_passes`` (a row's wires run untouched) stops
    them there as at any box.  Random chains of parallel steps holding swaps of two or three segments and copies."""
    import random

    import ncd
    from ncd.ir.diagram import Box, Identity, Par, Seq
    from ncd.prims.structure import CopyOp, SwapOp
    from ncd.render.wires import _followed, _passes

    def width(typ: ncd.Type) -> int:
        return sum(len(seg.axes) for seg in typ.segments)

    def follow(node: ncd.Diagram, boxes: bool) -> dict[int, tuple[int, ...]]:
        if isinstance(node, Identity):
            return {k: (k,) for k in range(width(node.dom))}
        if boxes and isinstance(node, Box) and isinstance(node.prim, SwapOp):
            segs = node.dom.segments
            starts = [sum(len(s.axes) for s in segs[:j]) for j in range(len(segs))]
            out: dict[int, tuple[int, ...]] = {}
            o = 0
            for j in node.prim.perm:  # each input wire, one by one, to where its segment went
                for a in range(len(segs[j].axes)):
                    out[starts[j] + a] = (o,)
                    o += 1
            return dict(sorted(out.items()))
        if boxes and isinstance(node, Box) and isinstance(node.prim, CopyOp):
            n = width(node.dom)
            return {a: tuple(a + n * c for c in range(node.prim.n)) for a in range(n)}
        if isinstance(node, Par):
            out = {}
            i = o = 0
            for part in node.parts:
                for a, bs in follow(part, boxes).items():
                    out[i + a] = tuple(o + b for b in bs)
                i += width(part.dom)
                o += width(part.cod)
            return out
        if isinstance(node, Seq):
            out = follow(node.parts[0], boxes)
            for part in node.parts[1:]:
                step = follow(part, boxes)
                out = {a: tuple(c for b in bs for c in step.get(b, ())) for a, bs in out.items()}
                out = {a: cs for a, cs in out.items() if cs}
            return out
        return {}

    rng = random.Random(1)
    texts = ["b n", "b m k", "b", "n k, b"]
    checked = moved = 0
    for _ in range(100):
        parts: list[ncd.Diagram] = []
        for _ in range(rng.randint(1, 4)):
            kind = rng.random()
            if kind < 0.35:
                segs = rng.sample(texts[:3], rng.randint(2, 3))
                perm = list(range(len(segs)))
                rng.shuffle(perm)
                parts.append(ncd.Swap(", ".join(segs), perm))
            elif kind < 0.5:
                parts.append(ncd.Copy(rng.choice(texts), rng.randint(2, 3)))
            elif kind < 0.65:
                parts.append(ncd.Linear("n -> n").weave("b"))
            else:
                parts.append(ncd.Identity.of(rng.choice(texts)))
        step: ncd.Diagram = Par.of(*parts)
        after = [ncd.Copy(p.cod) if rng.random() < 0.3 else ncd.Identity(p.cod) for p in parts]  # (a chain on)
        d = Seq.of(step, Par.of(*after), ncd.Identity(step.cod)) if rng.random() < 0.5 else step
        for node in d.walk():
            got = _followed(node)
            assert got == follow(node, True)
            assert _passes(node) == follow(node, False)
            moved += got != _passes(node)
            checked += 1
    assert checked > 100 and moved > 20


def test_a_wire_crossing_others_keeps_the_label_it_had_before_the_crossing() -> None:
    """``(f @ n) >> swap >> (g @ m)``: the ``m`` wires ``f`` makes are labelled in the gap after ``f``, not again
    after the crossing that only moves them (``g`` takes the ``n`` wires: they are labelled before it); a crossing
    between two boxes that take its wires labels them on both sides, as before."""
    import ncd
    from ncd.render import layout
    from ncd.render.model import Text

    m, n = ncd.Identity.of("b m"), ncd.Identity.of("b n")
    f, g = ncd.Linear("m -> m").weave("b"), ncd.Linear("n -> n").weave("b")

    def labels(d: ncd.Diagram) -> dict[str, list[float]]:
        where: dict[str, list[float]] = {}
        for it in layout(d, page="none").visible:
            if isinstance(it, Text) and it.role == "label":
                where.setdefault("".join(r.text for r in it.runs), []).append(round(it.x, 1))
        return where

    where = labels((f @ n) >> ncd.Swap("b m, b n") >> (g @ m))
    gaps = sorted(set(where["b"]))  # the input, the gap after f, the gap before g, the output
    assert len(gaps) == 4
    assert sorted(where["m"]) == [gaps[0], gaps[1], gaps[3]]  # not in the gap after the crossing
    assert sorted(where["n"]) == [gaps[0], gaps[2], gaps[3]]  # not in the gap before the crossing
    # boxes on both sides that take the crossed wires: each gap labels every wire
    both = labels((f @ g) >> ncd.Swap("b m, b n") >> (g @ f))
    assert len(both["m"]) == len(both["n"]) == 4
    # a copy's dot: the copy a box takes is labelled before it, the one running on past it is not (its label is the
    # one before the dot); the gap before the dot labels the m wire f made
    where = labels((f @ n) >> (ncd.Copy("b m") @ n) >> (f @ m @ g))
    gaps = sorted(set(where["b"]))  # the input, after f, after the dot, the output
    assert len(gaps) == 4
    assert where["m"].count(gaps[1]) == 1 and where["m"].count(gaps[2]) == 1 and where["m"].count(gaps[3]) == 2
    assert sorted(where["n"]) == [gaps[0], gaps[2], gaps[3]]
