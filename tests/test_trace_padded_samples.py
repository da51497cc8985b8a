"""A sample whose keys are all padded, through torch's attention modules (``ncd.trace.fastpath.padded_samples``).

torch gives two answers there: ``nn.MultiheadAttention`` called with ``need_weights=False`` (and
``nn.TransformerEncoderLayer``) in eval mode takes a fused fast path when no gradient is recorded, which gives NaN on
that sample, and ``scaled_dot_product_attention`` otherwise, which gives 0.  The trace records the second (the
lowered module gives 0), so the trace warns where the model may take the first; with ``need_weights=True`` both of
torch's paths give NaN, as the lowered module does, and nothing is said.  Each case is checked against the model run
both ways.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import ncd

WARNED = "gives NaN for a sample whose keys are all padded"


class SelfAttention(nn.Module):
    def __init__(self, need_weights: bool) -> None:
        super().__init__()
        self.att = nn.MultiheadAttention(16, 2, batch_first=True)
        self.need_weights = need_weights

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.att(x, x, x, key_padding_mask=mask, need_weights=self.need_weights)[0]
        return out


def _trace(model: nn.Module, x: torch.Tensor, mask: torch.Tensor, **kwargs: torch.Tensor) -> tuple[ncd.TracedDiagram, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d = ncd.trace(model, x, mask, **kwargs)
    return d, [str(w.message) for w in caught]


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn(2, 5, 16)
    traced = torch.zeros(2, 5, dtype=torch.bool)
    traced[1, 3:] = True
    empty = torch.zeros(2, 5, dtype=torch.bool)
    empty[1] = True  # sample 1: every key padded
    return x, traced, empty


def _both_ways(model: nn.Module, *args: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        fast = model(*args)
    return fast, model(*args).detach()


@pytest.mark.parametrize("need_weights", [False, True])
def test_multihead_attention_on_an_all_padded_sample(need_weights: bool) -> None:
    x, traced, empty = _inputs()
    model = SelfAttention(need_weights).eval()
    d, messages = _trace(model, x, traced)
    assert any(WARNED in m and "att (nn.MultiheadAttention" in m for m in messages) == (not need_weights)
    lowered = d.to_torch().eval()
    fast, slow = _both_ways(model, x, empty)
    got_fast, got_slow = _both_ways(lowered, x, empty)
    torch.testing.assert_close(got_slow, slow, equal_nan=True)  # the recorded path, all of it
    torch.testing.assert_close(got_fast[0], fast[0])  # the other sample: the same values either way
    assert bool(fast[1].isnan().all())  # torch's fast path (need_weights=True: its other path too) gives NaN
    assert bool(got_fast[1].isnan().all()) == need_weights  # the lowered module: 0 without weights, as warned


def test_multihead_attention_in_training_is_not_warned() -> None:
    x, traced, _ = _inputs()
    _, messages = _trace(SelfAttention(False).train(), x, traced)
    assert not any(WARNED in m for m in messages)  # no fast path in training mode


@pytest.mark.parametrize("nested", [False, True])
def test_transformer_encoder_on_an_all_padded_sample(nested: bool) -> None:
    x, traced, empty = _inputs()
    layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
    model = nn.TransformerEncoder(layer, 2, enable_nested_tensor=nested).eval()
    d, messages = _trace(model, x, None, src_key_padding_mask=traced)  # type: ignore[arg-type]
    warned = [m for m in messages if WARNED in m]
    lowered = d.to_torch().eval()
    with torch.no_grad():
        fast, got = model(x, src_key_padding_mask=empty), lowered(x, empty)
    assert not bool(got[1].isnan().any())
    if nested:  # the nested-tensor path outputs 0 on padded rows: the diagram records that, nothing to warn of here
        assert not warned
        torch.testing.assert_close(got, fast)
    else:
        assert len(warned) == 1 and "layers.0 (nn.TransformerEncoderLayer)" in warned[0]
        assert bool(fast[1].isnan().all())
        torch.testing.assert_close(got[0], fast[0], rtol=1e-4, atol=1e-5)


class Masked(nn.Module):
    """Self-attention under a constant boolean mask (True: masked); ``empty``: query 2 is left no key."""

    def __init__(self, empty: bool) -> None:
        super().__init__()
        self.att = nn.MultiheadAttention(16, 2, batch_first=True)
        mask = torch.ones(5, 5, dtype=torch.bool).triu(1)  # causal: every query keeps a key
        if empty:
            mask[2] = True
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.att(x, x, x, attn_mask=self.mask, need_weights=False)[0]
        return out


@pytest.mark.parametrize("empty", [True, False])
def test_a_mask_leaving_a_query_no_key_is_warned(empty: bool) -> None:
    # here the traced input itself differs: torch's fast path gives NaN on query 2, the diagram (SDPA's) 0
    x = _inputs()[0]
    model = Masked(empty).eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d = ncd.trace(model, x)
    assert any(WARNED in str(w.message) for w in caught) == empty
    lowered = d.to_torch().eval()
    fast, slow = _both_ways(model, x)
    got_fast, got_slow = _both_ways(lowered, x)
    torch.testing.assert_close(got_slow, slow)
    torch.testing.assert_close(got_fast, got_slow)  # the lowered module: one answer
    assert bool(fast[:, 2].isnan().all()) == empty  # the model's fast path: NaN where a query sees no key
