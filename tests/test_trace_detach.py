"""``x.detach_()`` while recording: on a constant the forward makes (``torch.tensor(...)`` lifts and detaches its
result) it is run and not recorded again; on a value of the inputs, a view or a tensor the model holds it is recorded as
before.  Each diagram is checked against the model on other inputs, and the constants' writes against torch's."""

from __future__ import annotations

import warnings

import pytest
import torch

import ncd


def _trace(model: torch.nn.Module, *args: torch.Tensor) -> ncd.TracedDiagram:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ncd.trace(model.eval(), *args)


class Scaled(torch.nn.Module):
    """DeBERTa's scale and relative-position buckets: numbers of the sizes made tensors inside the forward."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.sqrt(torch.tensor(x.size(-1), dtype=torch.float) * 3)
        mid = torch.tensor(2.5)
        held = torch.tensor([1.0, -2.0, 0.5]).detach_()  # detached twice (torch.tensor's own, then the model's)
        y = self.lin(x) / scale.to(x.dtype)
        return y * torch.log(mid) + held.sum() + torch.tensor(x.shape[1] - 1.0)


class Cut(torch.nn.Module):
    """A stop-gradient in place on values of the inputs, on a constant then written into, and on a parameter's copy."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lin(x)
        z = (y * 2).detach_()
        table = torch.tensor([0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5])
        table.detach_()
        table.mul_(2.0)  # a write after the detach: the constant read below is the written one
        w = self.lin.weight.clone().detach_()
        return z + y + table + x @ w.t()


@pytest.mark.parametrize("make, seed, shape", [(Scaled, 0, (2, 5, 8)), (Cut, 1, (2, 3, 8))],
                         ids=["constants detached", "detach in place elsewhere"])
def test_detached_values_lower_as_the_model(make: type[torch.nn.Module], seed: int, shape: tuple[int, ...]) -> None:
    torch.manual_seed(seed)
    model = make()
    x = torch.randn(*shape)
    d = _trace(model, x)
    lowered = d.to_torch()
    for fresh in (x, torch.randn(*shape)):
        with torch.no_grad():
            assert torch.allclose(lowered(fresh), model(fresh), atol=1e-6)


def test_constant_detached_keeps_its_node() -> None:
    """The recording of ``torch.tensor(c).detach_()``: the lifted constant's one node, no functional ``detach`` (the
    constant's value is torch's)."""
    from ncd.trace.capture import capture

    class Made(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * torch.tensor([2.0, 3.0]).detach_()

    x = torch.randn(4, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        captured = capture(Made(), (x,), {}, "dispatch")
    packets = [n.target.overloadpacket.__name__ for n in captured.nodes if n.kind == "call"]
    assert "detach" not in packets and "mul" in packets
    mul = next(n for n in captured.nodes if n.kind == "call" and n.target.overloadpacket.__name__ == "mul")
    assert torch.equal(mul.args[1].value, torch.tensor([2.0, 3.0]))


def test_live_detach_in_place_is_drawn_as_detach() -> None:
    """``y.detach_()`` of a value of the inputs is a stop-gradient, as ``y.detach()`` is: drawn ``sg`` (recorded as its
    functional ``detach``), so the lowered module's gradients are the model's and no warning says they flow through it
    (it did, after detach was drawn as sg); ``torch.tensor``'s own ``detach_`` of the constant it makes is not the
    model's and is not warned about either."""

    class Live(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.lin(x)
            return (y * 2).detach_() + y

    torch.manual_seed(0)
    x, model = torch.randn(2, 4), Live()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        d = ncd.trace(model, x)
    assert not any("detaches values from autograd" in str(w.message) for w in seen)
    assert "detach" in {b.prim.op for b in d.boxes()}
    lowered = d.to_torch()
    model(x).sum().backward()
    lowered(x).sum().backward()
    for p, q in zip(model.parameters(), lowered.parameters()):  # the weight's gradient is y's alone (2y is cut)
        assert p.grad is not None and q.grad is not None and torch.allclose(q.grad, p.grad, atol=1e-6)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        ncd.trace(Scaled().eval(), torch.randn(2, 5, 8))
    assert not any("detaches values" in str(w.message) for w in seen)
