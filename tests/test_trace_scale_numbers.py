"""A number a model multiplies by is drawn as that number, not as a size it happens to equal: ``x * 2`` on a wire of
width 4 is ``* 2`` (it printed ``sizes.m ** 0.5``), ``x * 0.5`` beside a wire of width 2 or 4 is ``* 0.5``; a factor
computed from a size (``1/sqrt(8)``, sixteen digits) still reads as that size's power."""

from __future__ import annotations

import math
import warnings

import pytest
import sympy
import torch

import ncd


class Times(torch.nn.Module):
    def __init__(self, factor: float, divide: bool = False) -> None:
        super().__init__()
        self.factor, self.divide = factor, divide

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / self.factor if self.divide else x * self.factor


def _scales(model: torch.nn.Module, x: torch.Tensor) -> tuple[list[sympy.Expr], ncd.trace.TracedDiagram]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, x)
    return [b.prim.factor for b in d.boxes() if b.prim.op == "scale"], d


@pytest.mark.parametrize(("factor", "divide", "width", "printed"), [
    (2, False, 4, "2"), (2.0, False, 4, "2"), (0.5, False, 4, "0.5"), (0.5, False, 2, "0.5"), (4, True, 4, "0.25"),
    (0.125, False, 64, "0.125"), (3, False, 9, "3"), (3, True, 9, "0.3333333333333333"),
    (7, True, 7, "0.14285714285714285")])
def test_a_written_number_is_drawn_as_itself(factor: float, divide: bool, width: int, printed: str) -> None:
    model, x = Times(factor, divide), torch.randn(3, width)
    scales, d = _scales(model, x)
    assert len(scales) == 1 and not scales[0].free_symbols and float(scales[0]) == float(printed)
    assert "sizes." not in d.to_source()
    y = torch.randn(5, width)
    torch.testing.assert_close(d.to_torch(b=5)(y), model(y))


def test_a_factor_computed_from_a_size_still_reads_as_its_power() -> None:
    model, x = Times(math.sqrt(8), divide=True), torch.randn(3, 8)
    scales, d = _scales(model, x)
    assert len(scales) == 1 and scales[0].free_symbols, scales
    torch.testing.assert_close(d.to_torch()(x), model(x))


def _drawn_scale(d: ncd.Diagram) -> str:
    """The text of the scale arrow's label in the SVG drawing (``∗2➤``)."""
    import re

    from ncd.render import to_svg

    texts = [t for t in re.findall(r">([^<]*)<", to_svg(d)) if t.strip()]
    start = texts.index("∗")
    return "".join(texts[start:texts.index("➤", start) + 1])


@pytest.mark.parametrize(("factor", "divide", "width", "drawn"), [
    (2.0, False, 4, "∗2➤"), (4, True, 4, "∗0.25➤"), (3, True, 9, "∗0.3333➤"), (3, True, 5, "∗0.3333➤"),
    (3.0, False, 9, "∗3➤"), (math.sqrt(8), True, 8, "∗m−1/2➤"), (math.sqrt(8), True, 5, "∗8−1/2➤")])
def test_the_drawn_label_of_a_written_number_is_the_number(factor: float, divide: bool, width: int,
                                                          drawn: str) -> None:
    """The drawing does not read a number as a size's power either: ``x * 2`` beside m = 4 was drawn ``∗m^{1/2}``,
    ``x / 3`` as ``∗9^{−1/2}``; only a number no one writes out (8^{−1/2}) is drawn as a power."""
    _, d = _scales(Times(factor, divide), torch.randn(3, width))
    assert _drawn_scale(d) == drawn
    if not divide:  # the same number in a diagram built by hand
        assert _drawn_scale(ncd.Identity.of(f"b m:{width}") >> ncd.Scale(factor)) == drawn


def test_source_at_another_size_of_a_scale_the_model_holds_is_refused() -> None:
    """A factor read as a size's power (``/ sqrt(8)`` beside m = 8: ``m**-0.5``) holds the traced size: the source at
    m = 16 would scale by 16**-0.5, a number the model never used (it printed ``m = 16`` beside an ``nn.Linear(8, 8)``)
    and is refused, as :meth:`to_torch` refuses it; at the traced size it is the model's."""
    model, x = Times(math.sqrt(8), divide=True), torch.randn(3, 8)
    _, d = _scales(model, x)
    with pytest.raises(ncd.TraceError, match="m=8"):
        d.to_source(m=16)
    with pytest.raises(ncd.TraceError, match="m=8"):
        d.to_torch(m=16)
    # (lowered as the model's division by the root: tests/test_trace_exact_division.py)
    assert "/ (sizes.m ** 0.5)" in d.to_source(m=8) and "/ (sizes.m ** 0.5)" in d.to_source(b=5)
