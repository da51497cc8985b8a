"""Experts read densely, decided at their first call in the recording (ncd.trace.moe_first_call): the model is run
once, not once more before the capture; the check is the same, the decision outlives a failed recording attempt, and
experts first called outside a recording on real values are decided as before (checked against the original model
on fresh inputs)."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch

import ncd
from tests.test_trace_moe import LoopExperts, LoopMoE


def _trace(model: torch.nn.Module, *args: torch.Tensor, **kwargs: Any) -> ncd.TracedDiagram:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ncd.trace(model, *args, **kwargs)


#: the runs of :class:`Counted` (held outside it: the trace puts the model's attributes back as they were)
RUNS: list[int] = []


class Counted(LoopMoE):
    """The loop over experts, counting the model's runs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        RUNS.append(1)
        return super().forward(x)


def test_experts_are_decided_in_the_recording_without_a_run_of_the_model_before_it() -> None:
    """The loop is read densely (its check run at the experts' first call in the recording) and the model runs once
    (was twice: a run before the capture read the experts' arguments); equal to the model on fresh input."""
    torch.manual_seed(0)
    x, fresh = torch.randn(6, 8), torch.randn(6, 8)
    model = Counted().eval()
    RUNS.clear()
    d = _trace(model, x)
    assert len(RUNS) == 1
    assert d.opaque == () and sum(b.prim.op == "linear" for b in d.boxes()) == 1 + 4 * 2
    torch.testing.assert_close(d.to_torch()(fresh), model(fresh), rtol=1e-4, atol=1e-6)
    assert "forward" not in vars(model.experts)  # the module's own forward bound back


def test_experts_first_called_outside_a_recording_on_values_are_decided_by_a_run_before_the_capture(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the experts are first called in ``torch.export`` (fake tensors: nothing can be checked there), the trace is
    captured again with their arguments read by a run of the model first: the diagram of that capture, read densely."""
    from ncd.trace import moe_first_call

    torch.manual_seed(0)
    x, fresh = torch.randn(6, 8), torch.randn(6, 8)
    model = LoopMoE().eval()
    before = _trace(model, x, capture="export")  # (no recording: decided by a run before the capture)
    undecided: list[str] = []
    monkeypatch.setattr(moe_first_call, "recorded_on_values", lambda *a: True)
    raised = moe_first_call.Undecided.__init__
    monkeypatch.setattr(moe_first_call.Undecided, "__init__", lambda self, *a: undecided.append(a[0]) or raised(self, *a))
    d = _trace(model, x, capture="export")
    assert len(undecided) == 1 and "experts" in undecided[0]
    assert d.opaque == () and [b.prim.op for b in d.boxes()] == [b.prim.op for b in before.boxes()]
    torch.testing.assert_close(d.to_torch()(fresh), model(fresh), rtol=1e-4, atol=1e-6)
    assert "forward" not in vars(model.experts)


class ReadAfter(LoopMoE):
    """The loop over experts, then a branch on a value (the recording is made again, as torch.export sees it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        return y * 2 if bool(y.sum() > -1e9) else y


def test_a_decision_outlives_a_recording_attempt_that_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """The model reads a value after its experts: the first recording fails there and the model is recorded again;
    the experts' check ran once (at their first call), and they are read densely in the recording that stands."""
    from ncd.trace import moe_dense

    checks: list[bool] = []
    agrees = moe_dense.agrees
    monkeypatch.setattr(moe_dense, "agrees", lambda *a, **k: checks.append(agrees(*a, **k)) or checks[-1])
    torch.manual_seed(0)
    x, fresh = torch.randn(6, 8), torch.randn(6, 8)
    model = ReadAfter().eval()
    d = _trace(model, x)
    assert checks == [True]
    assert sum(b.prim.op == "linear" for b in d.boxes()) == 1 + 4 * 2
    torch.testing.assert_close(d.to_torch()(fresh), model(fresh), rtol=1e-4, atol=1e-6)


class CountingExperts(LoopExperts):
    """The loop over experts, counting its calls in a buffer the model reads after it."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("seen", torch.zeros(()))

    def forward(self, x: torch.Tensor, chosen: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        self.seen += 1.0
        return super().forward(x, chosen, weights)


class Counting(LoopMoE):
    def __init__(self) -> None:
        super().__init__()
        self.experts = CountingExperts()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights, chosen = self.router(x).softmax(-1).topk(2, dim=-1)
        return x + self.experts(x, chosen, weights) * self.experts.seen


@pytest.mark.parametrize("capture", ["dispatch", "export"])
def test_experts_writing_their_state_are_not_read_densely(capture: str) -> None:
    """An experts module whose own forward updates a buffer (read by the model after it) is not its dense reading,
    which writes nothing: not swapped (was: swapped, the update dropped, the lowered module 0.26 off the model on its
    traced input, without a word).  The loop is then refused (its shapes set by values) or, captured by torch.export,
    drawn as recorded, opaque and the buffer write warned; the check does not move the buffer."""
    torch.manual_seed(0)
    model = Counting().eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            d = ncd.trace(model, torch.randn(6, 8), capture=capture)
        except ncd.TraceError as error:
            assert "nonzero" in str(error)
        else:
            assert d.opaque and any("writes into its buffers" in str(w.message) for w in caught)
    assert float(model.experts.seen) <= 1.0
