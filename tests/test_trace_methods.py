"""Module methods other modules call (``layer.encode(x)``, not ``layer(x)``) are blocks of the diagram, as forward calls
are (:mod:`ncd.trace.methods`): titled ``path: Class.method``, equal ones of a module list folded, and the lowered
module still computes the model's values (checked against the model on the traced and on fresh inputs)."""

from __future__ import annotations

import torch
from torch import nn

import ncd
from ncd.ir.diagram import Block, Repeat


class _Quantizer(nn.Module):
    """A codebook: ``encode`` picks the nearest code, ``decode`` looks it up; ``nearest`` is its own helper."""

    def __init__(self, m: int = 8, n: int = 16) -> None:
        super().__init__()
        self.codes = nn.Parameter(torch.randn(n, m))

    def nearest(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.codes.t() - 0.5 * self.codes.pow(2).sum(-1)).argmax(-1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.nearest(x)  # (a method on itself: no block of its own)

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        return nn.functional.embedding(ids, self.codes)  # (one box: no fence, as for a forward of one)


class _Residual(nn.Module):
    """Encodec's residual quantizer, written small: each quantizer called through its methods, never its forward."""

    def __init__(self, m: int = 8, k: int = 3) -> None:
        super().__init__()
        self.inp = nn.Linear(m, m)
        self.layers = nn.ModuleList([_Quantizer(m) for _ in range(k)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual, out = self.inp(x), torch.zeros_like(x)
        for layer in self.layers:
            q = layer.decode(layer.encode(residual))
            residual = residual - q
            out = out + q
        return out + residual.tanh()


class _Step(nn.Module):
    def __init__(self, m: int = 8) -> None:
        super().__init__()
        self.lin = nn.Linear(m, m)

    def step(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.tanh(self.lin(x))


class _Chain(nn.Module):
    """Layers called through a method, each feeding the next."""

    def __init__(self, m: int = 8, k: int = 4) -> None:
        super().__init__()
        self.layers = nn.ModuleList([_Step(m) for _ in range(k)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer.step(x)
        return x


def _titles(d: ncd.TracedDiagram) -> list[str]:
    return [n.name for n in d.walk() if isinstance(n, Block)]


def _same(model: nn.Module, d: ncd.TracedDiagram, *inputs: torch.Tensor) -> None:
    lowered = d.to_torch()
    with torch.no_grad():
        torch.testing.assert_close(lowered(*inputs), model(*inputs))


def test_methods_called_on_quantizers_are_blocks_and_lower_to_the_model() -> None:
    torch.manual_seed(0)
    model, x = _Residual().eval(), torch.randn(2, 5, 8)
    encode, decode = _Quantizer.encode, _Quantizer.decode
    d = ncd.trace(model, x)
    titles = _titles(d)
    assert [t for t in titles if t.startswith("layers.")] == [f"layers.{k}: _Quantizer.encode" for k in range(3)], titles
    assert not any(".nearest" in t for t in titles), titles  # (called on itself: inside encode's block)
    assert _Quantizer.encode is encode and _Quantizer.decode is decode  # (put back after the trace)
    _same(model, d, x)
    _same(model, d, torch.randn(2, 5, 8))
    assert ncd.trace(model, x) == d  # (the same diagram every time)


def test_a_chain_of_method_calls_folds_into_a_repetition() -> None:
    torch.manual_seed(0)
    model, x = _Chain().eval(), torch.randn(2, 5, 8)
    d = ncd.trace(model, x)
    repeats = [n for n in d.walk() if isinstance(n, Repeat)]
    assert [r.name for r in repeats] == ["layers.i: _Step.step"], [r.name for r in repeats]
    _same(model, d, x)
    _same(model, d, torch.randn(2, 5, 8))
