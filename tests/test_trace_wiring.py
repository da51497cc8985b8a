"""The wires passing beside the steps of a trace (``ncd.trace.wiring.wire``): the same values beside several steps are
one identity (built once, symbolized once, drawn from one object), and the diagram still computes the model."""

from __future__ import annotations

import torch
from torch import nn

import ncd
from ncd.ir.diagram import Identity


class _Outputs(nn.Module):
    """Several outputs, each made while the ones before it pass beside."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h = self.fc(x)
        return h.relu(), h.sigmoid() * 2, h.tanh() + 1, (h * h).mean(-1)


def test_values_passing_beside_steps_are_one_identity_and_the_diagram_computes_the_model() -> None:
    torch.manual_seed(0)
    model = _Outputs().eval()
    x = torch.randn(2, 5, 8)
    d = ncd.trace(model, x)
    beside = [n for n in d.walk() if isinstance(n, Identity)]
    assert len({id(n) for n in beside}) < len(beside)  # the outputs made first pass beside later steps as one identity
    lowered = d.to_torch()
    for inputs in (x, torch.randn(2, 5, 8)):  # the traced input and one of other values
        for got, want in zip(lowered(inputs), model(inputs)):
            torch.testing.assert_close(got, want)



class _Residual(nn.Module):
    """Pre-norm residual layers ``x + f(norm(x))`` after an input map plus a learned position table."""

    def __init__(self) -> None:
        super().__init__()
        self.pos, self.emb = nn.Parameter(torch.randn(5, 8)), nn.Linear(4, 8)
        self.norms = nn.ModuleList(nn.LayerNorm(8) for _ in range(4))
        self.maps = nn.ModuleList(nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8)) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h: torch.Tensor = self.emb(x) + self.pos
        for norm, f in zip(self.norms, self.maps):
            h = h + f(norm(h))
        return h


class _Layer(nn.Module):
    """A pre-norm residual layer whose attention-like part reads one value three times and returns two values."""

    def __init__(self) -> None:
        super().__init__()
        self.norm, self.q, self.k, self.v = nn.LayerNorm(8), nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)
        self.mlp = nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8))

    def forward(self, x: torch.Tensor, past: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.norm(x)
        q, k, v = self.q(h), self.k(h), self.v(h)
        k = torch.cat([past, k], 1)
        a = torch.softmax(q @ k.transpose(1, 2), -1) @ torch.cat([past, v], 1)
        x = x + a
        return x + self.mlp(x), k


class _Cached(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_Layer() for _ in range(2))

    def forward(self, x: torch.Tensor, p0: torch.Tensor, p1: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x, k0 = self.layers[0](x, p0)
        x, k1 = self.layers[1](x, p1)
        return x, k0, k1


def _computes(model: nn.Module, d: ncd.Diagram, args: tuple[torch.Tensor, ...]) -> None:
    lowered = d.to_torch()
    fresh = tuple(torch.randn_like(a) for a in args)
    with torch.no_grad():
        for inputs in (args, fresh):  # the traced input and one of other values
            got, want = lowered(*inputs), model(*inputs)
            for a, b in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
                torch.testing.assert_close(a, b)


def test_residual_layers_need_no_crossing_and_the_diagram_computes_the_model() -> None:
    """``x + f(norm(x))``: ``norm`` takes the copy of ``x`` on the right, so the sum reads ``x`` and ``f``'s result in
    place; the position table lies beside the input map's result it is added to (the old order crossed wires before
    each sum and moved the table across)."""
    from ncd.prims.structure import SwapOp

    torch.manual_seed(0)
    model = _Residual().eval()
    args = (torch.randn(2, 5, 4),)
    d = ncd.trace(model, *args)
    assert [b for b in d.boxes() if isinstance(b.prim, SwapOp)] == []
    _computes(model, d, args)


def test_one_value_read_by_the_next_steps_is_one_copy_and_the_diagram_computes_the_model() -> None:
    """The q, k, v maps of one normalised value: one copy into three (not a copy into two, then another); a layer's
    outputs leave it in the order its steps make them; the lowered module computes the model."""
    from ncd.prims.structure import CopyOp

    torch.manual_seed(0)
    model = _Cached().eval()
    args = (torch.randn(2, 5, 8), torch.randn(2, 3, 8), torch.randn(2, 3, 8))
    d = ncd.trace(model, *args)
    assert 3 in [b.prim.n for b in d.boxes() if isinstance(b.prim, CopyOp)]
    _computes(model, d, args)


class _ReadBackwards(nn.Module):
    """Two values read by a sum, a product or a concatenation in the other order than they are made (``b * a``)."""

    def __init__(self, combine: str) -> None:
        super().__init__()
        self.a, self.b, self.combine = nn.Linear(8, 8), nn.Linear(8, 8), combine

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.a(x).sigmoid()
        b = self.b(x).tanh()
        return b * a if self.combine == "*" else b + a if self.combine == "+" else torch.cat([b, a], -1)


def test_a_sum_or_product_reads_its_two_inputs_as_they_lie_and_a_concatenation_crosses_them() -> None:
    """``b * a`` and ``b + a`` of values lying ``a, b``: the same numbers read the other way round (IEEE addition and
    multiplication of two numbers commute), so no crossing; ``cat([b, a])`` still crosses them; every lowered module
    computes the model exactly (zamba2 24 -> 20 crossings, granitemoehybrid 13 -> 11, recurrent_gemma 3 -> 2)."""
    from ncd.prims.structure import SwapOp

    torch.manual_seed(0)
    args = (torch.randn(2, 5, 8),)
    for combine, crossings in (("*", 0), ("+", 0), ("cat", 1)):
        model = _ReadBackwards(combine).eval()
        d = ncd.trace(model, *args)
        assert len([b for b in d.boxes() if isinstance(b.prim, SwapOp)]) == crossings, combine
        lowered = d.to_torch()
        with torch.no_grad():
            for x in (args[0], torch.randn(2, 5, 8)):
                assert torch.equal(lowered(x), model(x))  # bit for bit
