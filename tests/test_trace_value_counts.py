"""A selection whose size depends on values (``x[x > 0]``) read at another count than traced: the lowered module
equals the model or raises, never another number.  Guards the run-time size check (5adc7c4) against an exemption for
"size-free" reductions: the count also reaches the model through Python (``s.shape[0]``, ``s.numel()``, ``len(s)``,
``torch.ones(s.shape[0])``), where the trace records a plain number no symbol ties to the selection, so only the
run-time check catches it.  The reference is the model itself, on inputs chosen to hold other counts."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch

import ncd
from ncd.errors import RunError


class _Selects(torch.nn.Module):
    def __init__(self, f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.f = f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(x[x > 0], x)


_USES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "sum beside the input's sum": lambda s, x: s.sum() + x.sum(),
    "mean": lambda s, x: s.mean(),
    "sum over shape[0]": lambda s, x: s.sum() / s.shape[0],
    "sum times numel()": lambda s, x: s.sum() * s.numel(),
    "sum plus len()": lambda s, x: s.sum() + len(s),
    "a table of ones as long": lambda s, x: torch.ones(s.shape[0]).sum() + s.sum(),
    "the input scaled by the count": lambda s, x: (x * s.size(0)).sum() + s.amax(),
}


@pytest.mark.parametrize("use", list(_USES))
def test_a_value_sized_selection_at_another_count_equals_the_model_or_raises(use: str) -> None:
    model = _Selects(_USES[use])
    traced_at = torch.tensor([1.5, -1.0, 0.5, -2.0, 3.0, -0.5])  # 3 entries above 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, traced_at)
    lowered = d.to_torch()
    torch.testing.assert_close(lowered(traced_at), model(traced_at))
    for count in (1, 2, 4, 5, 6):
        x = torch.linspace(1.0, 2.0, 6) * torch.tensor([1.0] * count + [-1.0] * (6 - count))
        try:
            got = lowered(x)
        except RunError:
            continue  # loud: the count differs from the traced one
        torch.testing.assert_close(got, model(x), msg=f"{use} at count {count}: the lowered module differs")
