"""Drawings fit a page: every gallery model (default and ``depth=1``) and small traced GPT-2, Llama and
ViT models print within 3:1 (width:height) with no text under 6 pt in a 6.5-inch column.

The figures are measured on the finished drawing (its size and the point size of every text run),
independently of how the layout chose its rows.
"""

from __future__ import annotations

import functools
import io
import pathlib
import re
import warnings

import pytest
import torch
from PIL import Image

import ncd
from ncd.render import layout
from ncd.render.check import problems
from ncd.render.measure import COLUMN_PT, drawing_figures
from ncd.render.model import Path, Text

warnings.filterwarnings("ignore", message=".*bos_token_id.*|.*eos_token_id.*")


@functools.cache
def _traced(name: str) -> ncd.Diagram:
    from tests import test_trace_corpus as corpus

    torch.manual_seed(0)
    model, args, kwargs = getattr(corpus, name)()
    return ncd.trace(model.eval(), *args, **kwargs)


CASES = [(name, {}) for name in ncd.zoo.MODELS] + [(name, {"depth": 1}) for name in ncd.zoo.MODELS]


@pytest.mark.parametrize(("name", "options"), CASES, ids=[f"{n}-{o.get('depth', 'all')}" for n, o in CASES])
def test_gallery_drawings_fit_a_column(name: str, options: dict) -> None:
    drawing = layout(ncd.zoo.MODELS[name](), **options)
    fig = drawing_figures(drawing)
    assert fig.aspect <= 3.0, (name, drawing.width, drawing.height)
    assert fig.min_label_pt >= 6.0, (name, drawing.width, fig.min_label_pt)
    assert problems(drawing) == []


@pytest.mark.parametrize("name", ["gpt2", "llama", "vit"])
def test_traced_models_fit_a_column(name: str) -> None:
    drawing = layout(_traced(name))
    fig = drawing_figures(drawing)
    assert fig.aspect <= 3.0 and fig.min_label_pt >= 6.0, (name, drawing.width, drawing.height, fig.min_label_pt)
    assert problems(drawing) == []


def test_wrapped_rows_are_joined_by_continuation_arrows_and_blocks_defined() -> None:
    d = ncd.zoo.resnet()
    one_row = layout(d, page="none")
    page = layout(d)
    assert one_row.width > 3 * one_row.height > 0  # the drawing the page layout has to fold
    arrows = [p for p in page.of(Path) if p.arrow and p.role == "wire"]
    assert len(arrows) >= 2 * 3  # out of one row and into the next, one per wire
    equals = [t for t in page.of(Text) if t.string == "="]
    assert len(equals) >= 2  # "IdentityResNet =" and at least one collapsed block's definition
    assert page.width <= COLUMN_PT * min(r.size for t in page.of(Text) for r in t.runs) / 6.0 + 1e-6


def test_slides_allow_wider_rows_and_none_keeps_one_row() -> None:
    d = ncd.zoo.transformer()
    column, slide, none = layout(d), layout(d, page="slide"), layout(d, page="none")
    assert column.width < slide.width < none.width
    assert slide.width <= 1200 and drawing_figures(slide).aspect <= 3.5
    with pytest.raises(ncd.InputError, match="page="):
        layout(d, page="poster")


@pytest.mark.parametrize("name", ["gpt2", "t5"])
def test_a_traced_model_fits_at_every_depth_and_every_format_has_the_drawings_size(
        name: str, tmp_path: pathlib.Path) -> None:
    """Every depth the model has (0, 1, ... until nothing more is collapsed, and None), each written as SVG, PNG,
    PDF, TikZ and HTML: the page figures hold, the checker finds nothing, and each file has the layout's size."""
    d = _traced(name)
    full = layout(d)
    depths: list[int | None] = []
    for depth in range(8):
        depths.append(depth)
        if len(layout(d, depth=depth).items) == len(full.items):
            break
    assert len(depths) >= 3, depths  # the model has nested blocks: 0 (one box), 1, ... and the full drawing

    def written(ext: str, options: dict) -> bytes:
        return pathlib.Path(ncd.draw(d, tmp_path / f"d{ext}", **options)).read_bytes()

    for depth in [*depths, None]:
        options = {} if depth is None else {"depth": depth}
        drawing = layout(d, **options)
        fig = drawing_figures(drawing)
        assert fig.aspect <= 3.0 and fig.min_label_pt >= 6.0, (depth, drawing.width, drawing.height, fig.min_label_pt)
        assert problems(drawing) == [], depth
        head = re.search(rb'<svg[^>]* width="([\d.]+)[a-z]*" height="([\d.]+)', written(".svg", options))
        assert head and float(head.group(1)) == pytest.approx(drawing.width, abs=0.5), depth
        assert float(head.group(2)) == pytest.approx(drawing.height, abs=0.5), depth
        png = Image.open(io.BytesIO(written(".png", options)))
        assert png.size == (round(drawing.width * 2), round(drawing.height * 2)), depth
        box = re.search(rb"/MediaBox \[\s*0 0 ([\d.]+) ([\d.]+)", written(".pdf", options))  # 96 px per inch
        assert box and float(box.group(1)) == pytest.approx(drawing.width * 0.75, abs=1), depth
        assert float(box.group(2)) == pytest.approx(drawing.height * 0.75, abs=1), depth
        tex = written(".tex", options).decode()
        assert tex.count("\\begin{tikzpicture}") == 1 and "\\end{document}" in tex
        page = written(".html", options).decode()
        assert page.count('id="ncd-data"') == 1 and page.rstrip().endswith("</html>")


def test_a_shared_definitions_symbols_set_the_first_rows_width(monkeypatch: pytest.MonkeyPatch) -> None:
    """Layers of one shape and other sizes share a definition whose wires say ``a_i`` (a subscript, smaller than any
    text of the one row): the page is laid out once, at the width that text allows, and is the drawing that a
    first attempt at the one row's width (too wide for that text) and a second, narrower one give."""
    from ncd.render import to_svg, wrap

    def layer(k: int, x: str, y: str) -> ncd.Diagram:
        body = ncd.Identity.of(f"t {x}") >> ncd.Linear(f"{x} -> h")
        for _ in range(6):
            body = body >> ncd.ReLU() >> ncd.Linear("h -> h")
        return (body >> ncd.Linear(f"h -> {y}")).block(f"layers.{k}: Layer")

    d = layer(0, "a", "b") >> layer(1, "b", "c") >> layer(2, "c", "d")
    attempts: list[float] = []
    lay_page = wrap._lay_page

    def counted(ctx, first, target, frag):  # type: ignore[no-untyped-def]
        attempts.append(target)
        return lay_page(ctx, first, target, frag)

    monkeypatch.setattr(wrap, "_lay_page", counted)
    guessed = to_svg(d)
    first = list(attempts)
    attempts.clear()
    monkeypatch.setattr(wrap, "_first_limit", lambda *args: None)  # the page laid out from the one row's width
    assert to_svg(d) == guessed
    assert len(first) == 1 and len(attempts) == 2 and attempts[0] > first[0]
    assert drawing_figures(layout(d)).min_label_pt >= 6.0


@functools.cache
def _traced_toys() -> tuple[ncd.Diagram, ...]:
    """Plain-PyTorch models whose drawings the probe measures otherwise than a transformer's: a recurrence (scan
    boxes, pass-through state wires), nn.MultiheadAttention with a mask, and a loss with labels."""

    class Losses(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = torch.nn.Linear(8, 5)

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            logits = self.head(x[:, 0])
            return torch.nn.functional.cross_entropy(logits, y) + logits.logsumexp(-1).mean()

    torch.manual_seed(0)
    lstm = torch.nn.LSTM(8, 6, num_layers=2, bidirectional=True, batch_first=True)
    mha = torch.nn.MultiheadAttention(8, 2, batch_first=True)
    x = torch.randn(2, 5, 8)
    mask = torch.triu(torch.ones(5, 5, dtype=torch.bool), 1)
    return (ncd.trace(lstm.eval(), x), ncd.trace(mha.eval(), x, x, x, attn_mask=mask),
            ncd.trace(Losses().eval(), x, torch.randint(0, 5, (2,))))


_PROBE_STYLES = [{}, {"labels": "ends"}, {"labels": "none"}, {"fold": False}, {"depth": 1},
                 {"costs": (("MLP", "1 MFLOP"),)}]


@pytest.mark.parametrize("options", _PROBE_STYLES)
def test_probe_measures_what_lay_draws(options: dict) -> None:
    """The page measures a one-row drawing and wide columns without laying their containers out (``Layout.probe``):
    its width is never more than the laid-out fragment's and its smallest text is the fragment's own, on every gallery
    model, a small traced GPT-2, traced plain-PyTorch models and each block and column inside them (laid out
    separately, from fresh contexts)."""
    from ncd.ir.diagram import Block, Seq
    from ncd.render.extents import smallest_text
    from ncd.render.layout import Layout, _read_axes
    from ncd.render.style import Style

    style = Style.from_options(**options)
    diagrams = [f() for f in ncd.zoo.MODELS.values()] + [_traced("gpt2"), *_traced_toys()]
    checked = tight = 0
    for d in diagrams:
        nodes = [d] + [b for b in d.walk() if isinstance(b, Block)][:12]
        nodes += [part for n in d.walk() if isinstance(n, Seq) for part in n.parts if isinstance(part, Seq)][:12]
        for node in nodes:
            probing, laying = Layout(style), Layout(style)
            for ctx in (probing, laying):
                ctx.memo = {}
                _read_axes(ctx, node)
            width, small = probing.probe(node, group=False)
            frag = laying.lay(node)
            assert width <= frag.w + 1e-9, (type(node).__name__, width, frag.w)
            assert small == smallest_text(frag, float("inf"))
            checked += 1
            tight += width >= 0.5 * frag.w
    assert checked > 70
    assert tight >= 0.9 * checked  # a lower bound that decides: mostly within half the laid-out width


class _Unprobed:
    """A page laid out without :meth:`Layout.probe`: a subclass of the layout makes the page lay out every one-row
    drawing and column it measures (``wrap._measure_row``, ``definitions._wider``) and every gap a row break is
    decided by (``rows.pack`` settles most breaks by a gap's lower bound, 8 points, without making the gap)."""

    @staticmethod
    def svg(diagram: ncd.Diagram, options: dict) -> str:
        from ncd.distributed.draw import wire_notes
        from ncd.render.framing import no_collector
        from ncd.render.layout import Layout, _read_axes, lay_out_with
        from ncd.render.style import Style
        from ncd.render.svg import paint_svg
        from ncd.render.wrap import page_layout

        class Laying(Layout):
            pass

        with no_collector():
            ctx = Laying(wire_notes(diagram, Style.from_options(**options)))
            _read_axes(ctx, diagram)
            drawing = page_layout(ctx, diagram) or lay_out_with(ctx, diagram)
        return paint_svg(drawing)


@pytest.mark.parametrize("options", [{}, {"labels": "ends"}, {"depth": 1}, {"page": "slide"}])
def test_page_probed_equals_page_laid_out(options: dict) -> None:
    """The page decides by measuring (the probe's lower bound of a width, its exact smallest text; a gap's lower
    bound at a row break) what it decided by laying everything out: the same SVG, on every gallery model, a traced
    GPT-2 and traced plain-PyTorch models."""
    from ncd.render.svg import paint_svg

    diagrams = [f() for f in ncd.zoo.MODELS.values()] + [_traced("gpt2"), *_traced_toys()]
    for d in diagrams:
        assert paint_svg(layout(d, **options)) == _Unprobed.svg(d, options)


_LATER_LAYER_STYLES: list[dict] = [{}, {"labels": "ends"}, {"labels": "none"}]


def test_probe_measures_a_later_layer_by_the_earlier_layers_equal_leaves() -> None:
    """The probe measures a leaf of ``layers.1`` by the equal leaf of ``layers.0`` it laid out already (the page
    draws ``layers.1`` by the definition they share, not its leaves): the width and the smallest text are still the
    laid-out one-row drawing's, and the page that of a layout that lays every measured drawing out, where the layers
    are equal, differ in an activation, or differ in a size."""
    from ncd.render.extents import smallest_text
    from ncd.render.layout import Layout, _read_axes
    from ncd.render.style import Style
    from ncd.render.svg import paint_svg

    class Layer(torch.nn.Module):
        def __init__(self, act: torch.nn.Module, n: int) -> None:
            super().__init__()
            self.fc, self.act, self.out = torch.nn.Linear(8, n), act, torch.nn.Linear(n, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y: torch.Tensor = self.out(self.act(self.fc(x)))
            return y + x

    class Net(torch.nn.Module):
        def __init__(self, specs: list[tuple[torch.nn.Module, int]]) -> None:
            super().__init__()
            self.layers = torch.nn.ModuleList(Layer(act, n) for act, n in specs)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for layer in self.layers:
                x = layer(x)
            return x

    class Counting(Layout):
        boxes = 0

        def box(self, box):  # type: ignore[no-untyped-def]
            self.boxes += 1
            return super().box(box)

    torch.manual_seed(0)
    cases: list[list[tuple[torch.nn.Module, int]]] = [
        [(torch.nn.ReLU(), 16), (torch.nn.ReLU(), 16)], [(torch.nn.ReLU(), 16), (torch.nn.GELU(), 16)],
        [(torch.nn.ReLU(), 16), (torch.nn.ReLU(), 32)]]
    for k, specs in enumerate(cases):
        d = ncd.trace(Net(specs).eval(), torch.randn(2, 5, 8))
        for options in _LATER_LAYER_STYLES:
            style = Style.from_options(**options)
            probing, laying = Counting(style), Counting(style)
            for ctx in (probing, laying):
                ctx.memo = {}
                _read_axes(ctx, d)
            width, small = probing.probe(d, group=False)
            frag = laying.lay(d)
            assert width <= frag.w + 1e-9
            assert small == smallest_text(frag, float("inf"))
            if k == 1:  # (equal layers are one folded column) layers that differ in an activation: the second
                assert probing.boxes < laying.boxes  # one's linear boxes are not laid out again
            assert paint_svg(layout(d, **options)) == _Unprobed.svg(d, options)


def test_a_gaps_labels_are_measured_as_the_gap_draws_them() -> None:
    """``Layout._labels_measure`` (the probe's gap labels: the smallest text and the widest label) reads each axis
    object of the labelled wires once, by ``id``, without hashing them; on wires repeating one axis object, carrying
    equal axes as distinct objects, some wires unlabelled (a mask), with no generic labels, with a definition's
    generic ones, and while a column records the labels it reads, it gives what the gap drawing those wires has: its
    label width (``gap`` is ``max(8, widest) + `` the width of a straight run) and its smallest text."""
    from ncd.ir.axes import Axis, Segment, Type
    from ncd.ir.diagram import Identity
    from ncd.render.extents import smallest_text
    from ncd.render.frag import _bend_width
    from ncd.render.layout import Layout, _read_axes
    from ncd.render.style import Style
    from ncd.render.typeset import symbol_pieces

    b, n, n_again, k, wide = Axis("b", 3, "item"), Axis("n", 64), Axis("n", 64), Axis("k", 7), Axis("heads", 1024)
    assert n == n_again and n is not n_again
    typ = Type((Segment((b, n)), Segment((n_again, k)), Segment((n, wide))))
    masks: list[bool | tuple[bool, ...]] = [True, (True, True, True, False, False, False), (False, False, True, True,
                                            False, True), (False, True, False, False, True, False)]
    generics = [None, {n: (symbol_pieces("n_i"), ("n_i", "64, 32")), wide: (symbol_pieces("x_j"), ("x_j", "1024, 8"))}]
    checked = 0
    for generic in generics:
        for reading in (False, True):
            for labels in masks:
                measuring, drawing = Layout(Style.from_options()), Layout(Style.from_options())
                for ctx in (measuring, drawing):
                    _read_axes(ctx, Identity(typ))
                    ctx.generic = generic
                    ctx._reads = {} if reading else None
                found, widest = measuring._labels_measure(typ, labels)
                ports = drawing.stack(typ)
                gap, w = drawing.gap(ports, ports, typ, labels)
                assert max(8.0, widest) + _bend_width(0.0, drawing.style.pitch) == w
                assert found == smallest_text(gap, float("inf"))
                assert measuring._labels_measure(typ, labels) == (found, widest)  # (kept by type where it may be)
                checked += 1
    assert checked == 16
