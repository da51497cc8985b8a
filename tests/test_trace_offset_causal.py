"""Hand-written attention masked with a constant causal table (``scores.masked_fill(~ones(t, s).tril(s - t), -inf)``):
drawn as the causal mask it is — its diagonal ending at the last query and key when the keys include cached ones —
only when the table's every entry is that mask's, and the lowered module computes what the model does."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ncd
from ncd.prims.attention import CausalMaskOp
from ncd.prims.selection import WhereOp


class CachedAttention(nn.Module):
    """One head of attention over ``past`` cached keys/values and the new ones, masked by ``table(t, s)``."""

    def __init__(self, table: str = "causal", fill: float = float("-inf"), then: str = "softmax") -> None:
        super().__init__()
        self.qkv = nn.Linear(8, 24)
        self.table, self.fill, self.then = table, fill, then

    def forward(self, x: torch.Tensor, *past: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).split(8, -1)
        if past:
            k, v = torch.cat([past[0], k], 1), torch.cat([past[1], v], 1)
        t, s = q.shape[1], k.shape[1]
        ones = torch.ones(t, s, dtype=torch.bool)
        keep = {"causal": ones.tril(s - t), "one-short": ones.tril(s - t - 1), "top-left": ones.tril()}[self.table]
        scores = (q @ k.transpose(-1, -2)) * 8 ** -0.5
        masked = scores.masked_fill(~keep, self.fill)
        return (masked.softmax(-1) if self.then == "softmax" else masked.exp()) @ v


def _inputs(t: int, past: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(t * 10 + past)
    return torch.randn(2, t, 8, generator=g), torch.randn(2, past, 8, generator=g), torch.randn(2, past, 8, generator=g)


def _traced(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> ncd.TracedDiagram:
    d = ncd.trace(model.eval(), *inputs)
    with torch.no_grad():
        torch.testing.assert_close(d.to_torch()(*inputs), model(*inputs), rtol=1e-6, atol=1e-6)
    return d


def _masks(d: ncd.TracedDiagram) -> list[CausalMaskOp]:
    return [b.prim for b in d.boxes() if isinstance(b.prim, CausalMaskOp)]


@pytest.mark.parametrize("past", [3, 1])
def test_offset_causal_table_is_a_lower_right_causal_mask(past: int) -> None:
    torch.manual_seed(0)
    d = _traced(CachedAttention(), _inputs(2, past))
    (mask,) = _masks(d)
    assert mask.lower_right and mask.window is None
    assert not any(isinstance(b.prim, WhereOp) for b in d.boxes())
    assert "triu(" in d.to_source() and d.opaque_count == 0


def test_square_causal_table_is_the_causal_mask() -> None:
    torch.manual_seed(0)
    d = _traced(CachedAttention("top-left"), _inputs(4, 1)[:1])
    (mask,) = _masks(d)
    assert not mask.lower_right


@pytest.mark.parametrize("table, fill, then", [("one-short", float("-inf"), "softmax"),
                                               ("top-left", float("-inf"), "softmax"), ("causal", -1e9, "softmax"),
                                               ("causal", float("-inf"), "exp")])
def test_other_tables_and_fills_stay_a_selection(table: str, fill: float, then: str) -> None:
    """A table one diagonal off, the top-left table on more keys than queries, a finite fill, or masked scores read
    by another function than the softmax (a chunked linear attention's decays): not the mask."""
    torch.manual_seed(0)
    d = _traced(CachedAttention(table, fill, then), _inputs(2, 3))
    assert not _masks(d)
    assert any(isinstance(b.prim, WhereOp) for b in d.boxes())


def test_lower_right_mask_is_drawn_and_typeset() -> None:
    """The flag is seen: "causal↘" in the SVG, its arrow a LaTeX symbol in TikZ (not the "?" of an unknown one)."""
    from ncd.render import to_svg, to_tikz

    d = ncd.Identity.of("y x h") >> ncd.CausalMask("y", "x", lower_right=True) >> ncd.Softmax("x")
    assert "↘" in to_svg(d, embed_fonts=False)
    tikz = to_tikz(d)
    assert "\\searrow" in tikz and "{?}" not in tikz
