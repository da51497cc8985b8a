"""ncd.decode: prefill then one-token steps equal the full forward at every position; caches and their bytes."""

from __future__ import annotations

import pytest
import torch

import ncd
from ncd.inference import DecodeError
from ncd.inference.examples import gqa_decoder
from ncd.render.check import problems
from ncd.render.model import Text
from ncd.zoo.heads import heads_attention

GPT2 = dict(v=50, m=16, k=4, h=4, N=2, n=32)


def _check_against_full(model: ncd.Block, prompt: int, total: int, vocab: int, batch: tuple[int, ...] = (2,)) -> None:
    """Prefill ``prompt`` tokens, then step one token at a time; every output equals the full forward's (float64)."""
    d = ncd.decode(model)
    run = d.lower(dtype=torch.float64)
    full = model.to_torch(t=total)
    full.load_state_dict(run.weights)
    full = full.double().eval()
    tokens = torch.randint(0, vocab, (*batch, total), generator=torch.Generator().manual_seed(0))
    reference = full(tokens)
    logits, caches = run.prefill(tokens[..., :prompt])
    torch.testing.assert_close(logits, reference[..., :prompt, :], rtol=1e-12, atol=1e-12)
    for p in range(prompt, total):
        logits, caches = run.step(tokens[..., p:p + 1], caches)
        torch.testing.assert_close(logits, reference[..., p:p + 1, :], rtol=1e-12, atol=1e-12)
    # the caches hold exactly every position's keys and values
    assert all(c.shape[len(batch)] == total for c in caches)


def test_gpt2_prefill_and_steps_equal_the_full_forward() -> None:
    _check_against_full(ncd.zoo.gpt2(**GPT2, t=4), prompt=4, total=8, vocab=50)


def test_gpt2_unbatched_one_token_prompt() -> None:
    _check_against_full(ncd.zoo.gpt2(**GPT2, t=1), prompt=1, total=4, vocab=50, batch=())


def test_grouped_query_decoder_equals_the_full_forward_and_caches_key_value_heads_only() -> None:
    model = gqa_decoder(v=40, m=24, k=4, g=2, r=3, f=32, N=3)
    _check_against_full(model, prompt=3, total=7, vocab=40)
    d = ncd.decode(model)
    assert [str(s.segment) for s in d.sites] == ["x̅:t k g", "x̅:t k g"]
    assert str(d.cache_formula()) == "2*N*g*k*q"


def test_cache_bytes_equal_the_bytes_of_the_caches_the_lowered_prefill_returns() -> None:
    for model in (ncd.zoo.gpt2(**GPT2, t=5), gqa_decoder(N=3)):
        d = ncd.decode(model)
        run = d.lower(dtype=torch.bfloat16)
        tokens = torch.arange(5) % 40
        _, caches = run.prefill(tokens)
        held = sum(c.numel() * c.element_size() for c in caches)
        assert held == 5 * d.cache_bytes(dtype="bfloat16")
        assert len(caches) == len(d.slots) == 2 * dict(model.get("defaults"))["N"]


def test_llama_8b_shaped_cache_is_131072_bytes_per_token() -> None:
    d = ncd.decode(gqa_decoder(v=128256, m=4096, k=128, g=8, r=4, f=14336, N=32))
    assert d.cache_bytes(dtype="bfloat16") == 131072
    assert d.cache_bytes_per_layer(dtype="bfloat16") == 4096
    assert d.cache_bytes(dtype="int4") == 32768
    assert d.cache_bytes(dtype="float32", g=32) == 4 * 131072 * 2


def test_gpt2_small_cache_formula_and_bytes() -> None:
    d = ncd.decode(ncd.zoo.gpt2())
    assert str(d.cache_formula()) == "2*N*h*k*q"
    assert d.cache_bytes(dtype="float16") == 2 * 12 * 12 * 64 * 2
    assert d.slots[:3] == [("K", 0), ("V", 0), ("K", 1)]


def test_greedy_generation_equals_argmax_of_the_full_forward() -> None:
    model = ncd.zoo.gpt2(**GPT2, t=3)
    run = ncd.decode(model).lower(dtype=torch.float64)
    prompt = torch.tensor([7, 3, 11])
    generated = run.generate(prompt, 4)
    tokens = prompt
    for _ in range(4):
        full = model.to_torch(t=len(tokens))
        full.load_state_dict(run.weights)
        nxt = full.double().eval()(tokens)[-1].argmax()
        tokens = torch.cat([tokens, nxt[None]])
    assert generated.tolist() == tokens.tolist()


def test_step_and_prefill_are_ordinary_diagrams() -> None:
    d = ncd.decode(ncd.zoo.gpt2(**GPT2, t=4))
    assert str(d.step.dom).startswith("t̅:1 [v], x̅:c k h")
    assert str(d.step.cod).endswith("x̅:c+1 k h")
    drawing = ncd.render.layout(d.step, depth=3)
    assert problems(drawing) == []
    texts = {"".join(run.text for run in item.runs) for item in drawing.items if isinstance(item, Text)}
    assert {"Ki →", "→ Ki", "Vi →", "→ Vi", "x = c", "x = c + 1", "[c:c + 1]"} <= texts
    again = ncd.load_json(d.step.to_json())
    assert again == d.step


def test_not_causal_or_unbound_repetitions_are_errors() -> None:
    with pytest.raises(DecodeError, match="no causal mask"):
        ncd.decode(ncd.zoo.vit())
    layer = (ncd.Identity.of("~t m") >> heads_attention(self_attention=True, mask="causal", tokens="t")).block("L")
    with pytest.raises(DecodeError, match="bind the repetition count N"):
        ncd.decode(ncd.repeat(layer, "i", 0, "N"))
    with pytest.raises(DecodeError, match="no item axis"):
        ncd.decode(ncd.Identity.of("t m") >> ncd.Linear("m -> m") >> layer)
