"""The page layout's summaries of a laid-out tree (its items' bounding box, its smallest text, whether an item meets
a box) and of a diagram (the names a definition's fresh symbols must avoid) equal the same figures read off the
flattened items, and off every node of the diagram, one by one."""

from __future__ import annotations

from typing import Any

import pytest

import ncd
from ncd.render import layout
from ncd.render.extents import _any_hit, _bounds, _extent, _memo_up, _own_smallest, smallest_text
from ncd.render.frag import Frag
from ncd.render.layout import Layout, _read_axes
from ncd.render.model import Path, Text, flatten
from ncd.render.style import Style
from ncd.render.typeset import wire_axes_read
from ncd.render.wrap import _names

MODELS = sorted(ncd.zoo.MODELS)


def _tree(name: str, **options: object) -> Frag:
    drawing = layout(ncd.zoo.MODELS[name](), **options)  # type: ignore[arg-type]
    assert drawing.tree is not None
    return drawing.tree[0]  # type: ignore[no-any-return]


def _flat(frag: Frag) -> list[object]:
    out: list[object] = []
    flatten(frag, 0.0, 0.0, out)  # type: ignore[arg-type]
    return out


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("options", [{}, {"depth": 1}, {"page": "slide"}])
def test_tree_summaries_equal_the_flattened_items(name: str, options: dict[str, object]) -> None:
    frag = _tree(name, **options)
    items = _flat(frag)
    boxes = [b for b in map(_bounds, items) if b is not None]  # type: ignore[arg-type]
    assert boxes
    want = (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))
    got = _extent(frag, {})
    assert got is not None and all(abs(g - w) < 1e-6 for g, w in zip(got, want))
    sizes = [run.size for it in items if isinstance(it, Text) for run in it.runs if run.text.strip()]
    assert smallest_text(frag, 99.0, {}) == min(sizes + [99.0])
    # a box around each of a few items meets the tree; a box beside the whole drawing meets nothing
    for it in [it for it in items if isinstance(it, (Text, Path))][::37][:12]:
        b = _bounds(it)  # type: ignore[arg-type]
        assert b is not None
        assert _any_hit(frag, 0.0, 0.0, (b[0] - 0.5, b[1] - 0.5, b[2] + 0.5, b[3] + 0.5), {})
    assert not _any_hit(frag, 0.0, 0.0, (want[2] + 5.0, want[1], want[2] + 50.0, want[3]), {})
    # every placed fragment's box in the extent's table (its own items', then its placed fragments' added) is the box
    # of its own flattened items
    table: dict[Any, Any] = {}
    _extent(frag, table)
    for sub, box in table[("extent",)][0].values():
        sub_boxes = [b for b in map(_bounds, _flat(sub)) if b is not None]  # type: ignore[arg-type]
        if not sub_boxes:
            assert box is None
            continue
        assert box is not None and all(abs(g - w) < 1e-6 for g, w in zip(box, (
            min(b[0] for b in sub_boxes), min(b[1] for b in sub_boxes), max(b[2] for b in sub_boxes),
            max(b[3] for b in sub_boxes))))
    # the extent's walk fills the smallest text's table too (the page reads it after the legend's corner): every
    # fragment's entry is the one smallest_text's own walk finds
    memo: dict = {}
    _extent(frag, memo)
    by_extent = memo[("smallest",)][0]
    assert smallest_text(frag, 99.0, memo) == min(sizes + [99.0])
    own: dict = {}
    _memo_up(frag, own, "smallest", _own_smallest)
    assert by_extent.keys() == own[("smallest",)][0].keys()
    assert all(by_extent[k][0] is f and by_extent[k][1] == v for k, (f, v) in own[("smallest",)][0].items())


def _names_node_by_node(diagram: ncd.Diagram) -> set[str]:
    out: set[str] = set()
    for node in diagram.walk():
        if isinstance(node, ncd.Repeat):
            out.add("λ" if node.var in ("lam", "lambda", "λ") else node.var)
        out.update(a.name for typ in (node.dom, node.cod) for seg in typ for a in seg)
    return out


@pytest.mark.parametrize("name", MODELS)
def test_names_from_the_wires_read_once_equal_every_nodes_names(name: str) -> None:
    diagram = ncd.zoo.MODELS[name]()
    read = wire_axes_read(diagram)
    want = _names_node_by_node(diagram)
    assert _names(diagram) == want
    assert _names(diagram, read[0] + read[1]) == want
    ctx = Layout(Style())
    _read_axes(ctx, diagram)
    assert ctx.wire_axes is not None and ctx.wire_axes[0] is diagram
    assert {a.name for a in ctx.wire_axes[1]} <= want
