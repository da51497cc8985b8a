"""ncd.trace draws the ATen operators of ncd.trace.boxes as their own primitives (no opaque box), and the lowered
diagram computes what the model computes, on the traced inputs and on fresh ones."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import ncd
from tests.test_trace_robust import _fresh_round_trip


def _ops(d: ncd.TracedDiagram) -> list[str]:
    return sorted(b.prim.op for b in d.boxes())


class Boundaries(nn.Module):
    """Swin's shifted windows, convolution padding of every mode, running sums of floats and of a router's mask."""

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.roll(x, shifts=(-1, 2), dims=(1, 2))
        y = F.pad(y, (1, 1, 2, 0), mode="reflect")
        y = F.pad(y, (0, 1), value=0.5)
        y = F.pad(y, (1, 1, 1, 1), mode="replicate")
        y = F.pad(y, (0, 0, 0, 0))  # nothing: a wire
        counts = torch.cumsum(ids > 1, dim=1)  # a router's running count of tokens
        return y.cumsum(-1), counts


def test_roll_pad_and_cumsum_are_boxes_that_round_trip() -> None:
    torch.manual_seed(0)
    d = _fresh_round_trip(Boundaries(), torch.randn(2, 5, 6, 3), torch.randint(0, 4, (2, 7)))
    assert d.opaque_count == 0
    ops = _ops(d)
    assert ops.count("roll") == 1 and ops.count("pad") == 3 and ops.count("cumsum") == 2
    modes = sorted(b.prim.mode for b in d.boxes() if b.prim.op == "pad")
    assert modes == ["constant", "reflect", "replicate"]


class Unsupported(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.roll(x, 3), F.pad(x, (1, 1), mode="circular")  # a flattened roll; circular padding


def test_what_the_boxes_cannot_say_stays_opaque_and_exact() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = _fresh_round_trip(Unsupported(), torch.randn(2, 5))
    assert d.opaque_count == 2
