"""Attention as models feed it: key/value head expansion before an explicit mask read as grouped-query attention,
masks passed as inputs captured by the fast recorder and read as padding masks (checked against the original model)."""

from __future__ import annotations

import importlib
import warnings

import pytest
import torch
import transformers as T  # noqa: N812  (a test dependency: its absence must fail, not skip)

import ncd

attention = importlib.import_module("ncd.trace.attention")
patterns = importlib.import_module("ncd.prims.patterns")
SMALL = dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
             vocab_size=50, max_position_embeddings=64, use_cache=False)


def _trace(model: torch.nn.Module, *args: torch.Tensor, **kwargs: torch.Tensor) -> ncd.TracedDiagram:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ncd.trace(model, *args, **kwargs)


class RepeatInterleaved(torch.nn.Module):
    """Grouped-query attention written with ``repeat_interleave`` and an explicit (constant, causal) boolean mask."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.kv = torch.nn.Linear(16, 16), torch.nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q(x).view(b, t, 4, 4).transpose(1, 2)
        k, v = self.kv(x).view(b, t, 2, 8).transpose(1, 2).split(4, dim=-1)
        k, v = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
        mask = torch.ones(t, t, dtype=torch.bool).tril()
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(b, t, 16)


def test_repeat_interleave_before_a_masked_attention_is_grouped_query_attention() -> None:
    torch.manual_seed(0)
    model = RepeatInterleaved().eval()
    x = torch.randn(2, 6, 16)
    d = _trace(model, x)
    assert d.opaque_count == 0, d.opaque
    ops = [b.prim.op for b in d.boxes()]
    assert "causal_mask" in ops and "expand" not in ops
    fresh = torch.randn(2, 6, 16)
    with torch.no_grad():
        torch.testing.assert_close(d.to_torch()(fresh), model(fresh), rtol=1e-5, atol=1e-6)


def test_an_explicit_expand_that_is_not_a_head_expansion_is_a_broadcast_copy() -> None:
    class Broadcast(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, None, :].expand(-1, 3, -1) * 2.0

    x = torch.randn(4, 5)
    d = _trace(Broadcast(), x)
    assert d.opaque_count == 0 and "expand" in [b.prim.op for b in d.boxes()]
    fresh = torch.randn(4, 5)
    torch.testing.assert_close(d.to_torch()(fresh), Broadcast()(fresh))


@pytest.mark.parametrize("name", ["llama", "bert"])
def test_a_padding_mask_passed_as_input_is_captured_by_the_fast_recorder(name: str) -> None:
    """``attention_mask`` (whose values the library reads to skip the mask) no longer drops to ``torch.export``."""
    torch.manual_seed(0)
    if name == "llama":
        model = T.LlamaForCausalLM(T.LlamaConfig(**SMALL)).eval()
    else:
        model = T.BertModel(T.BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4,
                                         intermediate_size=64, vocab_size=50)).eval()
    ids = torch.randint(0, 50, (2, 8))
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    d = _trace(model, ids, attention_mask=mask)
    assert d.method == "dispatch"
    assert "expand" not in dict(d.opaque)  # repeat_kv: grouped-query attention (or a broadcast copy), never opaque
    fresh_ids, fresh_mask = torch.randint(0, 50, (2, 8)), torch.ones_like(ids)
    fresh_mask[1, :3] = 0
    with torch.no_grad():
        for i, m in ((ids, mask), (fresh_ids, fresh_mask)):
            out = model(i, attention_mask=m)
            want = out.logits if name == "llama" else out.last_hidden_state
            got = d.to_torch()(i, m)
            got = got[0] if isinstance(got, tuple) else got
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["llama", "gpt2", "bert", "mistral"])
def test_a_padding_mask_from_an_input_is_read_as_causal_and_padding_masks(name: str) -> None:
    """The mask the library builds from ``attention_mask`` becomes ``◸`` (with Mistral's sliding window) and ``▭`` on
    the input, 0 opaque boxes, equal to the model on masks it was not traced with: right and left padding (a query
    left without any key gives 0, as the library's attention)."""
    torch.manual_seed(0)
    if name in ("llama", "mistral"):
        config = T.MistralConfig(**SMALL, sliding_window=3) if name == "mistral" else T.LlamaConfig(**SMALL)
        model = (T.MistralForCausalLM if name == "mistral" else T.LlamaForCausalLM)(config).eval()
    elif name == "gpt2":
        model = T.GPT2LMHeadModel(T.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=50, bos_token_id=0,
                                               eos_token_id=0)).eval()
    else:
        model = T.BertModel(T.BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4,
                                         intermediate_size=64, vocab_size=50)).eval()
    ids = torch.randint(0, 50, (2, 8))
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    d = _trace(model, ids, attention_mask=mask)
    assert d.method == "dispatch" and d.opaque_count == 0, d.opaque
    masks = [b.prim for b in d.boxes() if b.prim.op in ("causal_mask", "padding_mask")]
    assert {m.op for m in masks} == ({"padding_mask"} if name == "bert" else {"causal_mask", "padding_mask"})
    assert all(getattr(m, "window", None) == (3 if name == "mistral" else None) for m in masks if m.op == "causal_mask")
    module = d.to_torch()
    gen = torch.Generator().manual_seed(3)
    for k in range(4):
        fresh_ids = torch.randint(0, 50, (2, 8), generator=gen)
        fresh_mask = torch.ones_like(fresh_ids)
        cut = int(torch.randint(1, 8, (), generator=gen))
        if k % 2:
            fresh_mask[1, cut:] = 0
        else:
            fresh_mask[1, :cut] = 0  # left padding: the first queries see no key under a causal mask
        with torch.no_grad():
            out = model(fresh_ids, attention_mask=fresh_mask)
            want = out.last_hidden_state if name == "bert" else out.logits
            got = module(fresh_ids, fresh_mask)
            got = got[0] if isinstance(got, tuple) else got
            assert not got.isnan().any()
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_the_softmax_after_a_padding_mask_gives_zero_on_rows_without_keys() -> None:
    """As ``scaled_dot_product_attention`` (the reference) on a boolean mask that hides every key from some queries;
    a softmax after no mask stays the plain (faster) ``torch.softmax``."""
    scores = ncd.Einsum("h y k, h x k -> h y x") >> ncd.Scale("k**-0.5")
    d = (scores @ ncd.Identity.of("x [bool], h x k")) >> (ncd.PaddingMask("x") >> ncd.Softmax("x")) \
        @ ncd.Identity.of("h x k") >> ncd.Einsum("h y x, h x k -> h y k")
    q, k, v = torch.randn(3, 4, 8), torch.randn(3, 5, 8), torch.randn(3, 5, 8)
    keep = torch.tensor([False] * 5)
    with patterns.disabled():  # box by box, not fused into SDPA
        module = d.to_torch(h=3, y=4, x=5, k=8)
        source = d.to_source(h=3, y=4, x=5, k=8)
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keep.expand(4, 5))
    torch.testing.assert_close(module(q, k, keep, v), want)
    assert bool((want == 0).all()) and "_safe_softmax" in source
    plain = ((scores >> ncd.Softmax("x")) @ ncd.Identity.of("h x k")).to_source(h=3, y=4, x=5, k=8)
    assert "torch.softmax" in plain and "_safe_softmax" not in plain
    assert importlib.import_module("ncd.trace.live_masks").empty_rows_give_zero()


def test_a_mask_that_is_not_structure_and_padding_is_read_whole() -> None:
    """A mask built from an input per query (not per key) fails the padding check on random inputs: it is not read as
    structure and padding, but as the boolean wire it is (its entries computed by the recorded operations)."""

    class PerQuery(torch.nn.Module):
        def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
            mask = keep.bool()[:, None, :, None] | torch.eye(x.shape[2], dtype=torch.bool)
            return torch.nn.functional.scaled_dot_product_attention(x, x, x, attn_mask=mask)

    x, keep = torch.randn(2, 3, 5, 4), torch.tensor([[1, 1, 0, 1, 1], [1, 0, 1, 1, 1]])
    d = _trace(PerQuery(), x, keep)
    assert d.opaque_count == 0 and "padding_mask" in [b.prim.op for b in d.boxes()]
    fresh, fresh_keep = torch.randn(2, 3, 5, 4), torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    torch.testing.assert_close(d.to_torch()(fresh, fresh_keep), PerQuery()(fresh, fresh_keep))
