"""Idioms that held a traced value, or another dtype, where the model computes otherwise (review of stop 32's commits).

* ``F.batch_norm(x, mean, var)`` in evaluation reads its statistics as given: a batch norm box holds them as the running
  statistics (constants).  Statistics computed from the input (``x.mean(...)``) are no running statistics: the box held
  their traced values, and the lowered module was off the model on any other input.
* A rotary embedding is ``ρ`` of ``x``, in ``x``'s dtype; tables of a wider dtype (float64 tables on float32 queries)
  promote the model's result, which ``ρ`` would have computed in float32.

Each diagram is compared with the model on the traced input and on a fresh one, dtype included.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ncd
from ncd.prims.normalization import BatchNormOp
from ncd.prims.rotary import RotaryOp


def _traced(model: nn.Module, x: torch.Tensor) -> ncd.TracedDiagram:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ncd.trace(model.eval(), x)


def _agrees(d: ncd.TracedDiagram, model: nn.Module, *inputs: torch.Tensor) -> None:
    lowered = d.to_torch()
    with torch.no_grad():
        for x in inputs:
            got, want = lowered(x), model(x)
            assert got.dtype == want.dtype
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


class InputStatistics(nn.Module):
    """``F.batch_norm`` in evaluation on statistics of the input itself (or on the module's running ones)."""

    def __init__(self, affine: bool, computed: bool) -> None:
        super().__init__()
        self.affine, self.computed = affine, computed
        self.weight, self.bias = nn.Parameter(torch.rand(4) + 0.5), nn.Parameter(torch.randn(4))
        self.register_buffer("mean", torch.randn(4))
        self.register_buffer("var", torch.rand(4) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean, var = (x.mean((0, 2)), x.var((0, 2))) if self.computed else (self.mean, self.var)
        return F.batch_norm(x, mean.detach(), var.detach(), self.weight if self.affine else None,
                            self.bias if self.affine else None, False)


@pytest.mark.parametrize("affine", [False, True])
def test_batch_norm_on_statistics_of_the_input_is_no_running_statistics(affine: bool) -> None:
    torch.manual_seed(0)
    model, x = InputStatistics(affine, computed=True), torch.randn(3, 4, 6)
    d = _traced(model, x)
    assert not any(isinstance(b.prim, BatchNormOp) for b in d.boxes())
    _agrees(d, model, x, 3 * torch.randn(3, 4, 6) + 1)


@pytest.mark.parametrize("affine", [False, True])
def test_batch_norm_on_running_statistics_is_a_batch_norm_box(affine: bool) -> None:
    torch.manual_seed(0)
    model, x = InputStatistics(affine, computed=False), torch.randn(3, 4, 6)
    d = _traced(model, x)
    assert any(isinstance(b.prim, BatchNormOp) for b in d.boxes()) and d.opaque_count == 0
    _agrees(d, model, x, 3 * torch.randn(3, 4, 6) + 1)


class Rotated(nn.Module):
    """Heads of queries rotated by RoFormer's tables of ``dtype``: the halves form (LLaMA's ``rotate_half``) or the
    interleaved one (DeepSeek's ``apply_rotary_pos_emb_interleave``)."""

    def __init__(self, interleaved: bool, dtype: torch.dtype) -> None:
        super().__init__()
        self.q = nn.Linear(16, 16)
        self.interleaved, self.dtype = interleaved, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q(x).view(b, t, 2, 8).transpose(1, 2)
        inv = 1.0 / (10000 ** (torch.arange(0, 8, 2).float() / 8))
        angles = torch.arange(t).float()[:, None] * inv[None]
        angles = torch.cat([angles, angles], -1)
        cos, sin = angles.cos().to(self.dtype), angles.sin().to(self.dtype)
        if self.interleaved:
            cos, sin, x1, x2 = cos[..., :4], sin[..., :4], q[..., 0::2], q[..., 1::2]
            return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)
        return q * cos + torch.cat([-q[..., 4:], q[..., :4]], -1) * sin


@pytest.mark.parametrize("interleaved", [False, True])
def test_rotary_tables_of_a_wider_dtype_stay_as_recorded(interleaved: bool) -> None:
    torch.manual_seed(0)
    model, x = Rotated(interleaved, torch.float64), torch.randn(2, 5, 16)
    d = _traced(model, x)
    assert not any(isinstance(b.prim, RotaryOp) for b in d.boxes())
    _agrees(d, model, x, torch.randn(2, 5, 16))


@pytest.mark.parametrize("interleaved", [False, True])
def test_rotary_tables_of_the_queries_dtype_are_rho(interleaved: bool) -> None:
    torch.manual_seed(0)
    model, x = Rotated(interleaved, torch.float32), torch.randn(2, 5, 16)
    d = _traced(model, x)
    assert any(isinstance(b.prim, RotaryOp) for b in d.boxes())
    _agrees(d, model, x, torch.randn(2, 5, 16))


class CappedExperts(nn.ModuleList):
    """The weighted sum of the experts, each taking at most twice its share of the call's tokens (those past it, in
    order, get nothing from it): a kernel computing a token from the others of its call.  Random routings spread the
    tokens and stay below the capacity, as the traced one here does."""

    def __init__(self) -> None:
        super().__init__([nn.Sequential(nn.Linear(8, 12), nn.ReLU(), nn.Linear(12, 8)) for _ in range(4)])

    def forward(self, x: torch.Tensor, chosen: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        capacity = -(-2 * chosen.numel() // len(self))
        out = torch.zeros_like(x)
        for e, expert in enumerate(self):
            hit = (chosen == e).any(-1)
            kept = hit & (hit.long().cumsum(0) <= capacity)
            out = out + (weights * (chosen == e)).sum(-1, keepdim=True) * kept[:, None] * expert(x)
        return out


class Capped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.router, self.experts = nn.Linear(8, 4), CappedExperts()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights, chosen = self.router(x).softmax(-1).topk(1, dim=-1)
        return self.experts(x, chosen, weights)


def test_experts_with_a_capacity_are_not_read_densely() -> None:
    torch.manual_seed(0)
    model, x = Capped().eval(), torch.randn(8, 8)
    with torch.no_grad():
        model.router.weight.copy_(3 * torch.randn(4, 8))
        assert int(torch.bincount(model.router(x).argmax(-1), minlength=4).max()) <= 4  # the traced call: none dropped
        pool = torch.randn(4000, 8)
        crowded = pool[model.router(pool).argmax(-1) == 3][:8]  # a fresh call: every token to expert 3, 4 dropped
    assert crowded.shape == (8, 8)
    d = _traced(model, x)
    _agrees(d, model, x, crowded)


class CopiedThenViewed(nn.Module):
    """A weight read through a copy and views after it (``w.t().contiguous().t()``), beside itself or alone."""

    def __init__(self, beside: bool) -> None:
        super().__init__()
        self.weight, self.beside = nn.Parameter(torch.randn(4, 4)), beside

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x @ self.weight.t().contiguous().t()
        return out + x @ self.weight if self.beside else out


def _trained(module: nn.Module, x: torch.Tensor) -> nn.Module:
    """A copy of ``module`` after one step of SGD on ``x``."""
    import copy

    trained = copy.deepcopy(module)
    step = torch.optim.SGD(trained.parameters(), lr=0.1)
    trained(x).square().sum().backward()
    step.step()
    return trained


@pytest.mark.parametrize("beside", [True, False])
def test_a_view_of_a_copy_of_a_parameter_is_the_parameter_of_the_lowered_module(beside: bool) -> None:
    """Views taken after the copy held the copy's memory: the lowered module kept it as a buffer (beside the
    parameter: trained apart from it; alone: no parameter to train at all)."""
    torch.manual_seed(0)
    model, x, y = CopiedThenViewed(beside), torch.randn(3, 4), torch.randn(3, 4)
    lowered = _traced(model, x).to_torch()
    assert sum(p.numel() for p in lowered.parameters()) == 16 and not list(lowered.buffers())
    lowered, model = _trained(lowered, x), _trained(model, x)
    with torch.no_grad():
        torch.testing.assert_close(lowered(y), model(y), atol=1e-5, rtol=1e-5)
