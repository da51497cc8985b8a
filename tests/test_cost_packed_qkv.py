"""Activation bytes of attention on one packed Q, K, V projection: what ``ncd.cost`` counts equals what autograd
saves (``ncd.torch.measure``).

Q, K and V are views of one ``qkv = proj(x)`` (taken by ``chunk``, ``split``, slicing, or a ``view`` then
``permute``), split into heads and fed to SDPA or to attention written out.  With one head, the fold of the
batch and the head dim of size 1 is a view (torch ignores the stride of a dim of size 1): autograd keeps V as a
view of the whole packed storage.  The cost model placed the size-1 head dim in memory: after ``view(...).permute``
it kept ``b`` and the head apart, and a reshape adding the head to a slice (``chunk``, ``split``, ``[...]``) counted a
copy; both counted V's copy alone (1,480 bytes against 2,120 measured).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ncd
from ncd.torch.measure import measure
from tests.trace_checks import traced_without_opaque

WIDTH = 8


class PackedAttention(nn.Module):
    """Self-attention whose Q, K and V are taken out of one packed projection (``how``)."""

    def __init__(self, heads: int, how: str, causal: bool, fused: bool) -> None:
        super().__init__()
        self.qkv = nn.Linear(WIDTH, 3 * WIDTH)
        self.heads, self.how, self.causal, self.fused = heads, how, causal, fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        h, k = self.heads, WIDTH // self.heads
        qkv = self.qkv(x)
        if self.how == "permute":
            q, key, v = qkv.view(b, t, 3, h, k).permute(2, 0, 3, 1, 4)
        else:
            if self.how == "chunk":
                parts = qkv.chunk(3, -1)
            elif self.how == "split":
                parts = qkv.split(WIDTH, -1)
            else:
                parts = (qkv[..., :WIDTH], qkv[..., WIDTH:2 * WIDTH], qkv[..., 2 * WIDTH:])
            q, key, v = (p.view(b, t, h, k).transpose(1, 2) for p in parts)
        if self.fused:
            out = F.scaled_dot_product_attention(q, key, v, is_causal=self.causal)
        else:
            scores = q @ key.transpose(-1, -2) / k ** 0.5
            if self.causal:
                mask = torch.ones(t, t, dtype=torch.bool).triu(1)
                scores = scores.masked_fill(mask, float("-inf"))
            out = scores.softmax(-1) @ v
        return out.transpose(1, 2).reshape(b, t, WIDTH)


@pytest.mark.parametrize("fused", [True, False], ids=["sdpa", "written"])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
@pytest.mark.parametrize("how", ["chunk", "split", "slice", "permute"])
@pytest.mark.parametrize("heads", [1, 2])
def test_packed_qkv_attention_activation_bytes_equal_measure(heads: int, how: str, causal: bool, fused: bool) -> None:
    torch.manual_seed(0)
    model = PackedAttention(heads, how, causal, fused).eval()
    x = torch.randn(2, 5, WIDTH)
    diagram = traced_without_opaque(model, x).as_block()
    report, measured = ncd.cost(diagram), measure(diagram, inputs=(x,))
    assert report.activation_bytes == measured.activation_bytes, measured.saved
    assert report.forward_matmul == measured.forward_flops
    assert report.backward_matmul + report.counter_excess == measured.backward_flops
