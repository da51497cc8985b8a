"""redteam14: inputs nobody chose.  A write in place into a view whose entries overlap (``x.unfold(0, 2, 1)[..., 0]
.mul_(2)``), which the recording leaves to torch.export and torch's functionalization bans, is refused with
``ncd.TraceError`` naming the model's line, where it raised torch's own RuntimeError out of ``ncd.trace``.  An opaque
call whose result's shape depends on the input's values (``x[x > 0]``, ``bincount``, ``one_hot`` without a class count,
``repeat_interleave`` by a tensor) is checked when the lowered module (and its source) runs: another count than traced
raises, where ``x[x > 0].mean()`` divided by the traced count with no error.  A loop whose steps read a truth value
of the inputs (``while x.abs().max() > 1: x = x / 2``) stays unrolled with a guard at every read, where its steps were
folded into one repetition without them (another number of steps computed with the traced one)."""

from __future__ import annotations

import warnings

import pytest
import torch

import ncd


class _OverlappingWrite(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        y.unfold(0, 2, 1)[..., 0].mul_(2)  # the view's windows overlap: functionalization refuses the write
        return y


def test_a_write_into_an_overlapping_view_is_refused_naming_the_line() -> None:
    x = torch.randn(5)
    want = x.clone()
    want[:4] *= 2
    assert torch.equal(_OverlappingWrite()(x), want)  # torch's eager run computes it
    with pytest.raises(ncd.TraceError, match=r"cannot capture _OverlappingWrite: it writes in place at "
                                             r"test_trace_redteam14\.py:\d+ into a view"):
        ncd.trace(_OverlappingWrite(), x)


class _MaskedMean(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[x > 0].mean()


class _Repeated(torch.nn.Module):
    def forward(self, x: torch.Tensor, repeats: torch.Tensor) -> torch.Tensor:
        return x.repeat_interleave(repeats, dim=0).mean(0)


class _Counted(torch.nn.Module):
    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.bincount(ids, minlength=4)


def _traced(model: torch.nn.Module, *args: torch.Tensor) -> ncd.TracedDiagram:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (the boolean mask's count and the opaque call are warned of)
        return ncd.trace(model, *args)


@pytest.mark.parametrize("model, traced, same, other", [
    (_MaskedMean(), (torch.tensor([1.5, -0.3, -2.2, 0.6, -1.1, -1.4]),),
     (torch.tensor([-1.0, 2.0, 3.0, -4.0, -5.0, -6.0]),), (torch.tensor([0.4, 0.8, -0.7, -0.4, -0.6, 0.2]),)),
    (_Repeated(), (torch.randn(3, 2), torch.tensor([1, 2, 1])), (torch.randn(3, 2), torch.tensor([2, 0, 2])),
     (torch.randn(3, 2), torch.tensor([2, 2, 2]))),
    (_Counted(), (torch.tensor([0, 2, 1, 3]),), (torch.tensor([3, 3, 0, 0]),), (torch.tensor([0, 6, 1, 1]),)),
])
def test_a_result_sized_by_the_input_values_is_checked_when_the_lowered_module_runs(
        model: torch.nn.Module, traced: tuple[torch.Tensor, ...], same: tuple[torch.Tensor, ...],
        other: tuple[torch.Tensor, ...]) -> None:
    d = _traced(model, *traced)
    lowered = d.to_torch()
    namespace: dict[str, object] = {}
    exec(compile(d.to_source(), "<source>", "exec"), namespace)  # noqa: S102 - the generated source, run as printed
    source = namespace[type(model).__name__.lstrip("_")]()
    for module in (lowered, source):
        for args in (traced, same):  # the traced count: equal to the model
            torch.testing.assert_close(module(*args), model(*args), rtol=0, atol=1e-6)
    with pytest.raises(ncd.RunError, match="depends on the values of the inputs"):
        lowered(*other)  # another count: was the traced count's mean (0.71 where the model gives 0.47)
    with pytest.raises(RuntimeError, match="depends on the values of the inputs"):
        source(*other)


class _Halving(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        while x.abs().max() > 1:  # a truth value read at every step: a guard each
            x = x / 2
        return x


def test_a_loop_whose_steps_read_a_branch_keeps_every_guard() -> None:
    """The three halvings of [5, 1, 0] (reads True, True, True, False) were folded into one repetition of the step
    whose reads were dropped: [3, 0, 0] (two halvings) gave 0.375 where the model gives 0.75, with no error."""
    d = _traced(_Halving(), torch.tensor([5.0, 1.0, 0.0]))
    lowered = d.to_torch()
    for x in (torch.tensor([5.0, 1.0, 0.0]), torch.tensor([-6.0, 0.5, 2.0])):  # the traced branches: equal
        torch.testing.assert_close(lowered(x), _Halving()(x), rtol=0, atol=0)
    for x in (torch.tensor([3.0, 0.0, 0.0]), torch.tensor([30.0, 0.0, 0.0]), torch.tensor([0.5, 0.0, 0.0])):
        with pytest.raises(ncd.RunError, match="guard of test_trace_redteam14.py"):
            lowered(x)


class _Mismatched(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > -1e9:  # a value read (the recording leaves the model to torch.export), then the model's own error
            x = x * 2
        return self.lin(x) + x  # (b, 3) + (b, 4): torch raises on every input


def test_a_model_that_raises_on_its_inputs_is_refused_saying_so() -> None:
    """The model's own error (a shape mismatch) was blamed on control flow that depends on values, or on
    torch.export ("cannot capture ...: torch.export failed (...) and so did a dispatch trace (...)"); it is now said as
    the model's, with its line."""
    with pytest.raises(RuntimeError, match="must match"):
        _Mismatched()(torch.randn(2, 4))
    with pytest.raises(ncd.TraceError, match=r"the model itself raises on these inputs under torch\.no_grad, as ncd\."
                                             r"trace runs it \(RuntimeError: The size of tensor a \(3\) must match .* "
                                             r"at test_trace_redteam14\.py:\d+\)"):
        ncd.trace(_Mismatched(), torch.randn(2, 4))


class _TakesGradients(torch.nn.Module):
    """A forward that takes a gradient of its own (an energy model's force): it runs, but neither capture takes it."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(4, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(((x @ self.w) ** 2).sum(), x, create_graph=True)
        return g


def test_a_model_taking_gradients_in_its_forward_is_told_it_raises_under_no_grad() -> None:
    """The eager check runs under no_grad, as both captures do: a forward that takes gradients (and runs with them)
    was told "the model itself raises on these inputs" with no word of the mode, as if its inputs were wrong."""
    x = torch.randn(3, 4)
    assert _TakesGradients()(x).shape == (3, 4)  # it runs with gradients
    with pytest.raises(ncd.TraceError, match=r"the model itself raises on these inputs under torch\.no_grad, as "
                                             r"ncd\.trace runs it \(RuntimeError: element 0 of tensors"):
        ncd.trace(_TakesGradients(), x)
