"""Module idioms are not proven by the traced weights' special values: a model as built has norm weights of ones and
biases of zeros, where a weight applied before normalising, or a learned scale of 1 inside an activation, equals the
idiom.  Each model here is traced at init, then the same random weights are set in the model and in its lowered module
(each lowered parameter found by the model parameter's values it holds), and the two are compared: the idiom's box
would be right for the traced weights only.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import ncd


class PreScaledRMSNorm(nn.Module):
    """``rms_norm(w * x)``: the weight applied before normalising."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = 1e-6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x * self.weight
        return h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)


class PreScaledT5LayerNorm(PreScaledRMSNorm):
    """The same under a T5-family name (an RMS norm called ``*LayerNorm``, tried by the same idiom)."""


class ShiftedRMSNorm(nn.Module):
    """``w * rms_norm(x + b)``: a bias (zeros as built) added before normalising."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.bias = nn.Parameter(torch.zeros(n))
        self.eps = 1e-6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x + self.bias
        return self.weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps))


class SiLU(nn.Module):
    """Swish of a learned beta (1 as built): ``x * sigmoid(beta * x)``, silu at init only."""

    def __init__(self) -> None:
        super().__init__()
        self.beta = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.beta * x)


class PreScaledLayerNorm(nn.Module):
    """A layer norm written out, its weight applied before centring (Cohere's form otherwise)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = 1e-5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x * self.weight
        mean = h.mean(-1, keepdim=True)
        variance = (h - mean).pow(2).mean(-1, keepdim=True)
        return (h - mean) * torch.rsqrt(variance + self.eps)


VARIANTS = {
    "rms norm, weight before normalising": lambda: PreScaledRMSNorm(8),
    "T5-named rms norm, weight before normalising": lambda: PreScaledT5LayerNorm(8),
    "rms norm, bias before normalising": lambda: ShiftedRMSNorm(8),
    "silu of a learned beta": SiLU,
    "written-out layer norm, weight before centring": lambda: PreScaledLayerNorm(8),
}


def _trained(model: nn.Module, lowered: nn.Module) -> None:
    """The same random values set in each model parameter and in the lowered parameter holding its values."""
    gen = torch.Generator().manual_seed(7)
    owned = list(lowered.parameters())
    with torch.no_grad():
        for name, p in model.named_parameters():
            same = [q for q in owned if q.numel() == p.numel() and torch.equal(q.reshape(-1), p.reshape(-1))]
            assert len(same) == 1, name
            p.copy_(torch.randn(p.shape, generator=gen))
            same[0].copy_(p.reshape(same[0].shape))


@pytest.mark.parametrize("case", sorted(VARIANTS))
def test_a_variant_equal_to_an_idiom_at_init_only_stays_equal_once_trained(case: str) -> None:
    # before, each of these was checked with its live weights (ones and zeros) and drawn as the idiom's box
    # (a weighted RMS box, silu): the lowered module was off once the weights were set
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), VARIANTS[case]()).eval()
    x = torch.randn(3, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, x)
    lowered = d.to_torch()
    _trained(model, lowered)
    with torch.no_grad():
        got, want = lowered(x), model(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_an_activation_module_without_weights_stays_one_box() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.SiLU()).eval()
    x = torch.randn(3, 8)
    d = ncd.trace(model, x)
    assert [b.prim.op for b in d.boxes()] == ["linear", "elementwise"]
    torch.testing.assert_close(d.to_torch()(x), model(x), rtol=1e-4, atol=1e-5)
