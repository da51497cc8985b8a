"""A fill or selection by a constant mask that selects one branch everywhere (``ncd.trace.idioms_fill.constant_fills``):
DeBERTa's ``XSoftmax`` without an attention mask fills nothing, and is drawn as the softmax alone.  Each lowered module
is compared with the model (values bit for bit, gradients, ``-0.0`` and NaN kept); a mask with one entry set, a mask
read from the input, or a branch of another dtype stays a selection."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import ncd
from ncd.errors import TraceError
from ncd.prims.selection import WhereOp


class XSoftmax(torch.autograd.Function):
    """transformers' DeBERTa(-v2)/SEW-D masked softmax, its backward written by hand."""

    @staticmethod
    def forward(ctx, x, mask, dim):  # type: ignore[no-untyped-def, override]
        ctx.dim = dim
        rmask = ~(mask.to(torch.bool))
        out = x.masked_fill(rmask, torch.tensor(torch.finfo(x.dtype).min))
        out = torch.softmax(out, dim)
        out.masked_fill_(rmask, 0)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def, override]
        (out,) = ctx.saved_tensors
        return torch._softmax_backward_data(grad, out, ctx.dim, out.dtype), None, None


class Scores(nn.Module):
    """Attention probabilities of ``x`` (b, t, d) with DeBERTa's mask made in the forward: all ones without an
    attention mask; ``hole`` masks key 0 of every row (one entry set)."""

    def __init__(self, hole: bool = False) -> None:
        super().__init__()
        self.q, self.k = nn.Linear(8, 8), nn.Linear(8, 8)
        self.hole = hole

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = torch.ones(x.shape[:2], dtype=torch.long)
        if self.hole:
            mask[:, 0] = 0
        scores = self.q(x) @ self.k(x).transpose(-1, -2)
        return XSoftmax.apply(scores, mask.unsqueeze(1), -1)


class Select(nn.Module):
    """``where`` of a constant mask made in the forward: ``keep`` all true (the first branch), else all false."""

    def __init__(self, keep: bool) -> None:
        super().__init__()
        self.keep = keep

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        c = torch.ones(x.shape, dtype=torch.bool) if self.keep else torch.zeros(x.shape, dtype=torch.bool)
        return torch.where(c, x * 2, y + 1) * 3


class Fill(nn.Module):
    """``x.masked_fill(mask, 5.0)``, the mask made from the input's values (``live``) or a constant all false."""

    def __init__(self, live: bool) -> None:
        super().__init__()
        self.live = live

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = x > 1e30 if self.live else torch.zeros(x.shape[-1], dtype=torch.bool)
        return (x * 1).masked_fill(mask, 5.0)


def _traced(model: nn.Module, *inputs: torch.Tensor) -> tuple[int, ncd.Diagram]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, *inputs)
    return sum(isinstance(b.prim, WhereOp) for b in d.boxes()), d


def _same(got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape
    assert torch.equal(torch.isnan(got), torch.isnan(want))
    kept = ~torch.isnan(want)
    assert torch.equal(got[kept], want[kept]) and torch.equal(torch.signbit(got[kept]), torch.signbit(want[kept]))


@pytest.mark.parametrize(("hole", "drawn"), [(False, 0), (True, 2)])
def test_a_masked_softmax_without_a_mask_is_the_softmax(hole: bool, drawn: int) -> None:
    # before, the two fills were drawn: two where boxes by the constant mask (and its unsqueezes and moves)
    torch.manual_seed(0)
    model = Scores(hole)
    wheres, d = _traced(model, torch.randn(2, 5, 8))
    assert wheres == drawn
    lowered = d.to_torch()
    for _ in range(3):
        x = torch.randn(2, 5, 8, requires_grad=True)
        x2 = x.detach().clone().requires_grad_(True)
        got, want = lowered(x), model(x2)
        _same(got, want)
        g = torch.randn_like(want)
        got.backward(g)
        want.backward(g)
        assert x.grad is not None and x2.grad is not None
        torch.testing.assert_close(x.grad, x2.grad)
        for (_, p), (_, q) in zip(sorted(lowered.named_parameters()), sorted(model.named_parameters())):
            if p.grad is not None or q.grad is not None:
                torch.testing.assert_close(p.grad, q.grad)
        model.zero_grad()
        lowered.zero_grad()


@pytest.mark.parametrize("keep", [True, False])
def test_a_selection_by_a_constant_mask_of_one_value_is_the_branch_it_selects(keep: bool) -> None:
    torch.manual_seed(0)
    model = Select(keep)
    wheres, d = _traced(model, torch.randn(3, 4), torch.randn(3, 4))
    assert wheres == 0
    x = torch.tensor([[-0.0, float("nan"), 1.0, -2.0]] * 3)
    y = torch.tensor([[float("nan"), -0.0, float("inf"), 3.0]] * 3)
    _same(d.to_torch()(x, y), model(x, y))


@pytest.mark.parametrize(("live", "drawn"), [(False, 0), (True, 1)])
def test_a_fill_by_a_constant_mask_all_false_keeps_its_input_bit_for_bit(live: bool, drawn: int) -> None:
    wheres, d = _traced(Fill(live), torch.randn(2, 4))
    assert wheres == drawn
    x = torch.tensor([[-0.0, float("nan"), float("-inf"), 1e-45], [2.0, -3.0, 0.0, float("inf")]])
    _same(d.to_torch()(x), Fill(live)(x))


def test_a_selection_of_a_branch_smaller_than_its_result_is_drawn() -> None:
    class Grow(nn.Module):
        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            c = torch.zeros(x.shape, dtype=torch.bool)
            return torch.where(c, x * 2, y + 1)  # (y: one row, broadcast over x's: the result is not y)

    wheres, d = _traced(Grow(), torch.randn(2, 3), torch.randn(3))
    assert wheres == 1
    x, y = torch.randn(2, 3), torch.randn(3)
    _same(d.to_torch()(x, y), Grow()(x, y))


def test_a_mask_made_at_the_traced_sizes_keeps_them() -> None:
    # the mask is a table of the traced sizes, which the diagram does not draw: other sizes are refused, as the
    # constant's box refused them
    model = Scores()
    _, d = _traced(model, torch.randn(2, 5, 8))
    with pytest.raises(TraceError, match="constant mask"):
        d.to_torch(b=3)


class Ones(nn.Module):
    """``(x + 1) * ones``: the ones made in the forward (DeBERTa's embeddings times a mask of ones), or a buffer (state
    a checkpoint may set: drawn)."""

    def __init__(self, buffer: bool) -> None:
        super().__init__()
        self.buffer = buffer
        self.register_buffer("w", torch.ones(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.w if self.buffer else torch.ones(x.shape[:-1], dtype=x.dtype).unsqueeze(-1)
        return (x + 1) * w


@pytest.mark.parametrize(("buffer", "drawn"), [(False, 0), (True, 1)])
def test_a_product_by_ones_made_in_the_forward_is_its_other_factor(buffer: bool, drawn: int) -> None:
    from ncd.prims.elementwise import MultiplyOp

    model = Ones(buffer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, torch.randn(3, 4))
    assert sum(isinstance(b.prim, MultiplyOp) for b in d.boxes()) == drawn
    x = torch.tensor([[-1.0, float("nan"), float("-inf"), 1e-45]] * 3)
    _same(d.to_torch()(x), model(x))
