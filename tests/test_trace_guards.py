"""A branch on a truth value of the inputs (``if not padding_mask.any(): padding_mask = None``) is traced as the branch
taken plus a run-time guard: the lowered module equals the model on every input taking that branch and raises an
``ncd`` error naming the model's line on any other — never silently wrong.  A number read into Python (a size, a
count) stays a refusal."""

from __future__ import annotations

import warnings

import pytest
import torch

import ncd
from ncd.prims.guard import GuardOp


class Padded(torch.nn.Module):
    """fsmt's ``make_padding_mask``: the mask is dropped when nothing is padding."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        mask = ids.eq(1)
        if not mask.any():  # the guarded line
            mask = None
        y = self.proj(x)
        if mask is not None:
            y = y.masked_fill(mask[..., None], 0.0)
        return y


LINE = f"test_trace_guards.py:{Padded.forward.__code__.co_firstlineno + 2}"


def _trace(model: torch.nn.Module, *inputs: torch.Tensor) -> ncd.TracedDiagram:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ncd.trace(model, *inputs)


def _guards(d: ncd.Diagram) -> list[GuardOp]:
    return [b.prim for b in d.boxes() if isinstance(b.prim, GuardOp)]


def test_the_branch_taken_is_drawn_with_a_guard_and_equal_on_fresh_inputs_of_that_branch() -> None:
    torch.manual_seed(0)
    model = Padded().eval()
    x, ids = torch.randn(2, 3, 4), torch.randint(2, 9, (2, 3))  # no padding: the mask is dropped
    d = _trace(model, x, ids)
    (guard,) = _guards(d)
    assert (guard.expected, guard.line) == (False, LINE)
    lowered = d.to_torch()
    with torch.no_grad():
        assert torch.allclose(lowered(x, ids), model(x, ids), atol=1e-6)
        fresh = torch.randn(2, 3, 4), torch.randint(2, 9, (2, 3))
        assert torch.allclose(lowered(*fresh), model(*fresh), atol=1e-6)
        padded = fresh[1].clone()
        padded[0, 2] = 1  # the other branch: the model masks, the diagram would not
        with pytest.raises(ncd.NCDError, match=f"guard of {LINE}: the model read True here, but the traced model read"
                                               " False"):
            lowered(fresh[0], padded)
    assert "if not bool((" in lowered.ncd_source and LINE in lowered.ncd_source  # readable in the generated source


def test_the_other_branch_traces_to_its_own_diagram() -> None:
    torch.manual_seed(0)
    model = Padded().eval()
    x, ids = torch.randn(2, 3, 4), torch.tensor([[1, 5, 6], [7, 8, 1]])
    d = _trace(model, x, ids)
    assert [g.expected for g in _guards(d)] == [True]
    lowered = d.to_torch()
    ids2 = torch.tensor([[4, 1, 6], [7, 8, 9]])
    with torch.no_grad():
        assert torch.allclose(lowered(x, ids2), model(x, ids2), atol=1e-6)
        with pytest.raises(ncd.NCDError, match="the model read False here, but the traced model read True"):
            lowered(x, torch.full((2, 3), 5))


class Signed(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 if x.sum() > 0 else -x  # a comparison read as a truth value


class Counted(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[: int((x > 0).sum()) + 1]  # a number read into Python sets a shape: data-dependent


def test_a_comparison_is_guarded_and_a_number_read_is_still_refused() -> None:
    x = torch.rand(3, 4) + 0.1
    d = _trace(Signed(), x)
    assert [g.expected for g in _guards(d)] == [True]
    assert torch.equal(d.to_torch()(x + 1), Signed()(x + 1))
    with pytest.raises(ncd.NCDError, match="guard of test_trace_guards.py"):
        d.to_torch()(-x)
    with pytest.raises(ncd.TraceError, match="test_trace_guards.py"):
        _trace(Counted(), x)


class Exporting(torch.nn.Module):
    """A library's traceable path (as transformers' mask helpers): no branch on values while exporting."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if not torch.compiler.is_exporting() and bool(mask.all()):
            return x
        return x.masked_fill(~mask, 0.0)


def test_the_traceable_path_is_preferred_to_a_guard() -> None:
    x, mask = torch.randn(2, 3), torch.ones(2, 3, dtype=torch.bool)
    d = _trace(Exporting(), x, mask)
    assert not _guards(d)
    mask2 = mask.clone()
    mask2[0, 1] = False
    assert torch.equal(d.to_torch()(x, mask2), Exporting()(x, mask2))


def test_a_traced_guard_is_drawn_and_costed() -> None:
    from ncd.render import layout
    from ncd.render.check import problems
    from ncd.torch.measure import measure

    x, ids = torch.randn(2, 3, 4), torch.randint(2, 9, (2, 3))
    d = _trace(Padded().eval(), x, ids)
    drawing = layout(d)
    assert [f.name for f in drawing.footprints if f.name == "guard"] == ["guard"] and problems(drawing) == []
    report, measured = ncd.cost(d.as_block()), measure(d.as_block(), inputs=(x, ids))  # the guard runs, costs nothing
    assert (report.activation_bytes, report.params) == (measured.activation_bytes, measured.params) == (96, 20)
