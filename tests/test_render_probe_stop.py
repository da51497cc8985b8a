"""The page layout asks whether a column is wider than a row with a bound (``Probing.probe(..., stop=limit)``): the
measure stops once its lower bound of the width is past the limit.  Checked against the measure without the bound
(the same answer for every column and limit, the whole lower bound wherever it is not past the limit) and against
the page laid out without it, byte for byte."""

from __future__ import annotations

from typing import Any

import pytest

import ncd
from ncd.ir.diagram import Block, Diagram, Par, Repeat, Seq, Weave
from ncd.render import to_svg
from ncd.render.layout import Layout, _read_axes
from ncd.render.probing import Probing
from ncd.render.style import Style

WIDTHS = [3, 5, 7, 11, 13, 17]


def _stack() -> ncd.Diagram:
    """Blocks of one family in sequence, each holding a wide part: columns far wider than a row."""
    return ncd.Seq.of(*[(ncd.Linear(f"n{k}:{WIDTHS[k]} -> f:300") >> ncd.GELU() >> ncd.Linear(f"f:300 -> n{k + 1}:"
                                                                                             f"{WIDTHS[k + 1]}")
                         >> ncd.Softmax(f"n{k + 1}")).block(f"layers.{k}: Layer") for k in range(len(WIDTHS) - 1)])


CASES = {"stack": _stack, "resnet": ncd.zoo.resnet, "unet": ncd.zoo.unet, "gpt2": ncd.zoo.gpt2,
         "transformer": ncd.zoo.transformer}


def _containers(diagram: Diagram) -> list[Diagram]:
    """Every sequence, parallel part, weave, block and repetition of ``diagram``, outermost first."""
    out: list[Diagram] = []
    stack: list[Diagram] = [diagram]
    while stack:
        node = stack.pop(0)
        if isinstance(node, (Seq, Par, Weave, Block, Repeat)):
            out.append(node)
        stack.extend(node.children())
    return out


def _context(diagram: Diagram) -> Layout:
    ctx = Layout(Style.from_options())
    _read_axes(ctx, diagram)
    ctx.memo = {}
    return ctx


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_bounded_measure_tells_what_the_whole_one_tells(name: str) -> None:
    diagram = CASES[name]()
    nodes = _containers(diagram)
    whole = {id(n): _context(diagram).probe(n, text=False)[0] for n in nodes}
    stopped = 0
    for fraction in (0.1, 0.3, 0.6, 0.9, 1.2):
        ctx = _context(diagram)  # (one context for every node at this limit: the bounds kept are read again)
        for node in nodes:
            limit = fraction * whole[id(node)]
            w = ctx.probe(node, text=False, stop=limit)[0]
            assert (w > limit) == (whole[id(node)] > limit), (name, type(node).__name__, limit)
            if w <= limit:
                assert w == whole[id(node)]  # not past the bound: the whole lower bound
            stopped += w < whole[id(node)]
            assert ctx.probe(node, text=False, stop=limit)[0] == w  # (asked again: the same)
    if name in ("stack", "gpt2", "transformer"):
        assert stopped  # (the bound does stop the measure somewhere: the comparison above can fail)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("page", ["column", "slide"])
def test_the_page_is_the_same_without_the_bound(name: str, page: str, monkeypatch: pytest.MonkeyPatch) -> None:
    diagram = CASES[name]()
    bounded = to_svg(diagram, page=page, embed_fonts=False)
    probe = Probing.probe

    def whole(self: Probing, node: Diagram, count: int = 1, group: bool = True, text: bool = True,
              stop: float = float("inf")) -> Any:
        return probe(self, node, count, group, text)  # (measured whole, whatever the bound)

    monkeypatch.setattr(Probing, "probe", whole)
    assert to_svg(diagram, page=page, embed_fonts=False) == bounded
