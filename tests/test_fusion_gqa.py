"""Grouped-query attention (query heads ``(g r)`` reading key/value head ``g``), causal or not, lowers to the SDPA call
the model makes (``enable_gqa=True``): bit for bit the model's in float32, float16 and bfloat16.  A causal one was
left unfused (einsum, scale, mask, softmax, einsum): 0.002 off in bfloat16, 9e-8 in float32."""
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ncd


class Grouped(nn.Module):
    def __init__(self, causal: bool, repeat: bool, heads: int = 6, groups: int = 2, k: int = 8, m: int = 24) -> None:
        super().__init__()
        self.q = nn.Linear(m, heads * k, bias=False)
        self.k = nn.Linear(m, groups * k, bias=False)
        self.v = nn.Linear(m, groups * k, bias=False)
        self.o = nn.Linear(heads * k, m, bias=False)
        self.heads, self.groups, self.width, self.causal, self.repeat = heads, groups, k, causal, repeat

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q(x).view(b, t, self.heads, self.width).transpose(1, 2)
        k = self.k(x).view(b, t, self.groups, self.width).transpose(1, 2)
        v = self.v(x).view(b, t, self.groups, self.width).transpose(1, 2)
        if self.repeat:  # transformers' repeat_kv
            r = self.heads // self.groups
            k = k[:, :, None].expand(b, self.groups, r, t, self.width).reshape(b, self.heads, t, self.width)
            v = v[:, :, None].expand(b, self.groups, r, t, self.width).reshape(b, self.heads, t, self.width)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        else:
            a = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal, enable_gqa=True)
        return self.o(a.transpose(1, 2).reshape(b, t, -1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("repeat", [True, False])
def test_grouped_query_attention_lowers_to_the_model_s_sdpa(dtype: torch.dtype, causal: bool, repeat: bool) -> None:
    torch.manual_seed(0)
    model = Grouped(causal, repeat).to(dtype).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, torch.randn(2, 7, 24).to(dtype))
    source = d.to_source()
    assert "enable_gqa=True" in source and "torch.softmax" not in source
    assert ("is_causal=True" in source) == causal
    lowered = d.to_torch()
    for seed in (1, 2):
        x = torch.randn(2, 7, 24, generator=torch.Generator().manual_seed(seed)).to(dtype)
        with torch.no_grad():
            assert torch.equal(lowered(x), model(x))
    x = torch.randn(2, 7, 24, dtype=torch.float64)  # and in float64, where a wrong grouping of heads shows plainly
    wide = Grouped(causal, repeat).double().eval()
    wide.load_state_dict(model.state_dict())
    lowered64 = d.to_torch().double()
    with torch.no_grad():
        torch.testing.assert_close(lowered64(x), wide(x), rtol=1e-12, atol=1e-12)


class GroupedMasked(Grouped):
    """transformers' path under a padding mask: repeat_kv, then SDPA with a boolean mask (and the causal one)."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        b, t, _ = x.shape
        r = self.heads // self.groups
        q = self.q(x).view(b, t, self.heads, self.width).transpose(1, 2)
        k = self.k(x).view(b, t, self.groups, self.width).transpose(1, 2)
        v = self.v(x).view(b, t, self.groups, self.width).transpose(1, 2)
        k = k[:, :, None].expand(b, self.groups, r, t, self.width).reshape(b, self.heads, t, self.width)
        v = v[:, :, None].expand(b, self.groups, r, t, self.width).reshape(b, self.heads, t, self.width)
        m = mask[:, None, None, :].bool()
        if self.causal:
            m = m & torch.ones(t, t, dtype=torch.bool).tril()
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=m)
        return self.o(a.transpose(1, 2).reshape(b, t, -1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("causal", [True, False])
def test_grouped_query_attention_under_a_padding_mask_lowers_to_one_sdpa(dtype: torch.dtype, causal: bool) -> None:
    """A padding mask read on the scores (through a crossing of wires) is SDPA's boolean mask on the query heads."""
    torch.manual_seed(0)
    model = GroupedMasked(causal, True).to(dtype).eval()
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[0, :3] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, torch.randn(2, 7, 24).to(dtype), mask)
    source = d.to_source()
    assert "enable_gqa=True" in source and "attn_mask=" in source and "softmax" not in source
    lowered = d.to_torch()
    for seed in (1, 2):
        x = torch.randn(2, 7, 24, generator=torch.Generator().manual_seed(seed)).to(dtype)
        fresh = torch.ones(2, 7, dtype=torch.long)
        fresh[seed - 1, : seed + 1] = 0
        with torch.no_grad():
            assert torch.equal(lowered(x, fresh), model(x, fresh))


class Tiled(nn.Module):
    """Key/value heads tiled, not repeated in place (``k.repeat(1, r, 1, 1)``, ``torch.cat([k, k], 1)``): query head
    ``h`` reads key/value head ``h % g``, not ``h // r`` as SDPA's ``enable_gqa`` would."""

    def __init__(self, how: str, masked: bool) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(16, 32), nn.Linear(16, 16), nn.Linear(16, 16)
        self.how, self.masked = how, masked

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q(x).view(b, t, 4, 8).transpose(1, 2)
        k, v = (f(x).view(b, t, 2, 8).transpose(1, 2) for f in (self.k, self.v))
        k, v = (h.repeat(1, 2, 1, 1) if self.how == "repeat" else torch.cat([h, h], 1) for h in (k, v))
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask if self.masked else None, is_causal=not self.masked)
        return a.transpose(1, 2).reshape(b, t, 32)


@pytest.mark.parametrize("how", ["repeat", "cat"])
@pytest.mark.parametrize("masked", [True, False])
def test_key_value_heads_tiled_rather_than_repeated_in_place_keep_the_model_s_grouping(how: str, masked: bool) -> None:
    def inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        x, mask = torch.randn(2, 5, 16, generator=g, dtype=torch.float64), torch.rand(2, 4, 5, 5, generator=g) > 0.3
        return x, mask | torch.eye(5, dtype=torch.bool)

    torch.manual_seed(0)
    model = Tiled(how, masked).double().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, *inputs(0))
    lowered = d.to_torch()
    for seed in (1, 2):
        with torch.no_grad():
            torch.testing.assert_close(lowered(*inputs(seed)), model(*inputs(seed)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("repeat", [True, False])
def test_grouped_query_attention_costs_what_the_lowered_module_measures(causal: bool, repeat: bool) -> None:
    """The fused call's math kernel repeats each key/value head over its query heads before it scales the keys and
    keeps the values: ncd.cost's activation memory and products equal autograd's saved tensors and the flop counter."""
    from ncd.torch.measure import measure

    torch.manual_seed(0)
    x = torch.randn(2, 7, 24)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(Grouped(causal, repeat).eval(), x)
    assert "enable_gqa=True" in d.to_source()
    report, m = ncd.cost(d), measure(d.as_block(), inputs=(x,))
    assert report.forward_matmul == m.forward_flops
    assert report.activation_bytes == m.activation_bytes, m.saved
