"""``nn.Dropout`` in eval mode recorded as the identity it computes (``ncd.trace.dropouts``).

Each case is traced and its lowered module compared with the model on the traced input and a fresh one; the recording
is checked to hold no ``aten.dropout`` where the module computes the identity, and the module's own run where it may
not (training mode, a subclass's forward, ``F.dropout`` replaced).
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from torch import nn

import ncd
from ncd.trace.capture import capture
from ncd.trace.registry import op_name


class Block(nn.Module):
    def __init__(self, dropout: nn.Module) -> None:
        super().__init__()
        self.fc, self.drop, self.out = nn.Linear(8, 8), dropout, nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.drop(torch.relu(self.fc(x)))
        return self.out(h), self.drop(x)  # (a dropout of an input, returned)


class Doubling(nn.Dropout):
    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return 2 * super().forward(input)


def _calls(model: nn.Module, x: torch.Tensor) -> list[str]:
    return [op_name(n.target)[0] for n in capture(model, (x,), {}, "dispatch").nodes if n.kind == "call"]


def _check(model: nn.Module) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, torch.randn(3, 8))
    lowered = d.to_torch().train(model.training)
    for x in (torch.randn(3, 8), torch.randn(3, 8)):
        with torch.no_grad():
            for got, want in zip(lowered(x), model(x)):
                torch.testing.assert_close(got, want)


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_an_eval_dropout_is_not_recorded(p: float) -> None:
    torch.manual_seed(0)
    model = Block(nn.Dropout(p)).eval()
    calls = _calls(model, torch.randn(3, 8))
    assert "aten.dropout" not in calls and "aten.linear" in calls
    _check(model)


def test_an_inplace_eval_dropout_is_not_recorded() -> None:
    torch.manual_seed(0)
    model = Block(nn.Dropout(0.5, inplace=True)).eval()
    assert "aten.dropout" not in _calls(model, torch.randn(3, 8))
    _check(model)


def test_a_training_dropout_is_recorded() -> None:
    torch.manual_seed(0)
    model = Block(nn.Dropout(0.0)).train()
    assert "aten.dropout" in _calls(model, torch.randn(3, 8))


def test_a_subclass_forward_is_its_own() -> None:
    torch.manual_seed(0)
    model = Block(Doubling(0.2)).eval()
    assert "aten.mul" in _calls(model, torch.randn(3, 8))
    _check(model)


def test_a_replaced_dropout_function_is_what_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """``F.dropout`` replaced (by one doubling its input): the module calls that one, so it is not the identity."""

    def doubled(input: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Any:
        return input * 2

    monkeypatch.setattr(torch.nn.functional, "dropout", doubled)
    torch.manual_seed(0)
    model = Block(nn.Dropout(0.1)).eval()
    assert "aten.mul" in _calls(model, torch.randn(3, 8))
    _check(model)
