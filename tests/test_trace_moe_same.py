"""A check of experts under random parameters is not run again for a layer that computes the same, and only for one.

Within one trace, the layers' experts modules are checked under the same random parameters
(:func:`ncd.trace.moe_proof.perturbed`); a module whose check is made of what a passed one was made of — its class, its
state but for its parameters' values, its dense reading, the random values and cases (:mod:`ncd.trace.moe_same`) —
passes without running it.  A layer that differs in anything its forward reads (here a flag of its own) is checked.
Each model is traced as built, then the same random weights are set in the model and in its lowered module, and the
two are compared (as :mod:`tests.test_trace_moe_weights` does).
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

import pytest
import torch
from torch import nn

import ncd
from tests.test_trace_moe_weights import _router, _trained

moe_proof = importlib.import_module("ncd.trace.moe_proof")


class FlaggedExperts(nn.ModuleList):
    """The weighted sum of the experts, or, where ``leaky``, every expert applied to every token scaled by its routing
    weight (``Σ_e expert_e(G[t, e] · x)``): with biases of ~0 a ReLU MLP is positively homogeneous, so this is the
    weighted sum as built; once the biases are trained, every expert's biases reach every token."""

    def __init__(self, leaky: bool) -> None:
        super().__init__([nn.Sequential(nn.Linear(8, 12), nn.ReLU(), nn.Linear(12, 8)) for _ in range(4)])
        self.leaky = leaky
        with torch.no_grad():
            for expert in self:
                for layer in (expert[0], expert[2]):  # weights of root mean square 0.2: every layer's random ones
                    layer.weight.mul_(0.2 / layer.weight.square().mean().sqrt())  # the same (of scale 1/4)
                    layer.bias.copy_(1e-9 * torch.randn(layer.bias.shape))

    def forward(self, x: torch.Tensor, chosen: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(x)
        for e, expert in enumerate(self):
            g = (weights * (chosen == e)).sum(-1, keepdim=True)
            out = out + (expert(x * g) if self.leaky else g * expert(x))
        return out


class Block(nn.Module):
    def __init__(self, leaky: bool) -> None:
        super().__init__()
        self.router, self.experts = nn.Linear(8, 4), FlaggedExperts(leaky)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.experts(x, *_router(x, self.router))


class TwoLayers(nn.Module):
    """Two blocks, the second ``leaky`` if asked."""

    def __init__(self, leaky: bool) -> None:
        super().__init__()
        self.layers = nn.ModuleList([Block(False), Block(leaky)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def _counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of cases each check of a dense reading runs (its live cases, then those under random parameters)."""
    runs: list[int] = []
    run = moe_proof._cases_agree

    def counted(module: nn.Module, dense: Any, cases: list[Any], *rest: Any, **more: Any) -> bool:
        runs.append(len(cases))
        return run(module, dense, cases, *rest, **more)

    monkeypatch.setattr(moe_proof, "_cases_agree", counted)
    return runs


def _traced(model: nn.Module, x: torch.Tensor) -> ncd.Diagram:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ncd.trace(model, x)


def test_a_layer_equal_to_a_checked_one_is_not_checked_again_under_random_parameters(
        monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model, x = TwoLayers(leaky=False).eval(), torch.randn(6, 8)
    runs = _counted(monkeypatch)
    d = _traced(model, x)
    assert d.opaque == ()
    assert len(runs) == 3  # each layer's live cases, the first layer's under random parameters only
    lowered = d.to_torch()
    _trained(model, lowered)
    with torch.no_grad():
        torch.testing.assert_close(lowered(x), model(x), rtol=1e-4, atol=1e-5)


def test_a_layer_differing_in_its_own_flag_is_checked_and_drawn_as_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    # the second layer's experts are of the first's class and parameter values and agree with the weighted sum as
    # built, but a flag of their own makes them leak their biases once trained: checked, they are drawn as recorded
    torch.manual_seed(0)
    model, x = TwoLayers(leaky=True).eval(), torch.randn(6, 8)
    runs = _counted(monkeypatch)
    lowered = _traced(model, x).to_torch()
    _trained(model, lowered)
    with torch.no_grad():
        torch.testing.assert_close(lowered(x), model(x), rtol=1e-4, atol=1e-5)
    assert len(runs) == 4


class RoutingSensitiveExperts(nn.ModuleList):
    """The weighted sum of the experts, doubled where every token chose expert 0 (a kernel special-casing a routing):
    equal to the dense reading on random routings, not on the traced one, where every token chooses expert 0."""

    def __init__(self) -> None:
        super().__init__([nn.Sequential(nn.Linear(8, 12), nn.ReLU(), nn.Linear(12, 8)) for _ in range(4)])

    def forward(self, x: torch.Tensor, chosen: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(x)
        for e, expert in enumerate(self):
            out = out + (weights * (chosen == e)).sum(-1, keepdim=True) * expert(x)
        return torch.where((chosen == 0).all(), 2 * out, out)


class FirstChosen(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.router, self.experts = nn.Linear(8, 4), RoutingSensitiveExperts()
        with torch.no_grad():
            self.router.bias.copy_(torch.tensor([100.0, 0.0, 0.0, 0.0]))  # every token chooses expert 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights, chosen = self.router(x).softmax(-1).topk(1, dim=-1)
        return self.experts(x, chosen, weights)


def test_experts_unlike_their_dense_reading_on_the_traced_routing_only_are_drawn_as_recorded() -> None:
    # the dense reading of the traced arguments is compared as recorded (after the check of the random ones): unlike
    # the experts' own result there, the model is captured again and the experts drawn as recorded
    torch.manual_seed(0)
    model, x = FirstChosen().eval(), torch.randn(6, 8)
    lowered = _traced(model, x).to_torch()
    with torch.no_grad():
        for v in (x, x + 0.1):
            torch.testing.assert_close(lowered(v), model(v), rtol=1e-4, atol=1e-5)


class Reading(nn.Module):
    """An expert that reads a value into Python (a recording of it stops there, to record it again another way)."""

    def __init__(self) -> None:
        super().__init__()
        self.up, self.down = nn.Linear(8, 12), nn.Linear(12, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up(x).relu()
        return self.down(h) if bool(h.sum() >= 0) else -self.down(h)


class ReadingExperts(RoutingSensitiveExperts):
    def __init__(self) -> None:
        nn.ModuleList.__init__(self, [Reading() for _ in range(4)])


class FirstChosenReading(FirstChosen):
    def __init__(self) -> None:
        super().__init__()
        self.experts = ReadingExperts()


def test_experts_whose_dense_reading_stops_the_recording_are_compared_before_it_is_recorded_again() -> None:
    # the recording of the dense reading stops inside it (an expert reads a value) and is run again: the decision
    # taken at the first call stands there, so the traced arguments' dense reading is compared before it stops
    torch.manual_seed(0)
    model, x = FirstChosenReading().eval(), torch.randn(6, 8)
    lowered = _traced(model, x).to_torch()
    with torch.no_grad():
        torch.testing.assert_close(lowered(x), model(x), rtol=1e-4, atol=1e-5)
