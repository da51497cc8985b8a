"""A wire the converter makes without reading it off an input must not take, by chance, the name another role of the
same size holds: symbolize follows names, so a token axis named like a feature width of the same traced size makes the
width follow the tokens (a parameter fixed at ``t``, lowering at another length refused) and the drawing wrong.

Here a learned query is expanded over the batch and the tokens (``expand(*x.shape[:-2], -1, -1)``, as a block
attention residual does) and attends over a stack of states per token; a linear map has a width equal to the traced
token count.  The expansion's new wires are the wires the query is broadcast against (the keys' ``b t``), not the
generic name every wire of size 8 shares.  Likewise a constant scattered into at live positions (a top-k selection
mask, ``new_ones((b, t, keys)).scatter(-1, top, False)``): the wire the positions point along has a name of its own,
not the name of a linear map's output of the same traced width (which then followed the tokens: drawn ``n:t``)."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

import ncd
from ncd.prims.linear import LinearOp


class BlockQuery(torch.nn.Module):
    def __init__(self, m: int = 32, n: int = 8) -> None:
        super().__init__()
        self.query = torch.nn.Parameter(torch.randn(m))
        self.proj = torch.nn.Linear(m, n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stacked = torch.stack([x, 2 * x, torch.tanh(x)], dim=-2)
        q = self.query.view(-1, x.shape[-1]).expand(*stacked.shape[:-2], -1, -1)
        out = F.scaled_dot_product_attention(q, stacked, stacked).squeeze(-2)
        result: torch.Tensor = self.proj(out).softmax(-1)
        return result


def _traced() -> tuple[torch.nn.Module, ncd.TracedDiagram]:
    torch.manual_seed(0)
    model = BlockQuery().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model, ncd.trace(model, torch.randn(2, 8, 32))


def test_an_expanded_query_reads_the_tokens_it_is_broadcast_against() -> None:
    _, d = _traced()
    (out,) = d.cod
    names = [a.name for a in out.axes]
    assert names[:2] == ["b", "t"] and names[2] != "t"  # before: 'b p p' — the tokens named as the width 8
    assert str(out.axes[2].size) == "8"  # the linear map's width stays a number, not t
    assert not d.fixed


@pytest.mark.parametrize("sizes", [{"t": 5}, {"b": 3}, {"b": 1, "t": 11}])
def test_it_lowers_at_other_sizes_equal_to_the_model(sizes: dict[str, int]) -> None:
    model, d = _traced()
    module = d.to_torch(**sizes)  # before: refused at another t (the width 8 had followed t)
    x = torch.randn(sizes.get("b", 2), sizes.get("t", 8), 32)
    with torch.no_grad():
        torch.testing.assert_close(module(x), model(x), atol=1e-5, rtol=1e-5)


class TopkMask(torch.nn.Module):
    def __init__(self, m: int = 32, n: int = 8) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(m, n)
        self.back = torch.nn.Linear(n, m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(x)
        scores = h @ h.transpose(-1, -2)
        top = scores.topk(min(4, scores.shape[-1]), dim=-1).indices
        mask = top.new_ones((x.shape[0], x.shape[1], scores.shape[-1]), dtype=torch.bool).scatter(-1, top, False)
        result: torch.Tensor = self.back(scores.masked_fill(mask, float("-inf")).softmax(-1) @ h)
        return result


def test_a_constant_scattered_at_live_positions_leaves_a_width_of_its_size_alone() -> None:
    torch.manual_seed(0)
    model = TopkMask().eval()
    x = torch.randn(2, 8, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, x)
    widths = [axis.size for box in d.boxes() if isinstance(box.prim, LinearOp) for seg in box.cod for axis in seg.axes]
    assert widths and not any(w.free_symbols for w in widths), widths  # before: the projection drawn m:32 -> n:t
    with torch.no_grad():
        torch.testing.assert_close(d.to_torch()(x), model(x), atol=1e-5, rtol=1e-5)
