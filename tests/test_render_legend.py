"""The legend says one thing per symbol, and only about what is drawn; scans wrap; crossings are the diagram's.

Checked on finished drawings against the diagram they draw: each legend symbol has one value, each
symbol the legend defines is drawn outside the legend box (:func:`ncd.render.legend.legend_problems`),
a name the diagram gives several sizes is indexed with each size taken from the diagram's axes, and
a traced LSTM/GRU's scan body is wrapped into rows like any block.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import ncd
from ncd.render import layout
from ncd.render.check import problems
from ncd.render.legend import legend_problems
from ncd.render.measure import crossings, drawing_figures
from ncd.render.model import Drawing, Rect, Text

warnings.filterwarnings("ignore", message=".*bos_token_id.*|.*eos_token_id.*")


def _legend_texts(drawing: Drawing) -> list[str]:
    box = next(r for r in drawing.of(Rect) if r.role == "legend")
    return [t.string for t in drawing.of(Text) if box.x <= t.x <= box.x + box.w and box.y <= t.y <= box.y + box.h]


@pytest.mark.parametrize("depth", [None, 1])
@pytest.mark.parametrize("name", sorted(ncd.zoo.MODELS))
def test_gallery_legends_define_each_symbol_once_and_only_drawn_symbols(name: str, depth: int | None) -> None:
    drawing = layout(ncd.zoo.MODELS[name](), depth=depth)
    assert legend_problems(drawing) == []
    symbols = [k for k, _ in drawing.legend]
    assert len(symbols) == len(set(symbols))
    if drawing.legend:  # the box shows exactly the rows the drawing records
        assert len(_legend_texts(drawing)) == 1 + len(drawing.legend)


def test_resnet_bottleneck_width_is_indexed_per_stage_from_the_diagrams_sizes() -> None:
    d = ncd.zoo.resnet()
    drawing = layout(d)
    sizes = {str(a.size) for node in d.walk() for typ in (node.dom, node.cod) for seg in typ for a in seg if a.name == "nb"}
    assert sizes == {"n2/4", "n3/4", "n4/4"}
    rows = dict(drawing.legend)
    assert "nb" not in rows  # one symbol cannot stand for three sizes
    indexed = {k: v for k, v in rows.items() if k.startswith("nb")}
    assert indexed and set(indexed.values()) <= sizes and len(set(indexed.values())) == len(indexed)
    assert legend_problems(drawing) == []


def test_a_name_with_two_sizes_gets_two_indexed_symbols() -> None:
    d = (ncd.Identity.of("b y:x/2") >> ncd.ReLU()) >> ncd.Linear("y:x/2 -> y:x/4")
    drawing = layout(d)
    assert dict(drawing.legend) == {"y_1": "x/2", "y_2": "x/4"}
    labels = {t.string for t in drawing.of(Text) if t.role == "label"}
    assert {"y1", "y2"} <= labels and "y" not in labels
    assert legend_problems(drawing) == []


def test_the_checker_finds_a_symbol_defined_twice_and_a_symbol_not_drawn() -> None:
    drawing = layout(ncd.Identity.of("b m") >> ncd.Linear("m -> n"))
    broken = Drawing(drawing.width, drawing.height, drawing.items, (("n_b", "n1/4"), ("n_b", "n2/4"), ("q", "7")))
    found = legend_problems(broken)
    assert any("'n_b' has 2 definitions" in p for p in found)
    assert any("'q' is not drawn" in p for p in found) and any("'n_b' is not drawn" in p for p in found)
    assert legend_problems(layout(ncd.Identity.of("b m") >> ncd.Linear("m -> n"), legend={"m": "64"})) == []


class _Tagger(nn.Module):
    def __init__(self, cell: type[nn.Module]) -> None:
        super().__init__()
        self.embed, self.rnn, self.out = nn.Embedding(50, 16), cell(16, 24, num_layers=2, batch_first=True), nn.Linear(24, 5)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.rnn(self.embed(ids))[0])


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU])
def test_a_traced_scan_body_wraps_into_rows_like_a_block(cell: type[nn.Module]) -> None:
    torch.manual_seed(0)
    d = ncd.trace(_Tagger(cell).eval(), torch.randint(0, 50, (2, 6)))
    drawing = layout(d)
    fig = drawing_figures(drawing)
    assert fig.aspect <= 3.0 and fig.min_label_pt >= 6.0, (drawing.width, drawing.height, fig.min_label_pt)
    texts = [t.string for t in drawing.of(Text)]
    assert texts.count("Step") >= 2  # the scans draw a Step box, and the Step is defined
    assert crossings(drawing, free=True) == 0
    assert problems(drawing) == []
    one_row = drawing_figures(layout(d, page="none"))
    assert one_row.min_label_pt < 6.0  # without wrapping the scan body, the labels would print too small


def test_an_indexed_family_that_halves_is_one_row_in_closed_form() -> None:
    """``y`` at x/2, x/4, x/8 is drawn y₁, y₂, y₃ (in drawing order) and the legend writes the family once, as the
    paper writes ``x̄_i = 512·2^{1−i}``: ``y_i = x·2^{−i}``, which gives each drawn member's size."""
    import sympy

    from ncd.render.legend import indexed_symbols

    d = (ncd.Identity.of("b y:x/2") >> ncd.ReLU() >> ncd.Linear("y:x/2 -> y:x/4") >> ncd.ReLU()
         >> ncd.Linear("y:x/4 -> y:x/8"))
    drawing = ncd.render.layout(d)
    assert drawing.legend == (("y_i", "x·2^(-i)"),)
    assert problems(drawing) == []
    x, i = sympy.Symbol("x", positive=True), sympy.Symbol("i", positive=True)
    members = {s: v for (_, v), s in indexed_symbols(d).items()}
    assert len(members) == 3 and all(
        sympy.simplify(v - (x * 2 ** (-i)).subs(i, int(s.split("_")[1]))) == 0 for s, v in members.items())
    drawn = ["".join(r.text for r in t.runs) for t in drawing.of(Text)]
    assert {"y1", "y2", "y3"} <= set(drawn)


def _closed_form_by_simplify(values: list[object], start: int) -> str | None:
    """closed_form's definition spelled out: every ratio (then every step) simplified, one ratio (step) or none."""
    import sympy

    from ncd.ir.size import size

    vs, i = [size(v) for v in values], sympy.Symbol("i", positive=True)
    ratios = {sympy.simplify(b / a) for a, b in zip(vs, vs[1:])}
    if len(ratios) == 1:
        r = ratios.pop()
        if r.is_Rational and r not in (0, 1) and (r.q == 1 or r.p == 1):
            p, exponent = (int(r.p), i - start) if r.q == 1 else (int(r.q), start - i)
            a, base = vs[0], sympy.simplify(vs[0] / r**start)
            if sympy.count_ops(base) < sympy.count_ops(a):
                a, exponent = base, (i if r.q == 1 else -i)
            return f"{a}·{p}^({exponent})"
    steps = {sympy.simplify(b - a) for a, b in zip(vs, vs[1:])}
    d = steps.pop() if len(steps) == 1 else 0
    return str(sympy.expand(vs[0] + d * (i - start))) if d != 0 else None


@pytest.mark.parametrize("values", [
    [512, 256, 128], [24, 48, 96], ["x/2", "x/4", "x/8"], [16, 32, 48], [3, 5, 11], ["x", "2*x", "4*x"],
    ["x", "x + 1", "x + 2"], [65, "t", 65, "t", 74], ["t", "2*t", "3*t"], ["x**2", "x**2 + x", "x**2 + 2*x"],
    [0, 4, 8], [8, 0, 4], ["x", "x", "x"], ["(x + 1)/2", "x + 1", "2*x + 2"], ["x*t", "2*x*t", "4*t*x"],
    ["64*b", "16*b", "4*b", "b"], ["3*x/t", "6*x/t", "12*x/t"], ["x/t**2", "2*x/t**2", "3*x/t**2"],
    ["4*x*t", "2*x*t", "x*t"], ["x**2/3", "x**2/6", "x**2/12"],
])
@pytest.mark.parametrize("start", [0, 1, 2])
def test_closed_form_tells_steps_apart_as_simplifying_every_step_does(values: list[object], start: int) -> None:
    from ncd.render.legend import closed_form

    want = _closed_form_by_simplify(values, start)
    assert closed_form(values, list(range(start, start + len(values)))) == want


def test_closed_form_of_whole_sizes_told_in_python_numbers_is_as_simplifying_every_step_gives() -> None:
    """Whole sizes with no ratio and no difference in common are refused without sympy (:func:`_no_pattern`):
    random lists, patterned or not (geometric up and down, arithmetic up and down, equal, near misses), give what
    simplifying every step gives."""
    import random

    from ncd.render.legend import closed_form

    rng = random.Random(0)
    lists: list[list[object]] = []
    for _ in range(120):
        n, a = rng.randint(3, 6), rng.randint(1, 64)
        kind = rng.randrange(5)
        if kind == 0:
            values = [a * 2**k for k in range(n)]
        elif kind == 1:
            values = [a * 3**n // 3**k for k in range(n)]
        elif kind == 2:
            d = rng.choice([-3, -1, 1, 2, 7])
            values = [a + 64 + d * k for k in range(n)]
        elif kind == 3:
            values = [rng.randint(1, 12) for _ in range(n)]
        else:
            values = [a * 2**k for k in range(n)]
            values[rng.randrange(n)] += rng.choice([-1, 1])
        lists.append([v if v > 0 else 1 for v in values])
    for values in lists:
        for start in (0, 1):
            assert closed_form(values, list(range(start, start + len(values)))) == _closed_form_by_simplify(
                values, start), values


def test_simplify_gives_a_number_times_symbols_to_whole_powers_back_as_it_is() -> None:
    """What lets :func:`~ncd.render.legend.closed_form` leave such steps and bases unsimplified (and not import
    ``sympy.physics``): :func:`sympy.simplify` returns each of them unchanged, on symbols of any assumptions."""
    import random

    import sympy

    from ncd.render.legend import _simplified

    rng = random.Random(0)
    symbols = [sympy.Symbol("b", positive=True), sympy.Symbol("t", positive=True), sympy.Symbol("n", integer=True),
               sympy.Symbol("y"), sympy.Symbol("w", negative=True)]
    for _ in range(60):
        value = sympy.Rational(rng.choice([1, -1, 3, 64, 3136]), rng.choice([1, 2, 3, 8]))
        for s in rng.sample(symbols, rng.randint(0, 3)):
            value *= s ** rng.choice([1, 2, 3, -1, -2])
        assert sympy.srepr(_simplified(value)) == sympy.srepr(sympy.simplify(value))


def test_a_closed_form_of_a_size_times_a_ratio_does_not_import_sympy_physics() -> None:
    """swin's legend (``64*b·4^(1 - i)``): its first drawing used to import ``sympy.physics.units`` (simplify's first
    call on a compound expression), ~130 ms."""
    import subprocess
    import sys

    code = ("import sys; from ncd.render.legend import closed_form; "
            "print(closed_form(['64*b', '16*b', '4*b', 'b']), closed_form(['x/2', 'x/4', 'x/8']), "
            "closed_form(['b', '2*b', '3*b']), 'sympy.physics.units' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["64*b·4^(1", "-", "i)", "x·2^(-i)", "b*i", "False"]


def test_a_legend_row_listing_more_sizes_than_a_page_holds_goes_on_below_within_the_page() -> None:
    """Forty sibling blocks of one family, each of its own width: the family's one definition lists every instance's
    width in one legend row, wider than a page.  The row goes on over the lines below (each under its first
    value); the drawing keeps to the page's width and the legend still lists every width, in order."""
    from ncd.render.style import PAGES

    widths = [1009 + 37 * k + (k * k) % 11 for k in range(41)]  # (no ratio, no difference: no closed form)
    blocks = [(ncd.Linear(f"n{k}:{widths[k]} -> n{k + 1}:{widths[k + 1]}") >> ncd.GELU()).block(f"layers.{k}: Layer")
              for k in range(len(widths) - 1)]
    drawing = layout(ncd.Seq.of(*blocks))
    assert drawing.width <= PAGES["column"][0], drawing.width
    texts = [t.replace(" ", "") for t in _legend_texts(drawing)]
    listed = "".join(t.split("=", 1)[1] if "=" in t else t for t in texts)
    assert ",".join(map(str, widths[:-1])) in listed, texts
    assert ",".join(map(str, widths[1:])) in listed, texts
    assert sum("=" not in t for t in texts) >= 2, texts  # (lines that go on a row: no symbol of their own)
    assert legend_problems(drawing) == [] and problems(drawing) == []
