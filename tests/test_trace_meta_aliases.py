"""Writes through ``h.data`` (an alias made without an operator) of a value of the inputs, recorded on the meta device
(a large model) or after a recording on real values switched to meta: seen as on real values (the call refused, drawn
by ``torch.export`` as an opaque write), never dropped.  Before, on meta ``h.data.add_(1)`` was drawn as a write into a
constant nothing read: the lowered module computed without it, off by 1.0, with no word."""

from __future__ import annotations

import copy
import importlib
import warnings
from typing import Any

import pytest
import torch
from torch import nn

import ncd

record = importlib.import_module("ncd.trace.record")
recording = importlib.import_module("ncd.trace.recording")
switching = importlib.import_module("ncd.trace.switch")


class Written(nn.Module):
    """``h = lin(x)``, a value read before a write into ``h`` through an alias no recorded call made, then ``h``."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.first = nn.Linear(16, 16)
        self.lin = nn.Linear(16, 16)
        self.how = how

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first(x)
        h = self.lin(x)
        g = h * 2
        if self.how == "data.add_":
            h.data.add_(1)
        elif self.how == "data.mul_":
            h.data.mul_(3)
        elif self.how == "data.copy_":
            h.data.copy_(x)
        elif self.how == "data[0].add_":
            h.data[0].add_(1)
        elif self.how == "data.t().mul_":
            h.data.t().mul_(2)
        elif self.how == "detach().data.add_":
            h.detach().data.add_(1)
        elif self.how == "input data.add_":
            x.data.add_(1)
            return g + x
        elif self.how == "detach().add_":
            h.detach().add_(1)
        elif self.how == "no_grad add_":
            with torch.no_grad():
                h.add_(1)
        return g + h


HOWS = ["data.add_", "data.mul_", "data.copy_", "data[0].add_", "data.t().mul_", "detach().data.add_",
        "input data.add_", "detach().add_", "no_grad add_"]


def _spied(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The calls on real values at which recordings switched to meta."""
    at: list[int] = []

    def spied(rec: Any) -> bool:
        done = switching.switch(rec)
        if done:
            at.append(rec.calls)
        return done

    monkeypatch.setattr(recording, "switch", spied)
    return at


#: the work of the first linear (8 x 16 by 16 x 16, a bias): a budget switching at the second or at the third call
_LINEAR = 8 * 16 * 16 + 8 * 16 * 10


@pytest.mark.parametrize("budget", [-1, 0, _LINEAR + 1, 2 * _LINEAR + 1])
@pytest.mark.parametrize("how", HOWS)
def test_a_write_through_an_alias_recorded_on_meta_is_the_models(
        how: str, budget: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """On meta from the start (budget -1), switched to meta at the first linear (0), at the second (``h`` a meta tensor
    the model makes from a real ``x``) or after it (``h`` a real tensor recorded before the switch): the lowered module
    computes the model's values, compared exactly with the model's own call (an opaque write or a recorded one, as on
    real values)."""
    torch.manual_seed(0)
    model, x = Written(how).eval(), torch.randn(8, 16)
    reference = copy.deepcopy(model)
    monkeypatch.setattr(record, "META_ABOVE", 0)
    monkeypatch.setattr(record, "WORK_BUDGET", budget)
    monkeypatch.setattr(recording, "WORK_PER_CALL", 0)
    at = _spied(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lowered = ncd.trace(model, x).to_torch().eval()
    if budget >= 0:
        assert at == [1 + budget // _LINEAR], at  # switched where the test means to
    for values in (x, torch.randn(8, 16)):
        with torch.no_grad():
            torch.testing.assert_close(lowered(values), reference(values), rtol=0, atol=0)


def test_the_same_writes_on_real_values_are_the_models() -> None:
    """The comparison the meta cases hold to: on real values every write above is already the model's."""
    for how in HOWS:
        torch.manual_seed(0)
        model, x = Written(how).eval(), torch.randn(8, 16)
        reference = copy.deepcopy(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lowered = ncd.trace(model, x).to_torch().eval()
        with torch.no_grad():
            torch.testing.assert_close(lowered(x), reference(x), rtol=0, atol=0)
