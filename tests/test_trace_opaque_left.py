"""Operators the corpus still left opaque, now boxes: ``masked_fill`` of integers (Zaya's router drops its skip
expert, ``indices.masked_fill(indices == e, 0)``) and a learned linear map of a constant (Zaya's delayed value
projection of a zero state, ``v_proj(x.new_zeros(b, 1, m))``).  Each: no opaque box, and the lowered module equals
the model on the traced inputs and on fresh ones."""

from __future__ import annotations

import torch
from torch import nn

from tests.test_trace_boxes_residue import round_trip


class SkipExpert(nn.Module):
    """A router over ``e + 1`` classes whose last class means "no expert": its picks are set to expert 0 (and their
    weights to 0) before the experts read them."""

    def __init__(self, e: int = 4) -> None:
        super().__init__()
        self.e, self.gate = e, nn.Linear(8, e + 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs = self.gate(x).softmax(-1)
        weights, picks = probs.topk(2, dim=-1)
        skip = picks == self.e
        return weights.masked_fill(skip, 0), picks.masked_fill(skip, 0)


def test_integer_masked_fill_is_a_box() -> None:
    torch.manual_seed(0)
    model = SkipExpert()
    with torch.no_grad():
        model.gate.bias[-1] = 1.5  # the skip class is picked often
    x, fresh = torch.randn(2, 6, 8), torch.randn(2, 6, 8)
    assert bool((model(x)[1] != model.gate(x).softmax(-1).topk(2, dim=-1).indices).any())  # the fill happens
    d = round_trip(model, x, fresh=(fresh,))
    assert d.opaque_count == 0
    assert "where" in [b.prim.op for b in d.boxes()]


class DelayedValue(nn.Module):
    """Zaya's value path: the delayed projection of the previous token, the first token's from a zero state."""

    def __init__(self) -> None:
        super().__init__()
        self.v = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.v(x.new_zeros(x.shape[0], 1, x.shape[2]))  # the bias, as a linear map of zeros
        return torch.cat([first, self.v(x)[:, :-1]], dim=1)


def test_linear_of_a_constant_is_a_box() -> None:
    torch.manual_seed(0)
    model = DelayedValue()
    d = round_trip(model, torch.randn(2, 5, 8), fresh=(torch.randn(2, 5, 8),))
    assert d.opaque_count == 0
    assert [b.prim.op for b in d.boxes()].count("linear") == 2
