"""A write through ``h.detach()`` of a value a gradient reaches (or into ``h`` with its detach read after): the write
reaches both names' values but neither autograd graph, which the diagram does not draw (the written value is read
through the ``sg`` box, so the lowered module's gradient there is zero where the model's is ``h``'s own, or the
other way round).  Since 3e39018 drew the detach as ``sg`` it was no longer warned: a silent gradient difference.
It is warned again; a detach cloned before the write is drawn and equal (no warning)."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch

import ncd

Body = Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]


class Written(torch.nn.Module):
    def __init__(self, body: Body) -> None:
        super().__init__()
        self.lin, self.out = torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self, self.lin(x))


def _through(m: torch.nn.Module, h: torch.Tensor) -> torch.Tensor:
    h.detach().mul_(2)  # the value 2h, the gradient h's
    return m.out(h * 1)


def _read_after(m: torch.nn.Module, h: torch.Tensor) -> torch.Tensor:
    d = h.detach()
    h.add_(1)  # d is h + 1, taking no gradient
    return m.out(d) + h


def _cloned(m: torch.nn.Module, h: torch.Tensor) -> torch.Tensor:
    t = h.detach().clone()
    t.mul_(2)
    return m.out(h + t)


def _grads(module: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    return [g for g in torch.autograd.grad(module(x).sum(), list(module.parameters()), allow_unused=True)
            if g is not None]


def _traced(model: torch.nn.Module, x: torch.Tensor) -> tuple[ncd.TracedDiagram, list[str]]:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        d = ncd.trace(model, x)
    return d, [str(w.message) for w in seen if "detaches values from autograd" in str(w.message)]


@pytest.mark.parametrize("body", [_through, _read_after], ids=["write through the detach", "read after the write"])
def test_a_write_through_a_detach_is_warned(body: Body) -> None:
    torch.manual_seed(0)
    model, x = Written(body), torch.randn(3, 8)
    d, said = _traced(model, x)
    assert said, "not warned"
    with torch.no_grad():  # (the values are the model's; the gradients are what the warning is about)
        assert torch.allclose(d.to_torch()(x), model(x))
    want = sum(g.abs().sum() for g in _grads(model, x))
    got = sum((g.abs().sum() for g in _grads(d.to_torch(), x)), torch.tensor(0.0))
    assert not torch.allclose(got, want)  # (they differ: hence the warning)


def test_a_detach_cloned_before_the_write_is_drawn_and_not_warned() -> None:
    torch.manual_seed(0)
    model, x = Written(_cloned), torch.randn(3, 8)
    d, said = _traced(model, x)
    assert not said
    low = d.to_torch()
    with torch.no_grad():
        assert torch.allclose(low(x), model(x))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(sorted(_grads(model, x), key=lambda g: g.sum().item()),
                                                               sorted(_grads(low, x), key=lambda g: g.sum().item())))
