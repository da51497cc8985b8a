"""A trace runs the model as one call, however many times its recording is attempted.

A recording that fails (a value read into Python, then the exporting path, then guards; the work budget; a meta
kernel missing) is followed by another run of the model.  Each failed run's writes into the model's parameters and
buffers (a step counter, running statistics, ``w.mul_()`` under ``no_grad``, ``self.scale = self.scale * 0.5``) are
undone first: before, a model that reads a truth value was run three times, so the diagram computed its third call
(the lowered module differed from the model's call on the traced input) and the user's model held the state of three
calls.  Each case is compared with a copy of the model run once, and the lowered module with that copy's call.
"""

from __future__ import annotations

import copy
import importlib
import warnings

import pytest
import torch
from torch import nn

import ncd

record = importlib.import_module("ncd.trace.record")


class Counter(nn.Module):
    """Counts its calls in a buffer, scales by the count, and branches on a truth value of the input."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("n", torch.zeros(()))
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.n += 1
        y = self.lin(x) * self.n
        return y * 2 if (x > 0).all() else y


class Rebinds(nn.Module):
    """Binds its buffer to a new tensor every call (``self.scale = self.scale * 0.5``), and branches on the input."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("scale", torch.ones(4))
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.scale = self.scale * 0.5
        y = self.lin(x) * self.scale
        return y * 2 if (x > 0).all() else y


class CountsInPython(nn.Module):
    """Counts its calls in a Python number, scales by it, and branches on a truth value of the input."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        y = self.lin(x) * self.calls
        return y * 2 if (x > 0).all() else y


class Shrinks(nn.Module):
    """Writes into its weight in place under ``no_grad`` every call, and branches on the input."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            self.lin.weight.mul_(0.5)
        y = self.lin(x)
        return y * 2 if (x > 0).all() else y


class Normalises(nn.Module):
    """A batch norm in training mode (running statistics updated by ``batch_norm``, whose schema writes nothing)."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(x)
        return y * 2 if (x > 0).all() else y


class NormalisesInstances(nn.Module):
    """An instance norm keeping running statistics (updated by ``instance_norm`` when it uses the input's own, in
    training mode; read in eval mode), and a batch norm called with its flag by keyword, then the branch."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm1d(2, track_running_stats=True)
        self.register_buffer("mean", torch.zeros(4))
        self.register_buffer("var", torch.ones(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(x.view(3, 2, 2)).view(3, 4)
        mean, var = self.get_buffer("mean"), self.get_buffer("var")
        y = nn.functional.batch_norm(y, mean, var, training=self.training, momentum=0.5)
        return y * 2 if (x > 0).all() else y


class ReadsData(nn.Module):
    """Counts its calls and reads its input as ``x.data`` (recorded by ``torch.export`` after the recorder refuses)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("n", torch.zeros(()))
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.n += 1
        return self.lin(x.data) * self.n


class CountsThenSlices(nn.Module):
    """Counts its calls, then slices by a count of the input's values: refused."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("n", torch.zeros(()))
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.n += 1
        return self.lin(x)[:, : int((x > 0).sum()) % 4 + 1]


def _state_equal(model: nn.Module, other: nn.Module) -> None:
    got, want = model.state_dict(), other.state_dict()
    assert got.keys() == want.keys()
    for name in want:
        assert torch.equal(got[name], want[name]), name


def _traced_once(cls: type[nn.Module], train: bool) -> tuple[nn.Module, nn.Module, ncd.trace.TracedDiagram, torch.Tensor]:
    torch.manual_seed(0)
    model = cls().train(train)
    once = copy.deepcopy(model)
    x = torch.randn(3, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = ncd.trace(model, x.clone())
    return model, once, traced, x


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("cls", [Counter, Rebinds, Normalises, NormalisesInstances, ReadsData, CountsInPython])
def test_a_model_whose_recording_is_retried_is_traced_and_left_as_by_one_call(cls: type[nn.Module],
                                                                             train: bool) -> None:
    model, once, traced, x = _traced_once(cls, train)
    with torch.no_grad():
        want = once(x.clone())
    _state_equal(model, once)  # the model the user holds: run once (its Python attributes: as before, ncd.trace's)
    torch.testing.assert_close(traced.to_torch()(x.clone()), want)  # the diagram: the call it ran, not a third one


def test_a_parameter_written_in_place_while_the_recording_is_retried_is_written_once() -> None:
    model, once, traced, x = _traced_once(Shrinks, False)
    with torch.no_grad():
        once(x.clone())
    _state_equal(model, once)


def test_a_refused_trace_leaves_the_model_as_it_was() -> None:
    torch.manual_seed(0)
    model = CountsThenSlices()
    before = copy.deepcopy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ncd.TraceError):
            ncd.trace(model, torch.randn(3, 4))
    _state_equal(model, before)


class RebindsLarge(nn.Module):
    """Binds a buffer to new values every call and counts its calls in place (no branch)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("scale", torch.ones(4))
        self.register_buffer("n", torch.zeros(()))
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.scale = self.scale * 0.5
        self.n += 1
        return self.lin(x) * self.scale * self.n


def test_a_recording_over_the_work_budget_is_recorded_again_from_the_state_before_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(record, "META_ABOVE", 0)  # recorded on real values within a budget, as large models are
    monkeypatch.setattr(record, "WORK_BUDGET", 0)  # (which the first call exceeds: recorded again on meta)
    monkeypatch.setattr(record, "WORK_PER_CALL", 0)
    model, once, traced, x = _traced_once(RebindsLarge, False)
    with torch.no_grad():
        want = once(x.clone())
    _state_equal(model, once)
    torch.testing.assert_close(traced.to_torch()(x.clone()), want)


class WritesThroughNumpy(nn.Module):
    """Counts its calls through a numpy view of its buffer (a write no operator makes: the recorder does not see it),
    and branches on a truth value of the input."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("n", torch.zeros(()))
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.n.numpy()[...] += 1
        y = self.lin(x) * self.n
        return y * 2 if (x > 0).all() else y


class WritesThroughHeldArray(nn.Module):
    """Counts its calls through a numpy view of its buffer made when it was built (no call of the recording's reaches
    the memory), without a branch."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("n", torch.zeros(()))
        self.count = self.n.numpy()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.count[...] += 1
        return self.lin(x) * self.n


def _over_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(record, "META_ABOVE", 0)  # recorded on real values within a budget, as large models are
    monkeypatch.setattr(record, "WORK_BUDGET", 0)  # (which the first call exceeds: recorded again on meta)
    monkeypatch.setattr(record, "WORK_PER_CALL", 0)


@pytest.mark.parametrize(("cls", "budget"), [(WritesThroughNumpy, False), (WritesThroughNumpy, True),
                                              (WritesThroughHeldArray, True)])  # (no branch: recorded once off budget)
def test_a_write_no_operator_makes_is_undone_before_the_recording_is_retried(
        cls: type[nn.Module], budget: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The buffer written through numpy holds one call's count after the trace (a model built anew is the copy run
    once: a deep copy would copy the held array apart from the buffer)."""
    if budget:
        _over_budget(monkeypatch)
    torch.manual_seed(0)
    model = cls()
    torch.manual_seed(0)
    once = cls()
    x = torch.randn(3, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ncd.trace(model, x.clone())
    with torch.no_grad():
        once(x.clone())
    assert float(once.n) == 1.0
    _state_equal(model, once)


class _Counter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("n", torch.zeros(()))
        self.count = self.n.numpy()

    def bump(self) -> None:
        self.count[...] += 1


class CountsInAnUncalledModule(nn.Module):
    """Writes a buffer of a submodule it never calls (through the submodule's method, or a numpy view it holds)."""

    def __init__(self, through_method: bool) -> None:
        super().__init__()
        self.through_method = through_method
        self.counter = _Counter()
        self.held = self.counter.n.numpy()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.through_method:
            self.counter.bump()
        else:
            self.held[...] += 1
        return self.lin(x)


@pytest.mark.parametrize("through_method", [False, True])
def test_a_buffer_of_a_module_never_called_is_put_back_before_the_retry(
        through_method: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The budget attempt keeps a module's buffers at its first call; a buffer whose module is never called, written
    through a numpy array on its memory, is kept at the attempt's start (it holds one call's count after the trace)."""
    _over_budget(monkeypatch)
    model = CountsInAnUncalledModule(through_method)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ncd.trace(model, torch.randn(3, 4))
    assert float(model.counter.n) == 1.0
