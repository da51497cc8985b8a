"""Wires that run through whole rows of a wrapped page untouched are labelled as the paper labels a wire: where they
come in, where a box takes or makes them, where the drawing ends — not again at both ends of every row.

The drawings are read back as finished items (the text of each label, where it stands), independently of how the
page layout chose its rows.
"""

from __future__ import annotations

import ncd
from ncd.render import layout
from ncd.render.check import problems
from ncd.render.measure import drawing_figures
from ncd.render.model import Drawing, Path, Rect, Text


def _chain(n: int, taken_at: int | None = None) -> ncd.Diagram:
    """``n`` learned maps on ``m``, with a bundle ``q r`` running past them; ``taken_at``: the step at which a
    learned map ``B`` takes the bundle too."""
    d = ncd.Identity.of("m, q:7 r:5")
    for k in range(n):
        if k == taken_at:
            d = d >> (ncd.Linear("m -> m", name=f"W{k}") @ ncd.Linear("q:7 r:5 -> q:7 r:5", name="B"))
        else:
            d = d >> (ncd.Linear("m -> m", name=f"W{k}") @ ncd.Identity.of("q:7 r:5"))
    return d


def _labels(drawing: Drawing, string: str) -> list[Text]:
    return [t for t in drawing.of(Text) if t.string == string]


def _rows(drawing: Drawing) -> int:
    """The rows of a page: one more than the row breaks, each break an arrow out of a row for each of its wires."""
    arrows = [p for p in drawing.of(Path) if p.arrow and p.role == "wire"]
    return 1 + len(arrows) // (2 * 3)


def test_a_bundle_passing_every_row_is_labelled_where_it_comes_in_and_where_the_drawing_ends() -> None:
    drawing = layout(_chain(24))
    rows = _rows(drawing)
    assert rows >= 3, rows
    # each row labels the wire its boxes change at both ends; the bundle is labelled twice, not at every row's ends
    assert len(_labels(drawing, "m")) >= 2 * rows
    for label in ("q = 7", "r = 5"):
        found = _labels(drawing, label)
        assert len(found) == 2, (label, len(found), rows)
        first, last = sorted(found, key=lambda t: t.y)
        assert first.x < 40 and last.y > first.y + 100  # the first row's start, the last row's end
    fig = drawing_figures(drawing)
    assert fig.aspect <= 3.0 and fig.min_label_pt >= 6.0
    assert problems(drawing) == []


def test_a_bundle_is_labelled_again_where_a_box_takes_it() -> None:
    drawing = layout(_chain(24, taken_at=14))
    assert _rows(drawing) >= 3
    (name,) = [t for t in drawing.of(Text) if t.string == "LB"]
    box = min((r for r in drawing.of(Rect) if r.x <= name.x <= r.x + r.w and r.y <= name.y <= r.y + r.h),
              key=lambda r: r.w * r.h)
    found = _labels(drawing, "q = 7")
    # on the box's row, just before it (going in) and just after it (coming out)
    row = [t for t in found if box.y - 20 <= t.y <= box.y + box.h + 20]
    assert any(t.x < box.x for t in row) and any(t.x > box.x + box.w for t in row), [(t.x, t.y) for t in found]
    # and otherwise where the drawing starts and ends, and where the row after the box's row takes it up: not at
    # both ends of every row (9 labels)
    assert len(found) <= 6, [(t.x, t.y) for t in found]
    assert problems(drawing) == []


def test_a_chain_gathered_into_side_by_side_branches_still_wraps_into_rows() -> None:
    """Twenty-three steps on ``m`` and one on the bundle are one run of one-branch steps, gathered into two lanes
    side by side (:mod:`ncd.render.lanes`): the diagram's only column.  Too wide for a row, it is drawn step by step
    in rows like any chain (it was one row 1,666 points wide, 18:1)."""
    d = ncd.Identity.of("m, q:7 r:5")
    for k in range(24):
        step = ncd.Identity.of("m") @ ncd.Linear("q:7 r:5 -> q:7 r:5", name="B") if k == 14 else \
            ncd.Linear("m -> m", name=f"W{k}") @ ncd.Identity.of("q:7 r:5")
        d = d >> step
    drawing = layout(d)
    fig = drawing_figures(drawing)
    assert fig.aspect <= 3.0 and fig.min_label_pt >= 6.0, (drawing.width, drawing.height)
    assert _rows(drawing) >= 3
    assert problems(drawing) == []
