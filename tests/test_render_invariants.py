"""Layout invariants on every diagram we can build: the gallery, every primitive sample, random diagrams.

Invariants (``ncd.render.check.problems``): no box overlaps a box or a text it does not own;
texts do not overlap; every wire end meets a port, a dot, an arrow or another wire, and every
port has a wire; no wire passes through a box it does not belong to.  Layout is deterministic.
The checker itself is tested on drawings broken on purpose.
"""

from __future__ import annotations

import pathlib
import random
import subprocess
import sys
import warnings

import pytest
import torch

import ncd
import ncd.zoo
from ncd.ir.primitive import PRIMITIVES
from ncd.render import layout, to_svg
from ncd.render.check import problems
from ncd.render.model import Drawing, Footprint, Path, Port, Text
from ncd.render.pictograms import BOX_RULES, SCALAR_RULES
from tests import opdb

opdb.load()


@pytest.mark.parametrize("name", sorted(ncd.zoo.MODELS))
@pytest.mark.parametrize("depth", [None, 1])
def test_gallery_layout_keeps_invariants(name: str, depth: int | None) -> None:
    assert problems(layout(ncd.zoo.MODELS[name](), depth=depth)) == []


@pytest.mark.parametrize("sample", opdb.SAMPLES, ids=lambda s: s.id)
def test_every_primitive_sample_draws_soundly(sample: opdb.Sample) -> None:
    drawing = layout(sample.build())
    assert problems(drawing) == []
    assert drawing.footprints, "every sample draws at least one box or glyph"


def test_every_primitive_has_a_pictogram_or_is_listed_as_a_labelled_box() -> None:
    from ncd.render.pictograms import LABELLED_BOX_FAMILIES, LABELLED_BOX_OPS, box_rule

    box_rule("linear")  # loads every family's rules
    labelled = {op for op, cls in PRIMITIVES.items() if op in LABELLED_BOX_OPS or cls.family in LABELLED_BOX_FAMILIES}
    from ncd.ir.rules import DRAWING, SCALAR_DRAWING

    drawn = set(BOX_RULES) | set(SCALAR_RULES) | set(DRAWING.rules()) | set(SCALAR_DRAWING.rules())
    missing = sorted(op for op in PRIMITIVES if op not in drawn and op not in labelled)
    assert missing == [], f"give these primitives a pictogram (a DRAWING rule in their family): {missing}"


# -- random diagrams -------------------------------------------------------------------------------
def random_diagram(seed: int) -> tuple[ncd.Diagram, dict]:
    """A random, well-typed diagram using most node kinds and core primitives."""
    rng = random.Random(seed)
    fresh = iter(f"a{k}" for k in range(1000))
    axes = [("~" if rng.random() < 0.3 else "") + next(fresh) for _ in range(rng.randint(1, 3))]
    bare = lambda a: a.lstrip("~")  # noqa: E731
    d: ncd.Diagram = ncd.Identity.of(" ".join(axes))
    for _ in range(rng.randint(1, 7)):
        last = bare(axes[-1])
        move = rng.choice(["linear", "act", "softmax", "transpose", "residual", "block", "norm", "pair", "repeat", "weave",
                           "fold", "scale"])
        if move == "linear":
            outs = [next(fresh) for _ in range(rng.randint(1, 2))]
            d = d >> ncd.Linear(f"{last} -> {' '.join(outs)}", bias=rng.random() < 0.5, name=rng.choice([None, "Q"]))
            axes = axes[:-1] + outs
        elif move == "act":
            d = d >> rng.choice([ncd.ReLU, ncd.GELU, ncd.Tanh])()
        elif move == "scale":
            d = d >> ncd.Scale(f"{last}**-0.5")
        elif move == "softmax":
            d = d >> ncd.Softmax(rng.choice(axes))
        elif move == "transpose" and len(axes) >= 2:
            k = rng.randrange(len(axes) - 1)
            a, b = bare(axes[k]), bare(axes[k + 1])
            d = d >> ncd.Transpose(f"{a} {b} -> {b} {a}")
            axes[k], axes[k + 1] = axes[k + 1], axes[k]
        elif move == "residual":
            d = d >> ncd.residual(ncd.Linear(f"{last} -> {last}") >> ncd.ReLU())
        elif move == "block":
            d = d.block(rng.choice(["Encoder", "Layer", "Head"]))
        elif move == "norm":
            d = d >> ncd.LayerNorm(last)
        elif move == "pair":
            full = " ".join(axes)
            new = next(fresh)
            left = ncd.Identity.of(full) >> ncd.Linear(f"{last} -> {new}")
            kept = [bare(a) for a in axes[:-1]]
            spec = f"{' '.join(kept + [new])}, {' '.join(kept + [last])} -> {' '.join(kept + [new])}"
            d = d >> ncd.Copy(full) >> (left @ ncd.Identity.of(full)) >> ncd.Einsum(spec)
            axes = axes[:-1] + [new]
        elif move == "repeat":
            d = d >> ncd.repeat(lambda i, last=last: ncd.Linear(f"{last} -> {last}", bias=True).block("Layer"), "i", 0, "N")
        elif move == "weave":
            new = next(fresh)
            d = d.weave(new)
            axes = [new] + axes
        elif move == "fold":
            layer = ncd.residual(ncd.Linear(f"{last} -> {last}") >> ncd.GELU()).block("MLP")
            d = d >> layer >> layer >> layer
    return d, {"depth": rng.choice([None, None, 0, 1])}


@pytest.mark.parametrize("seed", range(60))
def test_random_diagrams_keep_invariants(seed: int) -> None:
    diagram, options = random_diagram(seed)
    found = problems(layout(diagram, **options))
    assert found == [], f"{diagram!r}: {found[:5]}"


def test_layout_is_deterministic_across_processes() -> None:
    from tests.test_render_golden import multi_head

    here = to_svg(multi_head())
    code = "from tests.test_render_golden import multi_head; from ncd.render import to_svg; print(to_svg(multi_head()), end='')"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "12345", "PATH": ""}, cwd=pathlib.Path(__file__).parents[1]).stdout
    assert here == other
    assert here == to_svg(multi_head())


# -- the checker finds what it should ---------------------------------------------------------------
def _broken(*items) -> Drawing:  # type: ignore[no-untyped-def]
    return Drawing(100, 100, list(items))


def test_checker_reports_overlapping_boxes_texts_and_wires() -> None:
    a, b = Footprint(0, 0, 20, 20, 1, "box", "A"), Footprint(10, 10, 20, 20, 2, "box", "B")
    assert problems(_broken(a, b)) == ["box 'A' overlaps box 'B'"]
    label = Text.plain(5, 12, "m")
    assert problems(_broken(a, label)) == ["text 'm' overlaps box 'A'"]
    assert problems(_broken(Text.plain(50, 50, "k"), Text.plain(52, 50, "k"))) == ["text 'k' overlaps text 'k'"]
    through = Path.through([(-10, 10), (40, 10)])
    found = problems(_broken(a, through, Port(-10, 10, -1), Port(40, 10, -1)))
    assert len(found) == 1 and "passes through box 'A'" in found[0]


def test_checker_reports_dangling_wires_and_unconnected_ports() -> None:
    found = problems(_broken(Path.through([(0, 50), (30, 50)]), Port(0, 50, -1), Port(80, 80, 3)))
    assert found == ["a wire end at (30.0, 50.0) is connected to nothing", "port at (80.0, 80.0) of box 3 has no wire"]


def test_checker_holds_text_to_its_own_placement_of_a_repeated_box() -> None:
    # a memoised column drawn in two places (a scan body inlined in both directions of a bidirectional RNN) repeats
    # its boxes' ids: each text is held to the placement it is drawn in, and a spill is still found
    first, second = Footprint(0, 0, 40, 20, 7, "box", "A"), Footprint(0, 60, 40, 20, 7, "box", "A")
    inside = [Text.plain(5, 14, "a", role="text", owner=7), Text.plain(5, 74, "a", role="text", owner=7)]
    assert problems(_broken(first, second, *inside)) == []
    spilled = Text.plain(35, 74, "abc", role="text", owner=7)
    assert problems(_broken(first, second, inside[0], spilled)) == ["text 'abc' spills out of box 'A'"]


def test_bidirectional_rnn_drawing_keeps_invariants() -> None:
    rnn = torch.nn.RNN(5, 6, num_layers=2, bidirectional=True, nonlinearity="relu", batch_first=True).eval()

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = rnn

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.rnn(x)[0]
            return out

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        diagram = ncd.trace(Model(), torch.randn(2, 7, 5))
    assert problems(layout(diagram)) == []
