"""DeepSeek's interleaved rotary embedding (transformers' ``apply_rotary_pos_emb_interleave`` of deepseek_v3,
glm4_moe_lite, dots3 …): ``cat([x₁·cos − x₂·sin, x₂·cos + x₁·sin])`` on the even and odd entries ``x₁ = x[..., 0::2]``,
``x₂ = x[..., 1::2]`` with half tables is ``ρ`` of ``cat([x₁, x₂])``, drawn as the two slices, their concatenation and
one ``ρ`` box (nine operations before: four products, a sum, a difference, the slices and the concatenation); with
the positions before the heads (``b t h k``, the tables broadcast over the heads), as LLaMA's form too, ``ρ`` between
two crossings of the heads and the positions.  Tables
that are not RoFormer's (a sine 1 % off) stay as recorded; tables one entry wide (one angle for every pair) are those
of base 1.

Each diagram is compared with the model it was traced from, at the traced length and at another."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import ncd
from ncd.ir.diagram import Diagram
from ncd.prims.rotary import RotaryOp
from ncd.trace.rotary import rotary_table


class Interleaved(nn.Module):
    """A projection into heads ``b h t k``, rotated as DeepSeek's ``apply_rotary_pos_emb_interleave`` does, its tables
    computed from the length (``half``: the tables' width, ``k/2`` for RoFormer's; ``off`` scales the sine's)."""

    def __init__(self, m: int = 16, h: int = 2, k: int = 8, half: int = 4, off: float = 1.0,
                 heads_first: bool = True) -> None:
        super().__init__()
        self.h, self.k, self.half, self.off, self.heads_first = h, k, half, off, heads_first
        self.proj = nn.Linear(m, h * k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.proj(x).view(b, t, self.h, self.k)
        cos, sin = rotary_table(t, 2 * self.half, 10000.0)
        cos, sin = cos[..., :self.half], sin[..., :self.half] * self.off
        if self.heads_first:  # b h t k, the tables (1, 1, t, k/2)
            q = q.transpose(1, 2)
            cos, sin = cos[None, None], sin[None, None]
        else:  # b t h k (the sparse attention indexers), the tables (1, t, 1, k/2)
            cos, sin = cos[None, :, None], sin[None, :, None]
        q1, q2 = q[..., 0::2], q[..., 1::2]
        out: torch.Tensor = torch.cat([q1 * cos - q2 * sin, q2 * cos + q1 * sin], dim=-1)
        return out


class Halves(nn.Module):
    """LLaMA's ``q·cos + rotate_half(q)·sin`` on ``b t h k`` (gemma4's ``unsqueeze_dim=2``)."""

    def __init__(self, m: int = 16, h: int = 2, k: int = 8) -> None:
        super().__init__()
        self.h, self.k = h, k
        self.proj = nn.Linear(m, h * k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.proj(x).view(b, t, self.h, self.k)
        cos, sin = rotary_table(t, self.k, 10000.0)
        cos, sin = cos[None, :, None], sin[None, :, None]
        half = torch.cat((-q[..., self.k // 2:], q[..., :self.k // 2]), dim=-1)
        out: torch.Tensor = q * cos + half * sin
        return out


def _traced(model: nn.Module, x: torch.Tensor) -> Diagram:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ncd.trace(model, x)


@pytest.mark.parametrize(("half", "base"), [(4, 10000.0), (1, 1.0)])
def test_an_interleaved_rotation_is_one_rotary_box_on_the_even_and_odd_entries(half: int, base: float) -> None:
    # half = 1: tables one entry wide turn every pair by the one angle of position p (dots3's toy: its rotary tables
    # are narrower than its heads), RoFormer's tables of base 1
    torch.manual_seed(0)
    model = Interleaved(half=half).eval()
    x = torch.randn(2, 6, 16)
    d = _traced(model, x)
    ops = [b.prim.op for b in d.boxes()]
    assert ops.count("rotary") == 1 and "multiply" not in ops and ops.count("slice") == 2
    (rotary,) = [b.prim for b in d.boxes() if isinstance(b.prim, RotaryOp)]
    assert rotary.base == base and rotary.scale == 1.0
    y = torch.randn(3, 11, 16)
    with torch.no_grad():
        torch.testing.assert_close(d.to_torch()(x), model(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(d.to_torch(b=3, t=11)(y), model(y), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("model", [Interleaved(heads_first=False), Halves()], ids=["interleaved", "halves"])
def test_a_rotation_of_positions_before_heads_is_one_rotary_box_between_crossings(model: nn.Module) -> None:
    # the tables (1, t, 1, k) broadcast over the heads between the positions and the features: the heads crossed
    # before the positions, rho, crossed back
    torch.manual_seed(0)
    model = model.eval()
    x = torch.randn(2, 6, 16)
    d = _traced(model, x)
    ops = [b.prim.op for b in d.boxes()]
    assert ops.count("rotary") == 1 and "multiply" not in ops
    y = torch.randn(3, 11, 16)
    with torch.no_grad():
        torch.testing.assert_close(d.to_torch()(x), model(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(d.to_torch(b=3, t=11)(y), model(y), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("half", [4, 1])
def test_tables_not_roformers_stay_as_recorded(half: int) -> None:
    # a sine 1 % off (tables as wide as the pairs, or one entry wide)
    torch.manual_seed(0)
    model = Interleaved(half=half, off=1.01).eval()
    x = torch.randn(2, 6, 16)
    d = _traced(model, x)
    assert not any(isinstance(b.prim, RotaryOp) for b in d.boxes())
    with torch.no_grad():
        torch.testing.assert_close(d.to_torch()(x), model(x), atol=1e-5, rtol=1e-5)
