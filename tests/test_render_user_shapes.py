"""Drawings of diagrams users build that no corpus model has: a bind of 50 axes (a legend row of one long product),
names with ``_``/``^`` before no token.  Each is checked on the finished drawing: printed in a 468-pt column its
text is 6 pt or more, the layout's own checks find nothing, and no character of a name is lost."""

from __future__ import annotations

import ncd
from ncd.ir.size import size
from ncd.render import layout
from ncd.render.check import problems
from ncd.render.measure import drawing_figures
from ncd.render.model import Rect, Text
from ncd.render.typeset import pieces, symbol_pieces


def test_a_legend_row_of_one_long_product_breaks_after_its_factors() -> None:
    axes = [f"k{i}" for i in range(50)]
    drawing = layout(ncd.Bind(" ".join(axes) + " -> m"))
    fig = drawing_figures(drawing)
    assert fig.min_label_pt >= 6.0 and fig.aspect <= 3.0, fig  # was 823 pt wide: its subscripts printed at 4.4 pt
    assert not problems(drawing)
    box = next(r for r in drawing.of(Rect) if r.role == "legend")
    inside = [t for t in drawing.of(Text) if box.x <= t.x and t.x + t.width <= box.x + box.w + 0.01
              and box.y <= t.y <= box.y + box.h]
    rows = [t for t in inside if t.string != "Legend"]
    assert len(rows) >= 2 and all(t.x + t.width <= box.x + box.w for t in rows)
    # the lines, read in order, are the row as one line would write it: every factor once
    (key, value), = drawing.legend
    whole = "".join(p.text for p in symbol_pieces(key)) + " = " + "".join(p.text for p in pieces(size(value)))
    assert "".join(t.string for t in sorted(rows, key=lambda t: t.y)) == whole
    assert whole.count("k") == 50 and whole.count("·") == 49


def test_underscore_and_caret_before_no_token_are_printed() -> None:
    name = 'blk &<>$_%#{}\\"^!'
    drawing = layout((ncd.Identity.of("b m") >> ncd.Linear("m -> n")).block(name))
    texts = "".join(t.string for t in drawing.of(Text))
    assert name in texts  # was 'blk &<>$%#{}\\"' and an empty subscript: the _ and ^ were dropped
    assert not problems(drawing)


def test_depth_zero_wraps_a_long_sequence_into_rows_of_component_boxes() -> None:
    # depth=0 drew any diagram as one row: 200 blocks were 14,212 pt wide (text printed at 0.36 pt), 30 boxes with no
    # block at all 1,773 pt; a diagram that is itself a block is still one component box
    blocks = ncd.Identity.of("b m")
    for i in range(200):
        blocks = blocks >> (ncd.Linear("m -> m") >> ncd.ReLU()).block(f"layer{i}")
    boxes = ncd.Identity.of("b t h m")
    for i in range(30):
        boxes = boxes >> ncd.Linear("m -> m", name=f"p{i}")
    for d, names in ((blocks, [f"layer{i}" for i in range(200)]), (boxes, None)):
        drawing = layout(d, depth=0)
        fig = drawing_figures(drawing)
        assert fig.min_label_pt >= 6.0 and fig.aspect <= 3.0 and not problems(drawing), fig
        texts = [t.string for t in drawing.of(Text)]
        assert not any(s.rstrip().endswith("=") for s in texts)  # no definitions: depth 0 shows no insides
        if names:
            assert sorted(s for s in texts if s.startswith("layer")) == sorted(names)  # each block once, as a box
    whole = layout(blocks.block("net"), depth=0)
    assert [t.string for t in whole.of(Text) if t.string == "net"] == ["net"] and whole.width < 150
