"""Operators the corpus still left opaque, now boxes: ``masked_fill`` of integers (Zaya's router drops its skip
expert, ``indices.masked_fill(indices == e, 0)``), a learned linear map of a constant (Zaya's delayed value
projection of a zero state, ``v_proj(x.new_zeros(b, 1, m))``), SDPA with grouped keys but values of every query
head (Nemotron 3.5), constant positions counted from the end (Falcon's ``qkv[..., [-2], :]``), ``where`` of integers,
``&`` of integer flags and a comparison with ``torch.tensor(False)`` (CPM-Ant's masks and buckets).  Each: no opaque
box, and the lowered module equals the model on the traced inputs and on fresh ones."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tests.test_trace_boxes_residue import round_trip


class SkipExpert(nn.Module):
    """A router over ``e + 1`` classes whose last class means "no expert": its picks are set to expert 0 (and their
    weights to 0) before the experts read them."""

    def __init__(self, e: int = 4) -> None:
        super().__init__()
        self.e, self.gate = e, nn.Linear(8, e + 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs = self.gate(x).softmax(-1)
        weights, picks = probs.topk(2, dim=-1)
        skip = picks == self.e
        return weights.masked_fill(skip, 0), picks.masked_fill(skip, 0)


def test_integer_masked_fill_is_a_box() -> None:
    torch.manual_seed(0)
    model = SkipExpert()
    with torch.no_grad():
        model.gate.bias[-1] = 1.5  # the skip class is picked often
    x, fresh = torch.randn(2, 6, 8), torch.randn(2, 6, 8)
    assert bool((model(x)[1] != model.gate(x).softmax(-1).topk(2, dim=-1).indices).any())  # the fill happens
    d = round_trip(model, x, fresh=(fresh,))
    assert d.opaque_count == 0
    assert "where" in [b.prim.op for b in d.boxes()]


class DelayedValue(nn.Module):
    """Zaya's value path: the delayed projection of the previous token, the first token's from a zero state."""

    def __init__(self) -> None:
        super().__init__()
        self.v = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.v(x.new_zeros(x.shape[0], 1, x.shape[2]))  # the bias, as a linear map of zeros
        return torch.cat([first, self.v(x)[:, :-1]], dim=1)


def test_linear_of_a_constant_is_a_box() -> None:
    torch.manual_seed(0)
    model = DelayedValue()
    d = round_trip(model, torch.randn(2, 5, 8), fresh=(torch.randn(2, 5, 8),))
    assert d.opaque_count == 0
    assert [b.prim.op for b in d.boxes()].count("linear") == 2


class GroupedKeys(nn.Module):
    """Grouped keys, values of every query head (Nemotron 3.5's word-timestamp attention): SDPA with ``enable_gqa``
    repeats each operand to the queries' heads on its own."""

    def __init__(self, heads: int = 4, kv_heads: int = 2, d: int = 8) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.d = heads, kv_heads, d
        self.q, self.k, self.v = nn.Linear(16, heads * d), nn.Linear(16, kv_heads * d), nn.Linear(16, heads * d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q(x).view(b, t, self.heads, self.d).transpose(1, 2)
        k = self.k(x).view(b, t, self.kv_heads, self.d).transpose(1, 2)
        v = self.v(x).view(b, t, self.heads, self.d).transpose(1, 2)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        return o.transpose(1, 2).reshape(b, t, self.heads * self.d)


def test_grouped_keys_with_values_of_every_head() -> None:
    torch.manual_seed(0)
    d = round_trip(GroupedKeys(), torch.randn(2, 6, 16), fresh=(torch.randn(2, 6, 16),))
    assert d.opaque_count == 0
    assert "softmax" in [b.prim.op for b in d.boxes()]


class MultiQuery(nn.Module):
    """Falcon's fused multi-query projection split by positions counted from the end: ``qkv[..., [-2], :]``."""

    def __init__(self, heads: int = 4, d: int = 8) -> None:
        super().__init__()
        self.heads, self.d = heads, d
        self.qkv = nn.Linear(16, (heads + 2) * d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        qkv = self.qkv(x).view(b, t, self.heads + 2, self.d)
        q, k, v = qkv[..., :-2, :], qkv[..., [-2], :], qkv[..., [-1], :]
        return (q * k).sum(-1, keepdim=True) * v


def test_constant_positions_counted_from_the_end() -> None:
    torch.manual_seed(0)
    d = round_trip(MultiQuery(), torch.randn(2, 5, 16), fresh=(torch.randn(2, 5, 16),))
    assert d.opaque_count == 0
    assert [b.prim.op for b in d.boxes()].count("gather") == 2


class SegmentMask(nn.Module):
    """CPM-Ant's plumbing in miniature: segments ``where(ids != 0, 2, 0)``, an int32 mask of flags joined with a
    boolean one (``int32 & bool``), buckets chosen between a constant table and a live one (``where`` of integers)
    and the scores masked where the flags ``== torch.tensor(False)``."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.bias = nn.Embedding(10, 8), nn.Embedding(12, 1)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = ids.shape[1]
        segment = torch.where(ids != 0, 2, 0).to(torch.int32)
        context = torch.ones(ids.shape, dtype=torch.int32)
        causal = torch.arange(t) <= torch.arange(t).view(-1, 1)
        mask = (context[:, None, :] & causal.view(1, t, t)) & (segment[:, None, :] == segment[:, :, None])
        table = (torch.arange(t)[None, :] - torch.arange(t)[:, None]).abs().to(torch.int32)
        buckets = torch.where(segment[:, None, :] == segment[:, :, None], table[None], segment[:, :, None] + 8)
        x = self.embed(ids)
        scores = x @ x.transpose(1, 2) + self.bias(buckets)[..., 0]
        scores = torch.masked_fill(scores, mask == torch.tensor(False), -1e4)
        return scores.softmax(-1) @ x, mask


def test_integer_selection_and_flags_are_boxes() -> None:
    torch.manual_seed(0)
    ids, fresh = torch.randint(0, 10, (2, 6)), torch.randint(0, 10, (2, 6))
    ids[0, :2] = fresh[1, 3:] = 0  # both segments on both inputs
    d = round_trip(SegmentMask(), ids, fresh=(fresh,))
    assert d.opaque_count == 0
    assert "index_arithmetic" in [b.prim.op for b in d.boxes()]


def test_a_table_recorded_at_the_traced_length_refuses_other_lengths() -> None:
    """T5's relative-position buckets are computed from the input's length and recorded as a constant: lowered at
    another length the trace refuses by design (naming the length and the view that reads the table), never a size
    error from inside the lowered module; another batch lowers and equals the model."""
    import warnings

    import pytest
    import transformers

    import ncd

    config = transformers.T5Config(vocab_size=50, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=4,
                                   relative_attention_num_buckets=8, relative_attention_max_distance=16)
    torch.manual_seed(0)
    model = transformers.T5EncoderModel(config).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, input_ids=torch.randint(0, 50, (2, 8)))
    with pytest.raises(ncd.TraceError, match=r"at \{'t': 12\} \(traced at \{'t': 8\}\).*view '[^']*n:8 nʹ:8[^']*'"):
        d.to_torch(t=12)
    ids = torch.randint(0, 50, (3, 8))
    with torch.no_grad():
        got = d.to_torch(b=3)(ids)
        torch.testing.assert_close(got[0] if isinstance(got, tuple) else got, model(input_ids=ids).last_hidden_state,
                                   atol=1e-5, rtol=1e-4)
