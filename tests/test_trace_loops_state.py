"""Loops whose only results are their states (ncd.trace.loops_state) fold into one repetition of their step: the
Sinkhorn normalisation of DeepSeek-V4 / GLM-5-Next's hyper-connections, power iteration; near misses stay as recorded."""

from __future__ import annotations

import warnings

import pytest
import torch

import ncd
from ncd.torch.codegen import to_source


class Sinkhorn(torch.nn.Module):
    """DeepSeek-V4's comb weight: one column normalisation, then ``iters - 1`` rounds of rows and columns."""

    def __init__(self, iters: int) -> None:
        super().__init__()
        self.iters = iters

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (b, t, n, n)
        comb = torch.softmax(x, dim=-1) + 1e-6
        comb = comb / (comb.sum(dim=-2, keepdim=True) + 1e-6)
        for _ in range(self.iters - 1):
            comb = comb / (comb.sum(dim=-1, keepdim=True) + 1e-6)
            comb = comb / (comb.sum(dim=-2, keepdim=True) + 1e-6)
        return comb * 2


class PowerIteration(torch.nn.Module):
    """A learned matrix applied ``steps`` times to a normalised vector: the step reads a parameter."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.a = torch.nn.Parameter(torch.randn(5, 5) / 3)
        self.steps = steps

    def forward(self, v: torch.Tensor) -> torch.Tensor:  # v: (b, 5)
        for _ in range(self.steps):
            v = v @ self.a
            v = v / v.norm(dim=-1, keepdim=True)
        return v


def _trace(model: torch.nn.Module, *x: torch.Tensor) -> ncd.TracedDiagram:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ncd.trace(model, *x)


def _scans(d: ncd.Diagram) -> list[ncd.Box]:
    return [b for b in d.boxes() if b.prim.op == "scan"]


def test_the_sinkhorn_loop_is_one_repetition_whatever_its_count() -> None:
    counts = []
    for iters in (4, 20):
        model = Sinkhorn(iters)
        d = _trace(model, torch.randn(2, 3, 4, 4))
        (scan,) = _scans(d)
        assert scan.prim.length == iters - 1 and not scan.prim.x_pos and not scan.prim.y_pos  # states only
        counts.append(len(list(d.boxes())))
        x = torch.randn(2, 3, 4, 4)
        torch.testing.assert_close(d.to_torch()(x), model(x))
        source = to_source(d)
        assert f"in range({iters - 1}):" in source  # lowered as a loop, the step written once
        assert source.count(".sum(") + source.count("torch.sum(") + source.count("einsum(") <= 4
    assert counts[0] == counts[1]


def test_a_repetition_costs_what_flop_counter_counts() -> None:
    from ncd.torch.measure import measure

    torch.manual_seed(0)
    model = PowerIteration(6)
    v = torch.randn(3, 5)
    d = _trace(model, v)
    (scan,) = _scans(d)
    assert scan.prim.length == 6
    fresh = torch.randn(3, 5)
    torch.testing.assert_close(d.to_torch()(fresh), model(fresh))
    block = d.as_block()
    report, measured = ncd.cost(block), measure(block, inputs=(v,))
    assert report.forward_matmul == measured.forward_flops == 6 * 2 * 3 * 5 * 5
    assert report.activation_bytes == measured.activation_bytes


class Unsqueezes(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(4):
            x = x.unsqueeze(0)
        return x * 2


class Twice(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(2):
            x = torch.tanh(x) * 0.5
        return x


@pytest.mark.parametrize("model", [Unsqueezes(), Twice()], ids=["views-alone", "two-steps"])
def test_views_alone_and_two_steps_stay_as_recorded(model: torch.nn.Module) -> None:
    x = torch.randn(2, 3)
    d = _trace(model, x)
    assert not _scans(d)
    torch.testing.assert_close(d.to_torch()(x), model(x))
