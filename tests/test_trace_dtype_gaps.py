"""Casts a traced model makes keep their types when the lowered module runs: ``.float()`` of a float16 value is
float32 even under ``torch.set_default_dtype(torch.float64)`` (the cast was lowered as ``.to(torch.get_default_dtype())``
and gave float64 there, where the model gives float32)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ncd
from ncd.torch.verify import compare_gradients


class HalfSection(nn.Module):
    """A float32 model computing a step in float16 and reading it back with ``.float()``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.half() * 3).float() + x


def test_float_of_a_half_value_is_float32_under_another_default_dtype() -> None:
    torch.manual_seed(0)
    x, fresh = torch.randn(2, 4), torch.randn(2, 4)
    diagram = ncd.trace(HalfSection(), x)
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        lowered = diagram.to_torch()
        for given in (x, fresh):
            got, want = lowered(given), HalfSection()(given)
            assert got.dtype == want.dtype == torch.float32
            assert torch.equal(got, want)
    finally:
        torch.set_default_dtype(before)


def test_float_of_a_half_value_differentiates_as_autograd() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 4)
    diagram = ncd.trace(HalfSection(), x)
    assert "get_default_dtype" not in diagram.to_torch().ncd_source
    xg = x.clone().requires_grad_()
    HalfSection()(xg).sum().backward()
    lowered_x = x.clone().requires_grad_()
    diagram.to_torch()(lowered_x).sum().backward()
    assert lowered_x.grad is not None and xg.grad is not None and torch.equal(lowered_x.grad, xg.grad)
    for name, got, want in compare_gradients(diagram, inputs=(x,)):  # the backward diagram against autograd
        assert got.dtype == want.dtype, name
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=name)


class RowsCast(nn.Module):
    """A table's first ``t`` rows cast to the input's type (``pos[:t].to(x.dtype)``), optionally through float64 and
    with a leading axis of one."""

    def __init__(self, through: bool = False, lead: bool = False) -> None:
        super().__init__()
        self.pos = nn.Embedding(16, 4)
        self.through, self.lead = through, lead

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = self.pos.weight[None, : x.shape[1]] if self.lead else self.pos.weight[: x.shape[1]]
        if self.through:
            rows = rows.double()
        return x * 2 + rows.to(x.dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize("through", [False, True], ids=["cast", "through float64"])
@pytest.mark.parametrize("lead", [False, True], ids=["rows", "1 rows"])
def test_first_rows_of_a_table_cast_lower_at_other_lengths(dtype: torch.dtype, through: bool, lead: bool) -> None:
    """Refused at another length since 3eae1a5 (the slice, wired for its cast, kept the traced ``[0:5]``): now the
    table sliced to ``:t``, then cast boxes; the same values and gradients as the model at ``t = 7``."""
    torch.manual_seed(0)
    model = RowsCast(through, lead)
    x, longer = torch.randn(2, 5, 4, dtype=dtype), torch.randn(2, 7, 4, dtype=dtype)
    diagram = ncd.trace(model, x)
    assert diagram.opaque_count == 0
    for given, lowered in ((x, diagram.to_torch()), (longer, diagram.to_torch(t=7))):
        assert sum(p.numel() for p in lowered.parameters()) == sum(p.numel() for p in model.parameters())
        got, want = lowered(given), model(given)
        assert got.dtype == want.dtype and torch.equal(got, want)
        model.zero_grad()
        want.float().square().sum().backward()
        got.float().square().sum().backward()
        (mine,), (theirs,) = list(lowered.parameters()), list(model.parameters())
        assert mine.grad is not None and theirs.grad is not None and torch.equal(mine.grad, theirs.grad)


class ClampHeld(nn.Module):
    """``torch.clamp`` of values of one type by bounds held in 0-dim tensors of another (T5's float32 bounds on float16
    values)."""

    def __init__(self, dtype: torch.dtype, bound: torch.dtype, learned: bool = False) -> None:
        super().__init__()
        self.dtype = dtype
        lo, hi = torch.tensor(-0.1, dtype=bound) if bound.is_floating_point else torch.tensor(-1), torch.tensor(0.3).to(
            bound) if bound.is_floating_point else torch.tensor(1)
        if learned:
            self.lo, self.hi = nn.Parameter(lo), nn.Parameter(hi)
        else:
            self.register_buffer("lo", lo)
            self.register_buffer("hi", hi)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x.to(self.dtype) * 3, self.lo, self.hi)


@pytest.mark.parametrize("bound", [torch.float32, torch.float64, torch.float16, torch.int64], ids=str)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
def test_clamp_by_held_numbers_of_another_type_is_drawn_and_equal(dtype: torch.dtype, bound: torch.dtype) -> None:
    """Was an opaque ``clamp.Tensor`` when a bound's type differed from the values'; now max/min boxes with the bound
    read in the values' type, as torch's clamp reads it."""
    torch.manual_seed(0)
    model = ClampHeld(dtype, bound)
    x, fresh = torch.randn(3, 40) * 0.2, torch.randn(3, 40) * 0.2
    diagram = ncd.trace(model, x)
    assert diagram.opaque_count == (0 if dtype != bound else diagram.opaque_count)
    lowered = diagram.to_torch()
    for given in (x, fresh):
        got, want = lowered(given), model(given)
        assert got.dtype == want.dtype and torch.equal(got, want)


def test_clamp_by_learned_bounds_of_another_type_keeps_their_gradients() -> None:
    torch.manual_seed(0)
    model = ClampHeld(torch.float16, torch.float32, learned=True)
    x = torch.randn(3, 40) * 0.2
    lowered = ncd.trace(model, x).to_torch()
    got, want = lowered(x), model(x)
    assert got.dtype == want.dtype and torch.equal(got, want)
    want.float().sum().backward()
    got.float().sum().backward()
    theirs = sorted(float(p.grad) for p in model.parameters() if p.grad is not None)
    mine = sorted(float(p.grad) for p in lowered.parameters() if p.grad is not None)
    assert mine == theirs
