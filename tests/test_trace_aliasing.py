"""Inputs the model writes into, and inputs that share memory: the trace runs the model on copies, so the user's
tensors stay as they were, and the diagram takes its inputs as separate tensors; where that differs from the traced
call (aliased inputs the model writes into in place) the trace warns, never silently."""

import warnings

import pytest
import torch

import ncd


class WritesFirst(torch.nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a.mul_(2)
        return a[: b.shape[0]] + b


class ReadsBoth(torch.nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a * b + a


def test_the_users_input_is_not_written_by_tracing() -> None:
    x = torch.randn(3, 4)
    before = x.clone()
    d = ncd.trace(WritesFirst(), x, torch.randn(3, 4))
    assert torch.equal(x, before)
    a, b = torch.randn(3, 4), torch.randn(3, 4)
    torch.testing.assert_close(d.to_torch()(a.clone(), b.clone()), WritesFirst()(a.clone(), b.clone()))


@pytest.mark.parametrize("view", [False, True])
def test_aliased_inputs_written_in_place_warn_and_lower_as_separate_tensors(view: bool) -> None:
    t = torch.randn(3, 4)
    args = (t, t[:2]) if view else (t, t)
    with pytest.warns(RuntimeWarning, match="share memory.*writes into a in place"):
        d = ncd.trace(WritesFirst(), *args)
    a, b = torch.randn(3, 4), torch.randn(*args[1].shape)
    torch.testing.assert_close(d.to_torch()(a.clone(), b.clone()), WritesFirst()(a.clone(), b.clone()))


def test_one_tensor_passed_twice_and_only_read_is_exact_without_a_warning() -> None:
    t = torch.randn(3, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = ncd.trace(ReadsBoth(), t, t)
    torch.testing.assert_close(d.to_torch()(t, t), ReadsBoth()(t, t))
    a, b = torch.randn(3, 4), torch.randn(3, 4)
    torch.testing.assert_close(d.to_torch()(a, b), ReadsBoth()(a, b))
