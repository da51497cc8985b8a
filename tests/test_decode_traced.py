"""ncd.decode on traced ``transformers`` models: decoding equals the full forward and ``generate`` with the library's
cache, and the cache bytes per token equal what the library's cache objects hold (small configs, random weights)."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import transformers as T  # noqa: N812  (a test dependency: its absence must fail, not skip)

import ncd
from ncd.inference.derive import DecodeError

warnings.filterwarnings("ignore", message=".*bos_token_id.*")

SMALL = dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
             vocab_size=50, max_position_embeddings=64, use_cache=False)
MODELS = {
    "llama": lambda: T.LlamaForCausalLM(T.LlamaConfig(**SMALL)),
    "qwen2": lambda: T.Qwen2ForCausalLM(T.Qwen2Config(**SMALL)),
}


@pytest.fixture(scope="module", params=list(MODELS))
def traced(request: pytest.FixtureRequest) -> tuple[str, torch.nn.Module, ncd.TracedDiagram]:
    torch.manual_seed(0)
    model = MODELS[request.param]().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        diagram = ncd.trace(model, torch.randint(0, 50, (2, 6)), axes={"input_ids": "b ~t"})
    return request.param, model, diagram


def test_decoding_equals_the_full_forward_at_every_position(traced: tuple[str, torch.nn.Module, ncd.TracedDiagram]) -> None:
    name, model, diagram = traced
    d = ncd.decode(diagram)
    # grouped-query attention: the caches hold the 2 key/value heads, not the 4 query heads (the values' cache in the
    # order the einsum reads them, b tʹ g k: their crossing to heads is the einsum's order, ncd.trace.crossings)
    assert all(dict(zip(s.segment.names, s.segment.sizes)).get("g") == 2 and 4 not in s.segment.sizes
               for s in d.sites), [str(s.segment) for s in d.sites]
    run = d.lower(dtype=torch.float64)
    tokens = torch.randint(0, 50, (2, 9), generator=torch.Generator().manual_seed(1))
    full = diagram.to_torch(t=9).double()
    with torch.no_grad():
        lowered = full(tokens)
        library = model.double()(tokens).logits
        model.float()
        logits, caches = run.prefill(tokens[:, :5])
        torch.testing.assert_close(logits, lowered[:, :5], rtol=1e-10, atol=1e-10)
        for p in range(5, 9):
            logits, caches = run.step(tokens[:, p:p + 1], caches)
            torch.testing.assert_close(logits, lowered[:, p:p + 1], rtol=1e-10, atol=1e-10)
            # the library computes its rotary tables in float32: agreement to that precision
            torch.testing.assert_close(logits, library[:, p:p + 1], rtol=1e-6, atol=1e-6)


def test_greedy_tokens_and_cache_bytes_equal_the_librarys(traced: tuple[str, torch.nn.Module, ncd.TracedDiagram]) -> None:
    name, model, diagram = traced
    d = ncd.decode(diagram)
    prompt = torch.randint(0, 50, (1, 5), generator=torch.Generator().manual_seed(2))
    run = d.lower()
    ours = run.generate(prompt, 4)
    with torch.no_grad():
        theirs = model.generate(prompt, max_new_tokens=4, do_sample=False, use_cache=True, pad_token_id=0)
        cache = model(theirs, use_cache=True).past_key_values
    assert ours.tolist() == theirs.tolist()
    held = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    assert held == theirs.shape[-1] * d.cache_bytes(dtype="float32")
    assert str(d.cache_formula()) == "64*q"  # 2 layers x (K, V) x 2 key/value heads x 8


def test_traced_mistral_sliding_window_decodes_equal_to_the_full_forward_and_generate() -> None:
    """Mistral's additive mask becomes ``◸4`` (no table, any length) and its ``repeat_kv`` (unsqueeze, expand, reshape
    before an attention with an explicit mask) grouped-query attention: 0 opaque boxes, caches of the 2 key/value heads;
    prefill then steps equal the full forward, greedy tokens equal ``generate``, cache bytes the library's cache."""
    torch.manual_seed(0)
    model = T.MistralForCausalLM(T.MistralConfig(**dict(SMALL, sliding_window=4))).eval()
    tokens = torch.randint(0, 50, (2, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        diagram = ncd.trace(model, tokens, axes={"input_ids": "b ~t"})
    assert diagram.opaque_count == 0, diagram.opaque
    masks = [b.prim for b in diagram.boxes() if b.prim.op == "causal_mask"]
    assert masks and all(m.window == 4 for m in masks)
    assert not [b for b in diagram.boxes() if b.prim.op == "constant" and len(b.cod[0]) >= 2]
    with torch.no_grad():
        torch.testing.assert_close(diagram.to_torch()(tokens), model(tokens).logits, rtol=1e-4, atol=1e-5)
    d = ncd.decode(diagram)
    assert all(dict(zip(s.segment.names, s.segment.sizes)).get("g") == 2 and 4 not in s.segment.sizes
               for s in d.sites), [str(s.segment) for s in d.sites]  # (the values: b tʹ g k, as the einsum reads them)
    run = d.lower(dtype=torch.float64)
    longer = torch.randint(0, 50, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = diagram.to_torch(t=9).double()(longer)
        logits, caches = run.prefill(longer[:, :5])
        torch.testing.assert_close(logits, full[:, :5], rtol=1e-10, atol=1e-10)
        for p in range(5, 9):
            logits, caches = run.step(longer[:, p:p + 1], caches, past=p)
            torch.testing.assert_close(logits, full[:, p:p + 1], rtol=1e-10, atol=1e-10)
    prompt = torch.randint(0, 50, (1, 5), generator=torch.Generator().manual_seed(2))
    ours = d.lower().generate(prompt, 4)
    with torch.no_grad():
        theirs = model.generate(prompt, max_new_tokens=4, do_sample=False, use_cache=True, pad_token_id=0)
        cache = model(theirs, use_cache=True).past_key_values
    assert ours.tolist() == theirs.tolist()
    held = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    assert held == d.cache_bytes_at(theirs.shape[-1], dtype="float32")


def test_sliding_window_cache_bytes_equal_mistrals_dynamic_cache() -> None:
    """The same shape built with the DSL (2 layers, 2 key/value heads of 8, window 4) holds what transformers'
    ``DynamicSlidingWindowLayer`` holds: the last ``window-1`` positions."""
    from ncd.inference.examples import gqa_decoder

    model = T.MistralForCausalLM(T.MistralConfig(**dict(SMALL, sliding_window=4))).eval()
    d = ncd.decode(gqa_decoder(v=50, m=32, k=8, g=2, r=2, f=64, N=2, window=4))
    for length in (2, 3, 10):
        with torch.no_grad():
            cache = model(torch.randint(0, 50, (1, length)), use_cache=True).past_key_values
        held = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
        assert held == d.cache_bytes_at(length, dtype="float32"), length


def test_traced_mistral_window_longer_than_the_traced_prompt_is_refused_by_decode() -> None:
    """A sliding window of 6 traced on 4 tokens: the mask is the plain causal one there (◸, no window), so a decoding
    past 6 tokens attended to every key, 0.02-0.1 off the model, with no error: decode now checks the traced diagram
    against the model at 2t + 1 tokens and refuses; traced on 7 tokens the window is read (◸6) and decodes equal."""
    torch.manual_seed(0)
    model = T.MistralForCausalLM(T.MistralConfig(**dict(SMALL, sliding_window=6))).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        short = ncd.trace(model, torch.randint(0, 50, (2, 4)), axes={"input_ids": "b ~t"})
        with pytest.raises(DecodeError, match=r"t=9 \(traced at 4\)"):
            ncd.decode(short)
        long = ncd.trace(model, torch.randint(0, 50, (2, 7)), axes={"input_ids": "b ~t"})
    windows = [b.prim.window for b in long.boxes() if b.prim.op == "causal_mask"]
    assert windows and all(w == 6 for w in windows), windows
    run = ncd.decode(long).lower(dtype=torch.float64)
    tokens = torch.randint(0, 50, (1, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        library = copy.deepcopy(model).double()(tokens).logits  # (the traced model kept: below its window of 6 it
        # takes another branch, kv_length < sliding_window, which the decoder checks against it at each such length)
        logits, caches = run.prefill(tokens[:, :3])
        for p in range(3, 12):
            logits, caches = run.step(tokens[:, p:p + 1], caches, past=p)
            torch.testing.assert_close(logits, library[:, p:p + 1], rtol=1e-6, atol=1e-6)


def test_decoding_a_traced_diagram_read_back_says_it_is_not_checked_past_the_traced_length() -> None:
    """The same diagram read back from JSON has no model to check against: decode warns as its to_torch(t=9) does (it
    derived silently before, decoding 0.02-0.1 off the model past the window)."""
    torch.manual_seed(0)
    model = T.MistralForCausalLM(T.MistralConfig(**dict(SMALL, sliding_window=6))).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = ncd.load_json(ncd.trace(model, torch.randint(0, 50, (2, 4)), axes={"input_ids": "b ~t"}).to_json())
    with pytest.warns(RuntimeWarning, match=r"decode\(t=9\) of MistralForCausalLM, a traced diagram read without its"):
        ncd.decode(back)


def test_traced_mistral_window_longer_than_twice_the_traced_prompt_is_refused_when_run_past_it() -> None:
    """A sliding window of 12 traced on 4 tokens: decode's check at 2t + 1 = 9 tokens sees no window (the model is
    causal there), so the steps past 12 tokens attended to every key, off the model with no error; the decoder now
    checks the traced diagram against the model again each time it runs past the length checked (at twice it) and
    refuses there; a run that stays within the checked lengths is unchanged.  The model's comparison
    ``kv_length >= sliding_window`` (False when traced) is a guard: the decoder checks each length where it comes out
    True against the model (equal at 12, where the window still sees every key; refused at 13)."""
    torch.manual_seed(0)
    model = T.MistralForCausalLM(T.MistralConfig(**dict(SMALL, sliding_window=12))).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        short = ncd.trace(model, torch.randint(0, 50, (2, 4)), axes={"input_ids": "b ~t"})
    d = ncd.decode(short)
    assert d.checked == 9
    run = d.lower(dtype=torch.float64)
    tokens = torch.randint(0, 50, (1, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        library = model(tokens).logits.double()
        logits, caches = run.prefill(tokens[:, :3])
        for p in range(3, 12):  # up to the window (12 tokens): runs, equal to the model
            logits, caches = run.step(tokens[:, p:p + 1], caches, past=p)
            torch.testing.assert_close(logits, library[:, p:p + 1], rtol=1e-4, atol=1e-4)
        with pytest.raises(DecodeError, match=r"t=13 \(traced at 4\)"):
            for p in range(12, 20):
                logits, caches = run.step(tokens[:, p:p + 1], caches, past=p)
    assert p == 12  # refused at the first step past the window (its 13th), before any step off the model
    model.double().float()  # parameters replaced since the trace: the check cannot compare, and says so once
    run = d.lower(dtype=torch.float64)
    with torch.no_grad(), pytest.warns(RuntimeWarning, match="not checked against the model at t=10"):
        logits, caches = run.prefill(tokens[:, :10])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")
        logits, caches = run.step(tokens[:, 10:11], caches, past=10)
    with torch.no_grad(), warnings.catch_warnings(), pytest.raises(DecodeError, match=r"compared t >= 12"):
        warnings.simplefilter("ignore")  # (past the window, and no model to check it: refused)
        run.step(tokens[:, 11:12], caches, past=11)
