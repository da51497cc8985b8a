"""SDPA under a float mask (T5's relative-position bias, a bias with -inf entries, a bias computed from the input)
lowers to the SDPA call the model makes, ``attn_mask=`` the bias: bit for bit the model's in float32, float16 and
bfloat16.  It stayed unfused (einsum, scale, the bias added, a padding mask of its finite entries, softmax, einsum):
2e-7 off in float32, 0.008 in bfloat16 (T5 in bfloat16: 0.03)."""
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ncd


class Biased(nn.Module):
    def __init__(self, kind: str, scale: float | None, heads: int = 4, k: int = 8, m: int = 32, t: int = 8) -> None:
        super().__init__()
        self.q = nn.Linear(m, heads * k, bias=False)
        self.k = nn.Linear(m, heads * k, bias=False)
        self.v = nn.Linear(m, heads * k, bias=False)
        self.rel = nn.Embedding(2 * t, heads)
        self.heads, self.width, self.kind, self.scale = heads, k, kind, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q(x).view(b, t, self.heads, self.width).transpose(1, 2)
        k = self.k(x).view(b, t, self.heads, self.width).transpose(1, 2)
        v = self.v(x).view(b, t, self.heads, self.width).transpose(1, 2)
        bias = self.rel(torch.arange(t)[None, :] - torch.arange(t)[:, None] + t).permute(2, 0, 1)[None]
        if self.kind == "-inf above the diagonal":
            bias = bias.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
        elif self.kind == "from the input":
            bias = bias + x[:, None, :, :1].transpose(-1, -2)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        return a.transpose(1, 2).reshape(b, t, -1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", ["learned", "-inf above the diagonal", "from the input"])
@pytest.mark.parametrize("scale", [None, 1.0])
def test_attention_under_a_float_mask_lowers_to_the_model_s_sdpa(dtype: torch.dtype, kind: str, scale: float | None) -> None:
    torch.manual_seed(0)
    model = Biased(kind, scale).to(dtype).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, torch.randn(2, 8, 32).to(dtype))
    source = d.to_source()
    assert "attn_mask=" in source and "softmax" not in source and "torch.gt(" not in source
    lowered = d.to_torch()
    for seed in (1, 2):
        x = torch.randn(2, 8, 32, generator=torch.Generator().manual_seed(seed)).to(dtype)
        with torch.no_grad():
            assert torch.equal(lowered(x), model(x))
    assert ncd.cost(d).forward_flops > 0  # the costs read the fused step (its bias among its operands)


class Written(nn.Module):
    """Attention the model writes out, a bias added to its scores (LongT5's eager attention): its scores are rounded
    to the model's type before the softmax, which SDPA does not do, so it is not fused."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)
        self.bias = nn.Parameter(torch.randn(6, 6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.q(x) @ self.k(x).transpose(-1, -2) * 8 ** -0.5 + self.bias
        return torch.softmax(scores, -1) @ self.v(x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_attention_written_out_with_a_bias_stays_the_model_s_operations(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    model = Written().to(dtype).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, torch.randn(2, 6, 8).to(dtype))
    assert "scaled_dot_product_attention" not in d.to_source()
    x = torch.randn(2, 6, 8).to(dtype)
    with torch.no_grad():
        assert torch.equal(d.to_torch()(x), model(x))


class ManualBiased(nn.Module):
    """The model's own attention, ``softmax(q·kᵀ/√k + bias)``: no SDPA call, so no padding mask of the bias's finite
    entries — a row the bias makes all -inf is NaN here, where SDPA's (safe) softmax gives 0."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 16)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = (f(x).view(b, t, 2, 8).transpose(1, 2) for f in (self.q, self.k, self.v))
        return ((q @ k.transpose(-1, -2) / 8 ** 0.5 + bias).softmax(-1) @ v).transpose(1, 2).reshape(b, t, 16)


def _biased_inputs(seed: int, masked_row: bool) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x, bias = torch.randn(2, 5, 16, generator=g), torch.randn(2, 1, 5, 5, generator=g)
    bias = bias.masked_fill(bias > 0.5, float("-inf"))
    if masked_row:
        bias[:, :, 1] = float("-inf")
    return x, bias


def test_a_models_own_softmax_of_scores_plus_a_bias_is_not_fused_into_sdpa_whose_masked_rows_give_0() -> None:
    """Fused (e3ed087..ca36127) it gave 0 where the model gives NaN: a fresh bias from the input with a row all -inf."""
    torch.manual_seed(0)
    model = ManualBiased().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, *_biased_inputs(0, False))
    lowered = d.to_torch()
    for seed, masked_row in ((0, False), (1, True), (2, True)):
        args = _biased_inputs(seed, masked_row)
        with torch.no_grad():
            got, want = lowered(*args), model(*args)
        assert want.isnan().any() == masked_row
        torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)


def test_longformer_s_integer_steps_woven_near_its_attention_lower() -> None:
    """The fusion read an integer step lowered with its woven axes moved in front as if it were a float one: the
    type it built had no range, and longformer's lowering failed (ParseError), since e3ed087."""
    from transformers import LongformerConfig, LongformerModel

    config = LongformerConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                              attention_window=4, vocab_size=99, max_position_embeddings=64)
    torch.manual_seed(0)
    model = LongformerModel(config).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, torch.randint(0, 99, (2, 8)))
        lowered = d.to_torch()
        ids = torch.randint(0, 99, (2, 8), generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            torch.testing.assert_close(lowered(ids)[0], model(ids).last_hidden_state, rtol=0, atol=1e-5)
