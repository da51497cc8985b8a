"""The SVG painter paints a deferred fragment's steps (its wires, labels and arrows as the layout gives them, no
records made) exactly as it paints the records those steps make: the same SVG, byte for byte, on gallery models and
traced models in every page style, compared with the same drawing painted after every fragment's items were read."""

from __future__ import annotations

import functools
import warnings

import pytest
import torch

import ncd
from ncd.render import layout
from ncd.render.frag import RUN, Deferred, made
from ncd.render.model import Path, Port, Text
from ncd.render.style import Style
from ncd.render.svg import paint_svg

warnings.filterwarnings("ignore", message=".*bos_token_id.*|.*eos_token_id.*")

STYLES = [{}, {"page": "slide"}, {"page": "none"}, {"depth": 1}]


@functools.cache
def _traced(name: str) -> ncd.Diagram:
    from tests import test_trace_corpus as corpus

    torch.manual_seed(0)
    model, args, kwargs = getattr(corpus, name)()
    return ncd.trace(model.eval(), *args, **kwargs)


def _deferred(drawing: ncd.render.Drawing) -> list[Deferred]:
    """The drawing's deferred fragments, each once, in the tree's order (their items unread)."""
    found: dict[int, Deferred] = {}
    stack = [drawing.tree[0]] if drawing.tree is not None else []
    while stack:
        node = stack.pop()
        if isinstance(node, Deferred):
            found.setdefault(id(node), node)
            continue
        for it in node.items:
            if type(it) is tuple:
                stack.append(it[2])
    return list(found.values())


def _painted_both_ways(diagram: ncd.Diagram, options: dict) -> tuple[str, str, int]:
    style = Style.from_options(**options)
    direct = layout(diagram, style)
    unread = sum(f.unread_steps() is not None for f in _deferred(direct))
    by_steps = paint_svg(direct)
    records = layout(diagram, style)
    for frag in _deferred(records):
        assert frag.items is not None  # (read: the painter now paints its records)
        assert frag.unread_steps() is None
    return by_steps, paint_svg(records), unread


@pytest.mark.parametrize("options", STYLES, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "column")
@pytest.mark.parametrize("name", sorted(ncd.zoo.MODELS)[:6])
def test_gallery_steps_paint_as_their_records(name: str, options: dict) -> None:
    by_steps, by_records, _ = _painted_both_ways(ncd.zoo.MODELS[name](), options)
    assert by_steps == by_records


@pytest.mark.parametrize("options", STYLES, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "column")
@pytest.mark.parametrize("name", ["gpt2", "llama", "t5"])
def test_traced_steps_paint_as_their_records(name: str, options: dict) -> None:
    by_steps, by_records, unread = _painted_both_ways(_traced(name), options)
    assert unread > 0  # (the painter met steps to paint)
    assert by_steps == by_records


def test_steps_make_the_records_the_layout_made_before() -> None:
    """A deferred fragment's records are what its steps say: a wire, a label at its baseline, an arrow, a port."""
    drawing = layout(_traced("gpt2"), Style.from_options())
    kinds: set[str] = set()
    for frag in _deferred(drawing):
        steps = frag.unread_steps()
        assert steps is not None
        items = made(steps)
        assert len(items) == len(steps)
        for step, item in zip(steps, items):
            if isinstance(item, Path):
                if step[0] == RUN:  # a straight run along x
                    x0, x1, y, style = step[1:]
                    assert item.commands == (("M", x0, y), ("L", x1, y))
                    kinds.add("run")
                else:
                    style = step[2]
                    assert item.commands == step[1]
                assert (item.arrow, item.width, item.role) == (style.arrow, style.width, style.fields["role"])
                kinds.add("arrow" if item.arrow else item.role)
            elif isinstance(item, Text):
                assert (item.x, item.y, item.runs) == (step[2], step[3], step[1].runs) and item.role == "label"
                kinds.add("label")
            else:
                assert isinstance(item, Port) and (item.x, item.y, item.box) == (step[1], step[2], -1)
                kinds.add("port")
        assert frag.items == items  # (the fragment's own records: equal to those made here)
    assert {"wire", "run", "label", "arrow", "port"} <= kinds
