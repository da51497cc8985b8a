"""``ncd.trace`` on models called the way users call them (``benchmarks/import_variants.py``): a cache returned
(``use_cache=True``) or passed in (``past_key_values``), state passed as a tuple of tensors, padded masks, heads and
losses — each checked against the original model on the traced input and on fresh values (a different padding, a
different cache)."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

import ncd
from tests.benchmarks import benchmark

variants = benchmark("import_variants")


def _gpt2() -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=100, n_positions=32)).eval()


def _cache_tensors(cache: object) -> list[torch.Tensor]:
    """The keys and values of a ``transformers`` cache, layer by layer (its public layout, read independently)."""
    return [t for layer in cache.layers for t in (layer.keys, layer.values)]  # type: ignore[attr-defined]


def test_a_cache_the_call_starts_is_not_an_output_and_the_logits_are_equal() -> None:
    model, ids = _gpt2(), torch.randint(3, 100, (2, 6))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, ids, use_cache=True)
    assert len(d.cod.segments) == 1  # the logits: ncd.decode derives the caches from the diagram
    torch.testing.assert_close(d.to_torch()(ids), model(ids, use_cache=True).logits, atol=1e-5, rtol=1e-5)


def test_a_cache_passed_in_is_an_input_and_is_not_written_into() -> None:
    model = _gpt2()
    with torch.no_grad():
        past = model(torch.randint(3, 100, (2, 5)), use_cache=True).past_key_values
        other = model(torch.randint(3, 100, (2, 5)), use_cache=True).past_key_values
    before = [t.clone() for t in _cache_tensors(past)]
    ids = torch.randint(3, 100, (2, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, ids, past_key_values=past, use_cache=True)
    assert all(torch.equal(a, b) for a, b in zip(before, _cache_tensors(past)))  # the user's cache is as it was
    assert len(d.dom.segments) == len(d.cod.segments) == 5  # the tokens (logits), then each layer's keys and values
    lowered = d.to_torch()
    for cache in (past, other):  # the traced cache, and another one: its tensors are wires, not constants
        given = copy.deepcopy(cache)
        out = model(ids, past_key_values=copy.deepcopy(cache), use_cache=True)
        got = lowered(ids, *_cache_tensors(given))
        for g, w in zip(got, [out.logits] + _cache_tensors(out.past_key_values)):
            torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)


class _Step(torch.nn.Module):
    """A recurrent step taking its state as a tuple and returning the new one nested."""

    def __init__(self) -> None:
        super().__init__()
        self.cell = torch.nn.Linear(8, 8)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        h, c = state
        h = torch.tanh(self.cell(x) + h) * c
        return h, (h, c + 1)


def test_a_tuple_of_tensors_passed_in_is_inputs_not_constants() -> None:
    torch.manual_seed(0)
    model = _Step()
    d = ncd.trace(model, torch.randn(2, 8), (torch.randn(2, 8), torch.randn(2, 8)))
    assert len(d.dom.segments) == 3 and d.opaque_count == 0
    x, state = torch.randn(2, 8), (torch.randn(2, 8), torch.randn(2, 8))
    want = torch.utils._pytree.tree_leaves(model(x, state))
    for g, w in zip(d.to_torch()(x, *state), want):
        torch.testing.assert_close(g, w)


#: one case of each kind: a padding that differs in the fresh input, a cache returned under a left padding, a decoding
#: step on a cache, a loss, a task head, training mode (dropout drawn alike under one seed, or warned about), a QA head's
#: loss on spans clamped to the length it ignores (mt5/umt5/t5 differed on a fresh input)
SUBSET = ["bert:mask-right", "llama+causal_lm:mask-left+use_cache", "gpt2+causal_lm:past_key_values",
          "bert+sequence_classification:labels", "bert+question_answering:mask-right", "bert:train",
          "t5+question_answering:start/end_positions"]


@pytest.mark.parametrize("name", SUBSET)
def test_variant_round_trips(name: str) -> None:
    case = next(c for c in variants.cases() if c.name == name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = variants.run_case(case)
    assert result.status == "traced", result.reason
    assert not result.lowered, result.lowered
    assert result.equal, (result.diff, result.diff_fresh, result.warned)
    assert result.params_lowered == result.params


def test_experts_under_a_padded_mask_are_the_weighted_sum() -> None:
    """A padded mask makes ``ncd.trace`` record the model as ``torch.export`` sees it, where transformers runs its
    experts through ``grouped_mm_fallback`` and views the router's top-k indices: the check of that kernel against the
    weighted sum over ``e`` must route random tokens through contiguous indices, as the router's are (it raised on a
    column slice, and every MoE family under padding kept 13 opaque operators: histc, cumsum, index_put, ...)."""
    case = next(c for c in variants.cases() if c.name == "mixtral+causal_lm:mask-left")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = variants.run_case(case)
    assert result.status == "traced" and not result.lowered, (result.reason, result.lowered)
    assert result.equal, (result.diff, result.diff_fresh)
    assert not any(op in result.warned for op in ("grouped_mm", "histc", "index_put", "cumsum")), result.warned
