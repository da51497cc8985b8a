"""Pointwise operators that are compositions of others — ``addcmul``, ``addcdiv``, ``lerp`` with a number or a tensor
weight — are drawn as their definitions (:mod:`ncd.trace.boxes_pointwise`), not as opaque boxes.  The lowered module
is compared with the model on fresh inputs, and its gradients with autograd's."""

from __future__ import annotations

import pytest
import torch

import ncd


class Mixes(torch.nn.Module):
    def __init__(self, op: str) -> None:
        super().__init__()
        self.op = op

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.op == "lerp":
            return torch.lerp(x, y, torch.sigmoid(y)) + torch.lerp(x, y, 0.3) + torch.lerp(x, y, 0.8)
        if self.op == "addcmul":
            return torch.addcmul(x, x, y, value=0.5) + torch.addcmul(y, x, y)
        return torch.addcdiv(x, x, y.abs() + 1, value=2) + torch.addcdiv(y, x, y.abs() + 1)


@pytest.mark.parametrize("op", ["lerp", "addcmul", "addcdiv"])
def test_a_composite_pointwise_operator_is_drawn_as_its_definition(op: str) -> None:
    model = Mixes(op)
    d = ncd.trace(model, torch.randn(2, 5, 4), torch.randn(2, 5, 4))
    assert d.opaque_count == 0  # was 2 or 3: no rule for aten.lerp / addcmul / addcdiv
    g = torch.Generator().manual_seed(1)
    x, y = (torch.randn(2, 5, 4, generator=g, requires_grad=True) for _ in range(2))
    x2, y2 = (t.detach().clone().requires_grad_(True) for t in (x, y))
    got, want = d.to_torch()(x, y), model(x2, y2)
    torch.testing.assert_close(got, want)
    (got * want.detach()).sum().backward()
    (want * want.detach()).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
    torch.testing.assert_close(y.grad, y2.grad)


class Bilinear(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bil = torch.nn.Bilinear(4, 3, 5)
        self.plain = torch.nn.Bilinear(4, 3, 5, bias=False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.bil(x, y) + self.plain(x, y) + (x.mT @ x).sum(-1).mean()


def test_bilinear_is_an_einsum_with_its_weight_and_mT_a_crossing() -> None:
    torch.manual_seed(0)
    model = Bilinear().eval()
    d = ncd.trace(model, torch.randn(2, 6, 4), torch.randn(2, 6, 3))
    assert d.opaque_count == 0  # was 3: no rule for aten.bilinear (twice) and aten.mT
    lowered = d.to_torch()
    assert sum(p.numel() for p in lowered.parameters()) == sum(p.numel() for p in model.parameters())
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(2, 6, 4, generator=g, requires_grad=True), torch.randn(2, 6, 3, generator=g)
    x2 = x.detach().clone().requires_grad_(True)
    got, want = lowered(x, y), model(x2, y)
    torch.testing.assert_close(got, want)
    got.sum().backward()
    want.sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
