"""A parameter of a narrower float type than the value it meets (``x.double() * w`` of a float32 ``w``, a float16
``w`` times float32 values): torch widens it inside the operation, and the lowered module must train it as the
model does.  The widening step was converted as a constant when no operand depended on an input
(``boxes_losses._call``): the parameter's values, frozen (its gradient zero, silently).  Compared with autograd on
the model itself, traced and fresh inputs."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import ncd


class Widened(torch.nn.Module):
    def __init__(self, f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], dtype: torch.dtype) -> None:
        super().__init__()
        self.f = f
        self.w = torch.nn.Parameter(torch.linspace(-1.0, 2.0, 6).to(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(x, self.w)


CASES = {
    "x.double() * w": (lambda x, w: x.double() * w, torch.float32),
    "w * x.double()": (lambda x, w: w * x.double(), torch.float32),
    "x.double() + w": (lambda x, w: x.double() + w, torch.float32),
    "x * w (float16 w)": (lambda x, w: x * w, torch.float16),
    "x + w (bfloat16 w)": (lambda x, w: x + w, torch.bfloat16),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_parameter_widened_by_the_operation_is_trained(name: str) -> None:
    f, dtype = CASES[name]
    model = Widened(f, dtype)
    torch.manual_seed(0)
    x = torch.randn(4, 6)
    d = ncd.trace(model, x)
    low = d.to_torch()
    assert sum(p.numel() for p in low.parameters() if p.requires_grad) == 6
    for values in (x, torch.randn(4, 6)):
        with torch.no_grad():
            assert torch.equal(low(values), model(values)), name
        (want,) = torch.autograd.grad(model(values).sum(), [model.w])
        got = [g for g in torch.autograd.grad(low(values).sum(), list(low.parameters()), allow_unused=True)
               if g is not None]
        assert len(got) == 1 and torch.equal(got[0], want), name  # (was None: the parameter a frozen constant)
