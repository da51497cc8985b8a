"""Autoformer's auto-correlation as boxes, not opaque ones: ``irfft(rfft(q) ⊙ conj(rfft(k)))`` (the conjugate a
``ComplexConjugate`` box) and the repeats of its time-delay aggregation, ``w.view(-1, 1, 1).repeat(h, t, c)`` (the
batch tiled, two size-1 wires broadcast).  Each lowered module is compared with the model on a fresh input, and its
gradients with autograd's through the model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ncd


class AutoCorrelation(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q = nn.Linear(4, 4)
        self.k = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k = self.q(x), self.k(x)
        t = x.shape[1]
        spectrum = torch.fft.rfft(q, n=t, dim=1) * torch.conj(torch.fft.rfft(k, n=t, dim=1))
        return torch.fft.irfft(spectrum, n=t, dim=1)


class DelayWeights(nn.Module):
    """Autoformer's aggregation weights: one number per batch entry, tiled over heads and broadcast over time and
    channels."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.proj(x).mean(1)[:, 0]  # (b,)
        return x.repeat(3, 1, 1) * w.view(-1, 1, 1).repeat(3, x.shape[1], x.shape[2])


class NewLeadingWire(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).repeat(2, 1, 3)  # (t, m) -> (2, t, 3m): a new wire, and the features tiled


@pytest.mark.parametrize("model, shape", [(AutoCorrelation, (2, 6, 4)), (DelayWeights, (2, 5, 4)),
                                          (NewLeadingWire, (5, 4))])
def test_auto_correlation_and_its_repeats_are_boxes(model: type, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    m = model().eval()
    d = ncd.trace(m, torch.randn(*shape))
    assert d.opaque_count == 0  # was 1 or 2: aten._conj (no rule), aten.repeat (declined beside tiled wires)
    if model is AutoCorrelation:
        assert [b.prim.op for b in d.boxes()].count("complex_conjugate") == 1
    lowered = d.to_torch()
    x = torch.randn(*shape, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    got, want = lowered(x), m(x2)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    got.square().sum().backward()
    want.square().sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-4, atol=1e-5)
