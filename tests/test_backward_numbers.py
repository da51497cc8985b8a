"""The backward of an arithmetic box by a number no Scale box holds the derivative of: ``x / 0.0`` (a traced model's
division by a zero tensor or number: its derivative ``1/0`` is infinite), ``x * inf``, ``x / nan``.  ``ncd.backward``
raised ZeroDivisionError (``/ 0``) or a Scale ParseError (``nan``, ``inf``); now the cotangent is divided (multiplied)
by the number itself, as autograd does, and the backward diagram's gradients equal autograd's, infinities and NaNs
included."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
from torch import nn

import ncd
from ncd.torch.verify import compare_gradients


class ByNumber(nn.Module):
    def __init__(self, f: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.f = f
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(self.lin(x))


CASES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "/ 0.0": lambda y: y / 0.0,
    "/ -0.0": lambda y: y / -0.0,
    "/ tensor(0.0)": lambda y: y / torch.tensor(0.0),
    "* inf": lambda y: y * float("inf"),
    "/ nan": lambda y: y / float("nan"),
    "/ inf": lambda y: y / float("inf"),
    "/ 4.0": lambda y: y / 4.0,
}


@pytest.mark.parametrize("case", list(CASES))
def test_backward_of_a_division_by_zero_or_a_product_by_inf_equals_autograd(case: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(ByNumber(CASES[case]), x)
    assert d.opaque_count == 0
    ncd.backward(d)  # raised ZeroDivisionError / ParseError
    compared = compare_gradients(d, inputs=(x,))
    assert compared
    for name, got, want in compared:
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, equal_nan=True, msg=name)


class BesideAConstant(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x * 2, torch.full((3,), 2.0).cumsum(0)  # a float output no input or parameter reaches


def test_gradients_are_compared_beside_a_float_output_that_no_input_reaches() -> None:
    # compare_gradients gave the constant output to torch.autograd.grad, which raised "element 1 of tensors does not
    # require grad"; its cotangent reaches nothing, in the backward diagram as in autograd
    x = torch.randn(2, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(BesideAConstant(), x)
        compared = compare_gradients(d, inputs=(x,))
    assert [name for name, _, _ in compared] == ["input 0"]
    (_, got, want), = compared
    torch.testing.assert_close(got, want)
    assert want.abs().sum() > 0
