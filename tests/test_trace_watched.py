"""What a model does while it is captured that no capture records (``ncd.trace.watched``): each warning points at the
line that called ``ncd.trace``, as a warning about the user's model should."""

from __future__ import annotations

import random
import warnings

import torch
from torch import nn

import ncd


class ReadsWhatNoCaptureRecords(nn.Module):
    """Reads the gradient and inference modes and ``.requires_grad``, draws from Python's random generator, counts its
    calls and has a backward hook: six warnings."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.calls = 0
        self.lin.register_full_backward_hook(lambda *args: None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        scale = 2.0 if torch.is_grad_enabled() else 1.0
        if torch.is_inference_mode_enabled():
            scale += 1
        h: torch.Tensor = self.lin(x)
        if h.requires_grad:
            scale += 1
        if random.random() < 2:
            scale += 1
        return h * scale


def test_each_warning_points_at_the_line_calling_trace() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ncd.trace(ReadsWhatNoCaptureRecords(), torch.randn(2, 4))
    where = {str(w.message)[:80]: f"{w.filename}:{w.lineno}" for w in caught}
    here = [str(w.message) for w in caught if w.filename == __file__]
    for what in ("backward hooks", "Python's random", "torch.is_grad_enabled()", "torch.is_inference_mode_enabled()",
                 ".requires_grad", "changes its attributes"):
        assert any(what in m for m in here), (what, where)  # before: five of them at ncd/trace/__init__.py


class DoesWhatTheRecordingSays(nn.Module):
    """Draws with torch, detaches a value, writes into its buffer in place: the recording's own warnings."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.register_buffer("seen", torch.zeros(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h: torch.Tensor = self.lin(x)
        self.seen.add_(h.detach().mean(0))
        return h * torch.rand(4) + h.detach()


def test_the_recordings_warnings_point_at_the_line_calling_trace() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ncd.trace(DoesWhatTheRecordingSays(), torch.randn(2, 4))
    said = [(str(w.message)[:60], w.filename) for w in caught if str(w.message).startswith("ncd.trace(")]
    assert len(said) >= 2, said  # random draws, the buffer written (the detach is drawn: a stop-gradient box)
    assert all(filename == __file__ for _, filename in said), said  # before: ncd/trace/record.py
