"""Gemma's zero-centred RMS norm ``x * rsqrt(mean(x²) + eps) * (1 + w)`` traced as one ``RMS·(1+w)`` box
(:class:`~ncd.prims.normalization.RMSNormOp` with an ``offset``), checked against the model itself: values on fresh
inputs and the gradients autograd gives the model's input and weight."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ncd


class ZeroCentredRMSNorm(nn.Module):
    """Gemma's and RecurrentGemma's norm, as Transformers writes it."""

    def __init__(self, dim: int, offset: float = 1.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps, self.offset = eps, offset
        self.weight = nn.Parameter(torch.zeros(dim))

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output = self._norm(x.float())
        output = output * (self.offset + self.weight.float())
        return output.type_as(x)


class ScaledFirstRMSNorm(ZeroCentredRMSNorm):
    """A near miss: ``(1 + w)`` applied before normalising (equal to Gemma's at init, where ``w`` is zeros)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._norm(x * (1.0 + self.weight))


class EpsOutsideRMSNorm(ZeroCentredRMSNorm):
    """A near miss: ``eps`` added outside the root (the RMSNorm paper's ``x / (rms + eps)``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / (x.pow(2).mean(-1, keepdim=True).sqrt() + self.eps) * (1.0 + self.weight)


class Block(nn.Module):
    def __init__(self, norm: nn.Module, dim: int = 16) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


def _trained(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    return model


def _agree(d: ncd.TracedDiagram, model: nn.Module, x: torch.Tensor) -> None:
    """The lowered module's values and gradients (input and every parameter) are the model's."""
    low = d.to_torch()
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    got, want = low(xs[0]), model(xs[1])
    assert torch.equal(got, want)
    torch.manual_seed(1)
    g = torch.randn_like(want)
    got.backward(g)
    want.backward(g)
    assert torch.allclose(xs[0].grad, xs[1].grad, atol=1e-6, rtol=1e-5)
    mine = list(low.parameters())
    assert len(mine) == len(list(model.parameters()))
    for p in model.parameters():  # (each paired with the lowered parameter holding its values)
        (q,) = [q for q in mine if q.shape == p.shape and torch.equal(q, p)]
        assert torch.allclose(q.grad, p.grad, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("offset", [1.0, 2.0])
def test_zero_centred_rms_norm_is_one_box_with_an_offset(offset: float) -> None:
    model = _trained(Block(ZeroCentredRMSNorm(16, offset)))
    torch.manual_seed(2)
    d = ncd.trace(model, torch.randn(2, 5, 16))
    ops = [b.prim.op for b in d.boxes()]
    assert ops == ["linear", "rmsnorm"]  # (was RMS, θ, a constant, + and ⊙)
    norm = next(b.prim for b in d.boxes() if b.prim.op == "rmsnorm")
    assert (norm.affine, norm.offset, norm.eps) == (True, offset, 1e-6)
    assert norm.label() == f"RMS·({offset:g}+w)"
    torch.manual_seed(3)
    _agree(d, model, torch.randn(2, 5, 16))  # fresh values


@pytest.mark.parametrize("norm", [ScaledFirstRMSNorm, EpsOutsideRMSNorm])
def test_near_misses_keep_their_recorded_operations(norm: type[nn.Module]) -> None:
    model = _trained(Block(norm(16)))
    torch.manual_seed(2)
    d = ncd.trace(model, torch.randn(2, 5, 16))
    assert not any(getattr(b.prim, "offset", 0.0) for b in d.boxes())
    torch.manual_seed(3)
    _agree(d, model, torch.randn(2, 5, 16))


def test_offset_norm_lowers_and_differentiates_as_gemma_computes() -> None:
    """The DSL box against Gemma's formula written out: values bit-equal, the backward diagram's gradients autograd's."""
    d = ncd.Identity.of("b t m") >> ncd.RMSNorm("m", offset=1.0)
    low = d.to_torch(b=2, t=3, m=8)
    (w,) = low.parameters()
    assert torch.equal(w, torch.zeros(8))  # (1 + 0: the identity scale, as Gemma starts)
    torch.manual_seed(0)
    with torch.no_grad():
        w.normal_()
    x = torch.randn(2, 3, 8)
    assert torch.equal(low(x), x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * (1.0 + w))
    assert ncd.load_json(d.to_json()).to_json() == d.to_json()


class WeightFirstRMSNorm(ZeroCentredRMSNorm):
    """Gemma's norm with ``1 + w`` made before the normalisation: the same numbers, recorded in another order."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = 1.0 + self.weight
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * scale


def test_gemma_norm_as_recorded_is_proven_without_running_the_module(monkeypatch: pytest.MonkeyPatch) -> None:
    """The module's seven recorded operations are the box's own: no value check is run (it would refuse here); a
    recording in another order, or another computation, is left to the value check, which refuses: not one box."""
    from ncd.trace.module_idioms import ModuleIdioms

    monkeypatch.setattr(ModuleIdioms, "_module_agrees", lambda self, *a, **k: False)
    model = _trained(Block(ZeroCentredRMSNorm(16)))
    torch.manual_seed(2)
    d = ncd.trace(model, torch.randn(2, 5, 16))
    assert [b.prim.op for b in d.boxes()] == ["linear", "rmsnorm"]
    torch.manual_seed(3)
    _agree(d, model, torch.randn(2, 5, 16))
    for norm in (WeightFirstRMSNorm, ScaledFirstRMSNorm, EpsOutsideRMSNorm):
        model = _trained(Block(norm(16)))
        d = ncd.trace(model, torch.randn(2, 5, 16))
        assert not any(getattr(b.prim, "offset", 0.0) for b in d.boxes()), norm
        _agree(d, model, torch.randn(2, 5, 16))


def test_gemma_norm_in_another_order_is_one_box_once_checked_on_values() -> None:
    model = _trained(Block(WeightFirstRMSNorm(16)))
    torch.manual_seed(2)
    d = ncd.trace(model, torch.randn(2, 5, 16))
    assert [b.prim.op for b in d.boxes()] == ["linear", "rmsnorm"]
    torch.manual_seed(3)
    _agree(d, model, torch.randn(2, 5, 16))


class Sandwich(nn.Module):
    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.proj, self.norm, self.out = nn.Linear(dim, dim), ZeroCentredRMSNorm(dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.norm(self.proj(x)))


@pytest.mark.parametrize("model", [Block(ZeroCentredRMSNorm(16)), Sandwich()], ids=["block", "sandwich"])
def test_backward_diagram_of_an_offset_norm_after_a_linear_is_autograds(model: nn.Module) -> None:
    """The offset norm's weight is an ``nn.Parameter`` of the lowered class (beside a weightless ``nn.RMSNorm``): the
    backward plan sorts it before the child modules' weights, as ``parameters()`` does (it was sorted as a child's:
    ``compare_gradients`` fed the linear's weight from the norm's, a RuntimeError on the reshape)."""
    from ncd.torch.verify import compare_gradients

    model = _trained(model)
    torch.manual_seed(2)
    x = torch.randn(2, 5, 16)
    d = ncd.trace(model, x)
    assert any(getattr(b.prim, "offset", 0.0) == 1.0 for b in d.boxes())
    pairs = compare_gradients(d, inputs=(x,))
    assert len(pairs) == 1 + len(list(model.parameters()))
    for what, mine, theirs in pairs:
        assert torch.allclose(mine, theirs, rtol=1e-4, atol=1e-5), what
