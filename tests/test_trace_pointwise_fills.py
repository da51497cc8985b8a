"""Fills drawn as their definitions (:mod:`ncd.trace.boxes_pointwise`) where the definition would not be the operator:
``nan_to_num`` filling an infinity with an infinity or NaN (filled again by the next step), and ``softshrink`` of a
float16 or bfloat16 tensor (its shift, lowered, came out in float32).  Each lowered module is compared with the model
(values, NaN places and dtype)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

import ncd

INF = float("inf")


class Pointwise(torch.nn.Module):
    def __init__(self, function: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.function = function

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.function(x)


@pytest.mark.parametrize("function", [
    lambda x: torch.nan_to_num(x, posinf=-INF, neginf=5.0),
    lambda x: torch.nan_to_num(x, nan=1.0, neginf=float("nan")),
    lambda x: torch.nan_to_num(x, nan=1.0, posinf=float("nan")),
    lambda x: torch.nan_to_num(x, posinf=2.0, neginf=-3.0),
    lambda x: F.softshrink(x.half(), 0.1),
    lambda x: F.softshrink(x.bfloat16(), 0.1),
    lambda x: F.softshrink(x, 0.1),
], ids=["posinf=-inf", "neginf=nan", "posinf=nan", "finite fills", "softshrink half", "softshrink bf16",
        "softshrink float32"])
def test_fills_lowered_are_the_operator(function: Callable[[torch.Tensor], torch.Tensor]) -> None:
    x = torch.tensor([[1.0, INF, -INF, float("nan"), -0.3, 0.2, 0.05, -2.7]])
    model = Pointwise(function)
    got, want = ncd.trace(model, x).to_torch()(x), model(x)
    assert got.dtype == want.dtype
    torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)
