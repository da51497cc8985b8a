"""The wires passing beside the steps of a trace (``ncd.trace.wiring.wire``): the same values beside several steps are
one identity (built once, symbolized once, drawn from one object), and the diagram still computes the model."""

from __future__ import annotations

import torch
from torch import nn

import ncd
from ncd.ir.diagram import Identity


class _Outputs(nn.Module):
    """Several outputs, each made while the ones before it pass beside."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h = self.fc(x)
        return h.relu(), h.sigmoid() * 2, h.tanh() + 1, (h * h).mean(-1)


def test_values_passing_beside_steps_are_one_identity_and_the_diagram_computes_the_model() -> None:
    torch.manual_seed(0)
    model = _Outputs().eval()
    x = torch.randn(2, 5, 8)
    d = ncd.trace(model, x)
    beside = [n for n in d.walk() if isinstance(n, Identity)]
    assert len({id(n) for n in beside}) < len(beside)  # the outputs made first pass beside later steps as one identity
    lowered = d.to_torch()
    for inputs in (x, torch.randn(2, 5, 8)):  # the traced input and one of other values
        for got, want in zip(lowered(inputs), model(inputs)):
            torch.testing.assert_close(got, want)
