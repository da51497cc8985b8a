"""A float divided by a number and floored (``torch.div(x, c, rounding_mode="floor")``, ``x // c``): a step function,
whose derivative is 0 wherever it has one.  The backward diagram gives zeros there (it passed the cotangent through,
as if the box were the identity), and the lowered module differentiates as the model does (it lowered to
``floor_divide``, which torch cannot differentiate: training it raised where the model's ``div`` gives 0)."""

from __future__ import annotations

import warnings

import torch
from torch import nn

import ncd
from ncd.torch.verify import compare_gradients


class Floored(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(x)
        return torch.div(h, 0.5, rounding_mode="floor") * 0.25 + h


def test_a_floor_division_has_gradient_zero() -> None:
    torch.manual_seed(0)
    model = Floored()
    x = torch.randn(3, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, x)
    assert d.opaque_count == 0 and any(b.prim.label() == "// 0.5" for b in d.boxes())
    lowered = d.to_torch()
    grads = []
    for module in (model, lowered):
        xs = x.clone().requires_grad_(True)
        out = module(xs)
        assert isinstance(out, torch.Tensor)
        grads.append(torch.autograd.grad(out, [xs, *module.parameters()], torch.linspace(-1, 1, 12).reshape(3, 4)))
    for got, want in zip(grads[1], grads[0]):  # the lowered module's against the model's: h's gradient only
        torch.testing.assert_close(got, want)
    for name, got, want in compare_gradients(d, inputs=(x,)):  # the backward diagram's against autograd's
        torch.testing.assert_close(got, want, msg=name)
