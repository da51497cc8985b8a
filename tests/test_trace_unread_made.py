"""An unread parameter equal to a tensor the forward makes from no parameter (``torch.ones(n)`` given to
``F.layer_norm``, beside a LayerNorm of ones the forward does not call): the tensor is a constant of the lowered
module (f894ca0), so the parameter is unread and kept under ``unused`` — it was taken as read by that copy
(:func:`ncd.trace.params.unread`) and dropped, the lowered module holding fewer parameters than the model, silently.
Compared with the model itself: its parameter count, its values and gradients."""

from __future__ import annotations

import warnings

import pytest
import torch

import ncd


class Literal(torch.nn.Module):
    """A LayerNorm and a parameter of ones; the forward normalises with literals equal to them, and uses the
    LayerNorm too (``called``) or not."""

    def __init__(self, called: bool) -> None:
        super().__init__()
        self.ln = torch.nn.LayerNorm(6)
        self.w = torch.nn.Parameter(torch.ones(6))
        self.called = called

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.nn.functional.layer_norm(x, (6,), torch.ones(6), torch.zeros(6))
        return y + self.ln(x) if self.called else y * 2


@pytest.mark.parametrize("called", [False, True])
def test_an_unread_parameter_equal_to_a_literal_is_kept(called: bool) -> None:
    torch.manual_seed(0)
    model, x = Literal(called), torch.randn(4, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, x)
    low = d.to_torch()
    assert sum(p.numel() for p in low.parameters()) == sum(p.numel() for p in model.parameters())  # (was 0, 12)
    for values in (x, torch.randn(4, 6)):
        with torch.no_grad():
            assert torch.equal(low(values), model(values))
        if not called:  # (no parameter read: no gradient in either)
            assert not model(values).requires_grad and not low(values).requires_grad
            continue
        want = torch.autograd.grad(model(values).sum(), list(model.parameters()), allow_unused=True)
        got = torch.autograd.grad(low(values).sum(), list(low.parameters()), allow_unused=True)
        total = sum(float(g.abs().sum()) for g in want if g is not None)
        assert total == pytest.approx(sum(float(g.abs().sum()) for g in got if g is not None), rel=1e-5, abs=1e-6)
