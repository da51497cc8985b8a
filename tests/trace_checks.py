"""Checks the importer's tests share: a lowered module against the model it was traced from."""

from __future__ import annotations

import warnings

import torch

import ncd
from ncd.trace import TracedDiagram


def agrees_with_gradients(lowered: torch.nn.Module, model: torch.nn.Module, shape: tuple[int, ...]) -> None:
    """``lowered`` and ``model`` give the same output on a fresh input of ``shape`` and the same gradient of the
    input under ``out.square().sum()``; the parameters' gradients, left on both, are the caller's to compare."""
    x = torch.randn(*shape, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    got, want = lowered(x), model(x2)
    torch.testing.assert_close(got, want)
    got.square().sum().backward()
    want.square().sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)


def traced_without_opaque(model: torch.nn.Module, x: torch.Tensor) -> TracedDiagram:
    """``model`` traced on ``x`` (its warnings silenced) with no opaque box, its lowered module equal to it on ``x``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = ncd.trace(model, x)
    assert traced.opaque_count == 0
    with torch.no_grad():
        torch.testing.assert_close(traced.to_torch()(x), model(x))
    return traced


def one_opaque_and_flops(model: torch.nn.Module, x: torch.Tensor) -> tuple[TracedDiagram, int]:
    """``model`` traced on ``x`` (its warnings silenced) with one opaque box, and torch's FLOP count of the model's own
    forward on ``x`` (``torch.utils.flop_counter``), the independent figure ``ncd.cost`` is compared with."""
    from torch.utils.flop_counter import FlopCounterMode

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = ncd.trace(model, x)
    assert traced.opaque_count == 1
    counter = FlopCounterMode(display=False)
    with counter:
        model(x)
    return traced, counter.get_total_flops()
