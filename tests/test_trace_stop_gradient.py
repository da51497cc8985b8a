"""A model that stops gradients (``detach``, ``with torch.no_grad():``): a ``detach()`` is drawn as a stop-gradient box
(``sg``, :mod:`ncd.prims.detach`), so the lowered module's gradients are the model's and nothing is said; a stop the
diagram does not draw is traced with a warning naming the lines (the lowered module's gradients flow where the
model's stop: a straight-through estimator's input gradient differed by 1.8, with no word said, before either).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import ncd


class _Stops(nn.Module):
    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        if self.how == "straight_through":
            return h + (h.round() - h).detach()
        if self.how == "no_grad":
            with torch.no_grad():
                g = self.b(h)
            return g * h
        if self.how == "frozen_weight":
            return h @ self.b.weight.detach().T
        return self.b(h)  # no stop: no warning


def _grads(module: nn.Module, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_()
    (module(x) * w).sum().backward()
    assert x.grad is not None
    return x.grad


@pytest.mark.parametrize("how", ["straight_through", "no_grad", "frozen_weight", "none"])
def test_a_stopped_gradient_is_warned_of_and_the_forward_is_the_models(how: str) -> None:
    torch.manual_seed(0)
    model = _Stops(how).eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d = ncd.trace(model, torch.randn(2, 3, 4))
    said = [str(w.message) for w in caught if "detaches values from autograd" in str(w.message)]
    lowered = d.to_torch()
    x, w = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    torch.testing.assert_close(lowered(x), model(x))
    if how == "none":
        assert not said
        torch.testing.assert_close(_grads(lowered, x, w), _grads(model, x, w))
        return
    if how in ("straight_through", "frozen_weight", "no_grad"):  # drawn (sg): the model's gradients, nothing said
        assert not said, said
        assert any(b.prim.op == "detach" for b in d.boxes())
        torch.testing.assert_close(_grads(lowered, x, w), _grads(model, x, w))
        return
    raise AssertionError(how)  # (every stop here is drawn now)


class _Autocast(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = self.a(x)
        return y.float()


def test_a_model_running_under_autocast_is_warned_of() -> None:
    # recorded in float32 (autocast casts below the level recorded): the lowered module's results differ from the
    # model's by bfloat16's rounding (6e-3 here), with only an opaque-box warning for the cast back
    torch.manual_seed(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ncd.trace(_Autocast().eval(), torch.randn(2, 5, 8))
    said = [str(w.message) for w in caught if "runs under torch.autocast" in str(w.message)]
    assert len(said) == 1 and "test_trace_stop_gradient.py:" in said[0], said
