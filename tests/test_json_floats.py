"""A diagram scaling by a float that 15 digits do not say (``x * math.pi`` of a float64 model) reads back from its
JSON as the same double: ``to_json`` wrote sympy's 15 digits (``3.14159265358979``), so the module lowered from the
JSON computed other values than the traced diagram's (2.7e-15 off at π, 4.9e-3 at 7.123456789012345e12)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

import ncd


class Scaled(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x).double() * self.factor


@pytest.mark.parametrize("factor", [math.pi, 1 / 3, 0.1234567890123456, 1e-20 * math.pi, 7.123456789012345e12, 0.125])
def test_a_float_factor_reads_back_from_json_as_the_same_double(factor: float) -> None:
    torch.manual_seed(0)
    model, x = Scaled(factor), torch.randn(2, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, x)
    again = ncd.load_json(d.as_block().to_json())
    module = again.to_torch()
    module.load_state_dict(d.state_dict(module))
    module.train(d.training)
    fresh = torch.randn(2, 4)
    with torch.no_grad():
        for given in (x, fresh):
            assert torch.equal(module(given), model(given))


def test_a_scale_by_a_floored_size_reads_back_from_json() -> None:
    """``x / (t // 2)`` is a scale by ``1/floor(t/2)``, as sympy writes it; the JSON reader refused its own writer's
    text (``unexpected '('``). Read back, it lowers at other lengths equal to the model, odd ones included."""
    import warnings

    import torch

    import ncd

    class Halves(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x / (x.shape[1] // 2) + x / -(-x.shape[1] // 3)

    d = ncd.trace(Halves(), torch.randn(2, 6), axes={"x": "b t"})
    back = ncd.load_json(d.to_json())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (a read-back is not checked against the model at other sizes: said)
        for t in (6, 7, 9):
            y = torch.randn(3, t)
            torch.testing.assert_close(back.to_torch(b=3, t=t)(y), Halves()(y))
