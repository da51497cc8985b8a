"""A definition whose block only wraps another is drawn once, with the inner block's contents.

A block whose body is one block with the same wires (a ResNet stage of one layer, Kosmos-2's ``vision_model``
around its ``model``) would otherwise be drawn as two definitions, the first holding nothing but
the second's box.  The drawings are checked on the finished page:
its titles, that nothing is lost (every box of the inner block drawn), and the layout invariants
(:func:`ncd.render.check.problems`).
"""

from __future__ import annotations

import torch
from torch import nn

import ncd
from ncd.render import layout
from ncd.render.check import problems
from ncd.render.measure import drawing_figures
from ncd.render.model import Drawing, Footprint, Text


def _texts(drawing: Drawing) -> list[str]:
    return ["".join(r.text for r in t.runs) for t in drawing.of(Text)]


class Inner(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up, self.down = nn.Linear(16, 32), nn.Linear(32, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(torch.relu(self.up(x)).tanh().sigmoid())


class Wrapper(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = Inner()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


class Model(nn.Module):
    def __init__(self, wrappers: int = 1) -> None:
        super().__init__()
        self.a, self.b = Wrapper(), nn.Linear(16, 16)
        self.c = Wrapper() if wrappers > 1 else Inner()
        self.d = nn.Sequential(*[nn.Linear(16, 16) for _ in range(6)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.d(self.c(self.b(self.a(x)).exp()).cos())


def _drawn(wrappers: int) -> Drawing:
    torch.manual_seed(0)
    model = Model(wrappers).eval()
    d = ncd.trace(model, torch.randn(2, 16))
    x = torch.randn(2, 16)
    assert torch.allclose(d.to_torch()(x), model(x), atol=1e-5)
    drawing = layout(d)
    fig = drawing_figures(drawing)
    assert fig.aspect <= 3.0 and fig.min_label_pt >= 6.0
    assert problems(drawing) == []
    return drawing


def test_a_block_that_only_wraps_another_is_defined_once_with_both_names() -> None:
    texts = _texts(drawing := _drawn(1))
    # the wrapper's definition is titled by both blocks; the block it wraps gets no definition (and no box) of its own
    assert "a = inner: Inner" in texts
    assert not [f for f in drawing.of(Footprint) if f.kind == "component" and f.name.startswith("inner")]
    # the wrapped block's contents are drawn, once in the wrapper's definition and once in c's (an Inner unwrapped)
    assert texts.count("L+up") == texts.count("L+down") == 2


def test_blocks_wrapped_by_blocks_of_two_families_keep_the_definition_they_share() -> None:
    texts = _texts(drawing := _drawn(2))
    # a and c (two families) wrap one Inner each: drawn by one definition of inner, its contents once
    assert not [t for t in texts if " = inner" in t]
    assert [f.name for f in drawing.of(Footprint) if f.kind == "component" and f.name.startswith("inner")]
    assert texts.count("L+up") == texts.count("L+down") == 1
