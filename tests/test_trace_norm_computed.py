"""A layer norm whose weight or bias is computed (VideoPrism's ``layer_norm(x, shape, weight + 1.0, bias)``) is a
weightless ``LN`` box, the product with the computed weight and the sum with the bias — not an opaque box.  Each
lowered module is compared with the model on a fresh input, with its weights set to other random values (so a box
right only for the traced weights fails), and its gradients with autograd's through the model."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ncd


class ShiftedLayerNorm(nn.LayerNorm):
    """VideoPrism's: the weight is stored as ``gamma - 1``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.normalized_shape, self.weight + 1.0, self.bias, self.eps)


class ComputedBiasLayerNorm(nn.LayerNorm):
    """Only the bias computed; no weight."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.normalized_shape, None, self.bias * 2.0, self.eps)


class TwoAxesLayerNorm(nn.Module):
    """Normalised over two axes with a computed weight: no single-axis box; stays opaque, and right."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(3, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (3, 8), self.weight * 2.0, None, 1e-5)


def _model(norm: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), norm).eval()
    with torch.no_grad():
        for p in norm.parameters():
            p.normal_()
    return model


def _matched(model: nn.Module, lowered: nn.Module) -> list[tuple[nn.Parameter, nn.Parameter]]:
    """Each model parameter with the lowered parameter holding its values."""
    owned = list(lowered.parameters())
    pairs = []
    for name, p in model.named_parameters():
        same = [q for q in owned if q.numel() == p.numel() and torch.equal(q.detach().reshape(-1), p.detach().reshape(-1))]
        assert len(same) == 1, name
        pairs.append((p, same[0]))
    return pairs


@pytest.mark.parametrize("norm", [ShiftedLayerNorm, ComputedBiasLayerNorm])
def test_a_layer_norm_with_a_computed_weight_is_a_weightless_norm_times_it(norm: type) -> None:
    model = _model(norm(8))
    x = torch.randn(2, 3, 8)
    d = ncd.trace(model, x)
    assert d.opaque_count == 0  # was 1: layer_norm.default drawn opaque
    assert [b.prim.op for b in d.boxes()].count("layernorm") == 1
    lowered = d.to_torch()
    pairs = _matched(model, lowered)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p, q in pairs:
            p.copy_(torch.randn(p.shape, generator=gen))
            q.copy_(p.reshape(q.shape))
    fresh = torch.randn(2, 3, 8, generator=gen)
    got, want = lowered(fresh), model(fresh)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    got.square().sum().backward()
    want.square().sum().backward()
    for p, q in pairs:
        if p.grad is None:  # a parameter the model does not read (the computed-bias norm's weight)
            assert q.grad is None or not q.grad.any()
            continue
        torch.testing.assert_close(q.grad.reshape(p.shape), p.grad, rtol=1e-4, atol=1e-5)


def test_a_layer_norm_over_two_axes_with_a_computed_weight_stays_opaque_and_right() -> None:
    model = _model(TwoAxesLayerNorm())
    x = torch.randn(2, 3, 8)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        d = ncd.trace(model, x)
    assert d.opaque_count == 1
    torch.testing.assert_close(d.to_torch()(x), model(x), rtol=1e-5, atol=1e-5)
