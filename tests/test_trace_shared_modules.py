"""One module registered under several paths (openai-gpt's module-level GELU, held by every layer's MLP as ``act``):
each call is named by the path under the module that calls it (``layers.0.gate`` in layer 0, ``layers.1.gate`` in
layer 1), so the layers are alike and fold into one repeated block, drawn with one definition.  Before, every call
took the last path registered (``layers.1.gate``), and layer 0's block was titled ``layers.1.gate`` inside
``layers.0``: the two layers differed in that title alone, and the page drew both (openai-gpt: 3,878 pt tall, 2,116
after).  An activation module so shared is proven on each call's own values and drawn as one box in each layer.

Each diagram is compared with the model it was traced from, at the traced sizes and at others."""

from __future__ import annotations

import warnings

import torch
from torch import nn

import ncd
from ncd.ir.diagram import Block, Box, Diagram, Repeat
from ncd.render import to_svg


class Gate(nn.Module):
    """``x · σ(x) + x``: a module of several operations, so its call is a block of its own."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x) + x


class GELUTanh(nn.Module):
    """The tanh approximation of GELU, written out (as transformers' ``NewGELUActivation``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x * (1.0 + torch.tanh(0.7978845608028654 * (x + 0.044715 * torch.pow(x, 3.0))))


class Layer(nn.Module):
    def __init__(self, gate: nn.Module, m: int = 16) -> None:
        super().__init__()
        self.fc = nn.Linear(m, m)
        self.gate = gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.gate(self.fc(x))
        return out


class Shared(nn.Module):
    """Three layers holding one ``gate`` module (registered as ``layers.0.gate``, ``layers.1.gate``, …)."""

    def __init__(self, gate: nn.Module, n: int = 3) -> None:
        super().__init__()
        self.layers = nn.ModuleList([Layer(gate) for _ in range(n)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def _traced(model: nn.Module, x: torch.Tensor) -> Diagram:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ncd.trace(model, x)


def _nodes(d: Diagram) -> list[Diagram]:
    found: list[Diagram] = [d]
    for child in d.children():
        found += _nodes(child)
    return found


def _shared_traced(gate: nn.Module) -> tuple[nn.Module, torch.Tensor, Diagram, list[Diagram]]:
    """:class:`Shared` holding ``gate`` (evaluation mode), its input, its diagram and the diagram's nodes."""
    torch.manual_seed(0)
    model = Shared(gate).eval()
    x = torch.randn(2, 5, 16)
    d = _traced(model, x)
    return model, x, d, _nodes(d)


def _agrees(d: Diagram, model: nn.Module, x: torch.Tensor) -> None:
    y = torch.randn(3, 7, 16)
    with torch.no_grad():
        torch.testing.assert_close(d.to_torch()(x), model(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(d.to_torch(b=3, t=7)(y), model(y), atol=1e-5, rtol=1e-5)


def test_a_module_held_by_every_layer_is_named_under_each_layer_and_the_layers_fold() -> None:
    model, x, d, nodes = _shared_traced(Gate())
    repeats = [n for n in nodes if isinstance(n, Repeat)]
    assert len(repeats) == 1 and repeats[0].stop - repeats[0].start == 3  # type: ignore[operator]
    titles = {n.name for n in nodes if isinstance(n, Block)}
    assert "gate: Gate" in titles and not any(t.startswith("layers.") and ".gate" in t for t in titles)
    svg = to_svg(d)
    assert svg.count(">layers.i:\xa0Layer<") == 2  # the repeated box and its one definition
    assert ">layers.0:\xa0Layer<" not in svg and ">layers.2:\xa0Layer<" not in svg
    _agrees(d, model, x)


def test_an_activation_held_by_every_layer_is_proven_and_drawn_as_one_box_in_each() -> None:
    model, x, d, nodes = _shared_traced(GELUTanh())
    gelus = [n for n in nodes if isinstance(n, Box) and "gelu" in repr(n.prim).lower()]
    assert gelus and not any(isinstance(n, Box) and n.prim.op == "tanh" for n in nodes)
    assert sum(isinstance(n, Repeat) for n in nodes) == 1
    _agrees(d, model, x)
