"""Wires cross only where the diagram permutes axes.

In the paper's notation a crossing is a transpose.  An operation on a non-trailing axis
(``Linear("c -> d")`` on ``b c y x``, ``Softmax("c")``, every channel-first convolution) is broadcast
over the other axes, which must run past it in their own order.  Crossings are found geometrically
on the finished drawing (:func:`ncd.render.measure.crossings`: the sampled wire paths intersect),
independently of how the layout placed its tracks.
"""

from __future__ import annotations

import pytest
import torch

import ncd
from ncd.render import layout
from ncd.render.measure import crossing_points, crossings

BROADCAST = {
    "linear on a middle axis": lambda: ncd.Identity.of("b c y x") >> ncd.Linear("c -> d"),
    "softmax on a middle axis": lambda: ncd.Identity.of("b c y x") >> ncd.Softmax("c"),
    "layer norm over channels": lambda: ncd.Identity.of("b c y x") >> ncd.LayerNorm("c") >> ncd.Linear("c -> d"),
    "linear then softmax": lambda: ncd.Identity.of("b h c t") >> ncd.Linear("c -> d") >> ncd.Softmax("d"),
    "two middle axes": lambda: ncd.Identity.of("b c d y x") >> ncd.Linear("c d -> e"),
}


@pytest.mark.parametrize("name", list(BROADCAST))
def test_broadcast_wires_do_not_cross(name: str) -> None:
    drawing = layout(BROADCAST[name]())
    assert crossing_points(drawing) == []


def test_channel_first_convnet_has_no_crossings() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                              torch.nn.MaxPool2d(2), torch.nn.Conv2d(8, 4, 1), torch.nn.Softmax(dim=1))
    diagram = ncd.trace(net.eval(), torch.randn(2, 3, 8, 8))
    assert crossings(layout(diagram)) == 0


def test_a_transpose_crosses() -> None:
    """The counter is not blind: a real permutation is drawn, and counted, as crossings."""
    assert crossings(layout(ncd.Identity.of("a b") >> ncd.Transpose("a b -> b a"))) == 1
    assert crossings(layout(ncd.Identity.of("a b c") >> ncd.Transpose("a b c -> c b a"))) == 3


@pytest.mark.parametrize("name", sorted(ncd.zoo.MODELS))
def test_gallery_layout_adds_no_crossings(name: str) -> None:
    """Every crossing in a gallery drawing is drawn by a box (a transpose, an einsum, a copy of a tuple) or
    joins wires at a dot (a concatenation joins the wires both inputs carry, as in the paper's U-Net)."""
    assert crossing_points(layout(ncd.zoo.MODELS[name]()), free=True) == []
