"""A write that reads memory it writes through a strided view (``y /= y[:, :1]``, ``y[:, 1:] = y[:, :-1]``): torch
computes entry by entry, each reading what the call wrote before it, while the diagram reads the operands first. The
trace says so, at the model's line, where the two differ on the traced values; never silently."""

import warnings

import pytest
import torch

import ncd
from ncd.trace import record


class FirstColumn(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * 2
        y /= y[:, :1]  # the first column divided by itself first: the others are divided by 1
        return y


class ShiftRight(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x + 1
        y[:, 1:] = y[:, :-1]  # copies the first column into every one
        return y


class Accumulate(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        y[:, 1:] += y[:, :-1]  # a running sum, entry by entry
        return y


class OutShifted(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.tanh() + 0
        torch.add(y[:, :-1], 1, out=y[:, 1:])  # an out= write: no functional version, torch.export records it
        return y * 2


class Cloned(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        y.mul_(y)  # the same entries: read before written
        y[:, 1:] += y[:, :-1].clone()
        y /= y[:, :1].clone()
        return y


@pytest.mark.parametrize("model", [FirstColumn(), ShiftRight(), Accumulate(), OutShifted()],
                         ids=lambda m: type(m).__name__)
def test_a_write_reading_its_own_memory_is_warned_where_the_diagram_differs(model: torch.nn.Module) -> None:
    x = torch.randn(3, 5)
    with pytest.warns(RuntimeWarning, match=r"writes into memory the same call reads \(at test_trace_overlaps.py:\d+"):
        d = ncd.trace(model, x)
    # what the warning says: the lowered module reads the operands first, the model does not
    assert not torch.allclose(d.to_torch()(x), model(x))


def test_writes_reading_what_they_write_only_entry_for_entry_or_a_copy_are_exact_and_quiet() -> None:
    x = torch.randn(3, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = ncd.trace(Cloned(), x)
    for v in (x, torch.randn(3, 5)):
        torch.testing.assert_close(d.to_torch()(v), Cloned()(v))


def test_on_the_meta_device_such_a_write_is_recorded_again_on_real_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(record, "META_ABOVE", 0)
    monkeypatch.setattr(record, "WORK_BUDGET", -1)  # straight to meta
    x = torch.randn(3, 5)
    with pytest.warns(RuntimeWarning, match="writes into memory the same call reads"):
        ncd.trace(FirstColumn(), x)


class OutLeft(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.tanh() + 0
        torch.add(y[:, 1:], 1, out=y[:, :-1])  # a left shift: each entry read before it is written
        z = torch.empty_like(y)
        torch.mul(y, 3, out=z)  # no overlap
        return y * z


def test_an_out_write_the_export_path_takes_is_quiet_where_it_agrees() -> None:
    """redteam10: the ``out=`` write was silent on the export path where it differs (above: OutShifted, maxdiff ~7);
    where the model's order gives the same values there is nothing to say."""
    x = torch.randn(3, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        d = ncd.trace(OutLeft(), x)
    for v in (x, torch.randn(3, 5)):
        torch.testing.assert_close(d.to_torch()(v), OutLeft()(v))


@pytest.mark.parametrize("model", [FirstColumn(), ShiftRight(), Accumulate(), OutShifted()],
                         ids=lambda m: type(m).__name__)
def test_an_explicit_export_capture_warns_of_such_a_write_too(model: torch.nn.Module) -> None:
    """review11: ``capture="export"`` gave the diagram reading the operands first (max difference 2.0 from the model)
    with no warning; the model is now run once more with its writes watched (ncd.trace.overlaps.watched)."""
    x = torch.randn(3, 5)
    with pytest.warns(RuntimeWarning, match=r"writes into memory the same call reads \(at test_trace_overlaps.py:\d+"):
        d = ncd.trace(model, x, capture="export")
    assert not torch.allclose(d.to_torch()(x), model(x))


class BufferShifted(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("state", torch.arange(10.0).reshape(2, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.state[:, 1:] = self.state[:, :-1]  # the model's own state written, reading itself
        return x + self.state


def test_the_watched_run_of_an_export_capture_leaves_the_model_and_the_inputs_as_they_were() -> None:
    model, x = BufferShifted(), torch.randn(2, 5)
    before, given = model.state.clone(), x.clone()
    with pytest.warns(RuntimeWarning, match="writes into memory the same call reads"):
        ncd.trace(model, x, capture="export")
    torch.testing.assert_close(model.state, before, rtol=0, atol=0)
    torch.testing.assert_close(x, given, rtol=0, atol=0)
    with warnings.catch_warnings():  # and quiet where the writes agree, as the recording is
        warnings.simplefilter("error", RuntimeWarning)
        for m in (Cloned(), OutLeft()):
            d = ncd.trace(m, x, capture="export")
            torch.testing.assert_close(d.to_torch()(x), m(x))


class OneShot(torch.nn.Module):
    """Runs once (a count kept outside the model, which no undo puts back), and writes into memory it reads."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ONE_SHOT_CALLS[0] += 1
        if ONE_SHOT_CALLS[0] > 1:
            raise RuntimeError("called twice")
        y = x + 1
        y[:, 1:] = y[:, :-1]
        return y


ONE_SHOT_CALLS = [0]


def test_an_export_capture_whose_watched_run_fails_says_its_writes_are_not_checked() -> None:
    """fixes: the export path's watched run (the model once more, eagerly, under no_grad as export runs it) returned
    nothing when the model raised there, so a write reading what it writes was silently read first (1.8-3.7 off the
    model on random inputs); now a warning says the writes are not checked, and why."""
    model, x = OneShot(), torch.randn(3, 5)
    ONE_SHOT_CALLS[0] = 0
    with pytest.warns(RuntimeWarning, match=r"writes in place are not checked .* raised RuntimeError: called twice"):
        d = ncd.trace(model, x, capture="export")
    ONE_SHOT_CALLS[0] = 0
    assert not torch.allclose(d.to_torch()(x), model(x))  # (what the warning is about: the diagram reads first)
