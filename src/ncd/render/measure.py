"""Figures of a finished drawing as it would be printed: aspect ratio and the smallest text.

A drawing goes into a paper scaled to the column width (6.5 inches = 468 points) when it is
wider than that, and at its own size otherwise; the smallest text is then measured in points.

>>> import ncd
>>> fig = drawing_figures(ncd.render.layout(ncd.Identity.of("b m") >> ncd.Linear("m -> n")))
>>> fig.aspect < 3 and fig.min_label_pt >= 6
True
"""

from __future__ import annotations

from dataclasses import dataclass

from ncd.render.model import Drawing, Text

__all__ = ["COLUMN_PT", "MIN_PRINT_PT", "Figures", "drawing_figures"]

#: A 6.5-inch column, in points.
COLUMN_PT = 468.0
#: The smallest text a printed drawing may have, in points.
MIN_PRINT_PT = 6.0


@dataclass(frozen=True)
class Figures:
    """``aspect`` = width / height; ``min_label_pt``: the smallest text run once printed in a column."""

    aspect: float
    min_label_pt: float
    print_scale: float


def drawing_figures(drawing: Drawing, column: float = COLUMN_PT) -> Figures:
    """The printed figures of ``drawing`` in a column ``column`` points wide."""
    scale = min(1.0, column / drawing.width) if drawing.width else 1.0
    sizes = [run.size for t in drawing.of(Text) for run in t.runs if run.text.strip()]
    smallest = min(sizes, default=float("inf")) * scale
    return Figures(drawing.width / drawing.height if drawing.height else float("inf"), smallest, scale)
