"""A folded loop's body reading a value computed from parameters before the loop (``-exp(A_log)`` before a Mamba
scan): the lowered module's gradients are the model's (autograd on both); the value was a constant of the body once,
its parameter's gradient lost with no word (the forward equal)."""

from __future__ import annotations

import warnings

import pytest
import torch

import ncd


class Scan(torch.nn.Module):
    """A hand-written selective scan: the decay ``-exp(a_log)`` is computed once, before the loop over time."""

    def __init__(self) -> None:
        super().__init__()
        self.a_log = torch.nn.Parameter(torch.randn(6, 3) / 2)
        self.proj = torch.nn.Linear(4, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (b, t, 4)
        u = self.proj(x)
        a = -torch.exp(self.a_log)
        h = u.new_zeros(u.shape[0], 6, 3)
        ys = []
        for i in range(x.shape[1]):
            h = torch.exp(a) * h + u[:, i, :, None]
            ys.append(h.sum(-1))
        return torch.stack(ys, 1)


class Power(torch.nn.Module):
    """A matrix made from a parameter (``w + wᵀ``) before the loop, applied ``steps`` times."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(5, 5) / 4)

    def forward(self, v: torch.Tensor) -> torch.Tensor:  # v: (b, 5)
        m = self.w + self.w.t()
        for _ in range(4):
            v = torch.tanh(v @ m)
        return v


@pytest.mark.parametrize(("model", "shape"), [(Scan, (2, 5, 4)), (Power, (3, 5))])
def test_a_value_of_the_parameters_read_in_a_loop_keeps_its_gradient(model: type[torch.nn.Module],
                                                                     shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    m = model().eval()
    x = torch.randn(shape)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about
        d = ncd.trace(m, x)
    lowered = d.to_torch()
    assert any("scan" in type(b.prim).__name__.lower() for b in d.boxes()), "the loop is folded"
    cot = torch.randn_like(m(x))
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    (m(xa) * cot).sum().backward()
    (lowered(xb) * cot).sum().backward()
    want = sorted(float(p.grad.abs().sum()) for p in m.parameters())
    got = sorted(float(p.grad.abs().sum()) if p.grad is not None else 0.0 for p in lowered.parameters())
    assert got == pytest.approx(want, rel=1e-4)
    torch.testing.assert_close(xb.grad, xa.grad)
