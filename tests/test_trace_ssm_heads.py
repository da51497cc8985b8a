"""Heads the config does not count (Mamba-2's ``num_heads``, of their own count beside the attention heads): a
projection split into those heads and their features names the heads as the per-head parameters read beside them
(``dt_bias``, ``D``), one wire name throughout, with no renaming view between them; two layers of different kinds
holding the same mixer then draw it with one definition (zamba2, bamba, granitemoehybrid drew two, 13,000 points
each), and the diagram still equals the model."""

from __future__ import annotations

import types
import warnings

import torch
from torch import nn

import ncd
from ncd.ir.diagram import Block
from ncd.render import to_svg


class Mixer(nn.Module):
    """``x`` projected, split into 8 heads of 8 features, each head scaled by its own ``D``, merged and projected."""

    def __init__(self, m: int = 32, heads: int = 8, k: int = 8) -> None:
        super().__init__()
        self.heads, self.k = heads, k
        self.dt_bias = nn.Parameter(torch.randn(heads))
        self.D = nn.Parameter(torch.randn(heads))
        self.inp = nn.Linear(m, heads * k)
        self.out = nn.Linear(heads * k, m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        h = self.inp(x).view(b, t, self.heads, self.k)
        dt = torch.nn.functional.softplus(x[..., :self.heads] + self.dt_bias)  # (b, t, heads): per head
        h = h * dt[..., None] + h * self.D[:, None]
        return x + self.out(h.reshape(b, t, self.heads * self.k))


class Plain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mixer = Mixer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.mixer(x)
        return out


class Normed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(32)
        self.mixer = Mixer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.mixer(self.norm(x))
        return out


class Hybrid(nn.Module):
    """Two layers of different kinds around the same mixer; the config counts 2 attention heads of 8 features."""

    def __init__(self) -> None:
        super().__init__()
        self.config = types.SimpleNamespace(hidden_size=32, num_attention_heads=2, head_dim=8)
        self.layers = nn.ModuleList([Plain(), Normed()])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def test_heads_the_config_does_not_count_are_named_as_their_parameters_and_the_mixer_is_defined_once() -> None:
    torch.manual_seed(0)
    model = Hybrid().eval()
    x = torch.randn(2, 5, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, x)
    mixers: list[Block] = []

    def walk(node: object) -> None:
        if isinstance(node, Block) and node.name.startswith("mixer"):
            mixers.append(node)
        for child in node.children():  # type: ignore[attr-defined]
            walk(child)

    walk(d.diagram if hasattr(d, "diagram") else d)
    assert len(mixers) == 2 and mixers[0] == mixers[1]
    # no view that only renames the heads: every view changes the sizes it reads
    views = [b for b in mixers[0].boxes() if b.prim.op == "view"]
    assert all(b.prim.source.sizes != b.prim.target.sizes for b in views)
    assert to_svg(d).count(">mixer:\xa0Mixer<") == 3  # two component boxes, one definition
    y = torch.randn(3, 7, 32)
    with torch.no_grad():
        torch.testing.assert_close(d.to_torch(b=3, t=7)(y), model(y), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(d.to_torch()(x), model(x), atol=1e-5, rtol=1e-5)
