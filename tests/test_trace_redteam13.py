"""redteam13: a decoding step of several tokens after a left-padded cache (a padding mask from the input and the
causal structure ending at the last query and key) is attention with ``◸↘`` and a padding mask, where it was an opaque
``scaled_dot_product_attention``; an opaque SDPA call reads back from untrusted JSON when its ``dropout_p`` is zero,
given or by default; a crafted call that could draw (a positive rate, a rate that is no number, an argument given twice
or unknown) is still refused."""

from __future__ import annotations

import copy
import json
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
import transformers as T  # noqa: N812  (a test dependency: its absence must fail, not skip)

import ncd
from ncd.prims.attention import CausalMaskOp
from ncd.prims.opaque import Opaque
from ncd.prims.opaque_allowlist import check_allowed

SDPA = "aten.scaled_dot_product_attention.default"
QKV = (("$in", 0), ("$in", 1), ("$in", 2))


def _sdpa(args: tuple[object, ...], kwargs: tuple[object, ...] = ()) -> ncd.Box:
    return Opaque(SDPA, "b h t k, b h s k, b h s k, b 1 t s [bool]", "b h t k", args=args, kwargs=kwargs)


def _inputs(seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    q, k, v = torch.randn(2, 3, 4, 8, generator=g), torch.randn(2, 3, 6, 8, generator=g), torch.randn(2, 3, 6, 8, generator=g)
    mask = torch.rand(2, 1, 4, 6, generator=g) > 0.4
    mask[..., -1] = True  # every query sees a key
    return q, k, v, mask


@pytest.mark.parametrize("kwargs", [(("scale", 0.25),), (("dropout_p", 0.0), ("scale", 0.25)), ()])
def test_an_opaque_attention_without_dropout_reads_back_untrusted_equal_to_torch(kwargs: tuple[tuple[str, float], ...]) -> None:
    d = _sdpa(QKV + (("$in", 3),), kwargs)
    read = ncd.load_json(d.to_json()).to_torch(b=2, h=3, t=4, s=6, k=8)
    scale = dict(kwargs).get("scale")
    for seed in (0, 1):
        q, k, v, mask = _inputs(seed)
        want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
        torch.testing.assert_close(read(q, k, v, mask), want)


def test_a_positional_zero_rate_reads_back_and_a_positive_one_is_refused() -> None:
    ok = _sdpa(QKV + (("$in", 3), 0.0, False))
    ncd.load_json(ok.to_json())
    bad = json.loads(ok.to_json())
    text = json.dumps(bad).replace("0.0, false", "0.5, false")
    assert text != json.dumps(bad)
    with pytest.raises(ncd.SchemaError, match="draws from the global random state"):
        ncd.load_json(text)
    ncd.load_json(text, trust=True)  # a file the user trusts still loads


@pytest.mark.parametrize("args, kwargs", [
    (QKV + (None, 0.1), ()),
    (QKV, (("dropout_p", 0.1),)),
    (QKV, (("dropout_p", math.nan),)),
    (QKV, (("dropout_p", "0"),)),
    (QKV, (("dropout_p", True),)),
    (QKV, (("dropout_p", None),)),
    (QKV + (None, 0.0), (("dropout_p", 0.0),)),  # given twice
    (QKV, (("dropout", 0.0),)),  # a name the schema does not have
    (QKV, (("dropout_p", 0.0, 1),)),  # not a pair
    (QKV, ((0, 0.0),)),
    (QKV, "dropout_p"),
    (QKV + (None, 0.0, False, 0.3, False, 1), ()),  # more positional arguments than the schema takes
    (None, ()),
])
def test_an_attention_call_that_may_draw_is_refused(args: tuple[object, ...] | None, kwargs: object) -> None:
    with pytest.raises(ncd.ParseError, match="draws from the global random state"):
        check_allowed(SDPA, args, kwargs)


def test_the_cpu_flash_kernel_is_read_the_same_way_and_dropout_itself_is_not() -> None:
    flash = "aten._scaled_dot_product_flash_attention_for_cpu.default"
    check_allowed(flash, QKV[:2] + (("$in", 2),))
    check_allowed(flash, QKV + (0.0, True), (("scale", 0.5),))
    with pytest.raises(ncd.ParseError, match="draws from the global random state"):
        check_allowed(flash, QKV + (0.2,))
    with pytest.raises(ncd.ParseError, match="draws from the global random state"):
        check_allowed("aten.native_dropout.default", (("$in", 0), 0.0, False), ())  # by name, whatever its rate


def test_an_attention_call_missing_a_required_operand_is_refused() -> None:
    for short in (QKV[:2], QKV[:1] + (0,), ()):
        with pytest.raises(ncd.ParseError, match="draws from the global random state"):
            check_allowed(SDPA, short, ())


class _Step(torch.nn.Module):
    """Queries after cached keys: the causal table ending at the last query and key, and the input's padding."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        t, s = q.shape[-2], k.shape[-2]
        causal = torch.ones(t, s, dtype=torch.bool).tril(s - t)
        mask = causal[None, None] & attention_mask[:, None, None, :].bool()
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def _step_inputs(g: torch.Generator, pads: list[int], t: int = 2, s: int = 6) -> tuple[torch.Tensor, ...]:
    q, k, v = (torch.randn(len(pads), 2, n, 4, generator=g) for n in (t, s, s))
    mask = torch.ones(len(pads), s, dtype=torch.long)
    for row, p in enumerate(pads):
        mask[row, :p] = 0
    return q, k, v, mask


def test_a_step_after_a_left_padded_cache_is_a_lower_right_causal_mask_equal_to_the_model() -> None:
    g = torch.Generator().manual_seed(0)
    model = _Step()
    traced = ncd.trace(model, *_step_inputs(g, [0, 2, 5]))
    assert traced.opaque_count == 0
    masks = [b.prim for b in traced.boxes() if isinstance(b.prim, CausalMaskOp)]
    assert len(masks) == 1 and masks[0].lower_right
    lowered = traced.to_torch()
    for pads in ([0, 2, 5], [1, 0, 3], [6, 6, 0]):  # a sample with every key padded: 0, as SDPA gives
        inputs = _step_inputs(g, pads)
        torch.testing.assert_close(lowered(*inputs), model(*inputs))
    longer = traced.to_torch(t=9)  # more cached keys: the diagonal still ends at the last query and key
    inputs = _step_inputs(g, [1, 2, 8], s=9)
    torch.testing.assert_close(longer(*inputs), model(*inputs))


def test_a_traced_llama_step_of_two_tokens_after_a_left_padded_cache_has_no_opaque_box_and_equals_the_model() -> None:
    torch.manual_seed(0)
    model: torch.nn.Module = T.LlamaForCausalLM(T.LlamaConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4,
                                                               num_key_value_heads=2, intermediate_size=64, vocab_size=50,
                                                               max_position_embeddings=64))
    model.eval()
    g = torch.Generator().manual_seed(1)

    def step(pads: list[int]) -> dict[str, object]:
        mask = torch.ones(2, 4, dtype=torch.long)
        for row, p in enumerate(pads):
            mask[row, :p] = 0
        with torch.no_grad():
            cache = model(input_ids=torch.randint(3, 50, (2, 4), generator=g), attention_mask=mask,
                          use_cache=True).past_key_values
        return dict(input_ids=torch.randint(3, 50, (2, 2), generator=g), past_key_values=cache, use_cache=True,
                    attention_mask=torch.cat([mask, torch.ones(2, 2, dtype=torch.long)], 1))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = ncd.trace(model, **step([0, 2]))
    assert traced.opaque_count == 0
    lowered = traced.to_torch()
    for pads in ([0, 2], [3, 1], [4, 0]):
        kw = step(pads)
        c = kw["past_key_values"]
        flat = [kw["input_ids"], *(t for layer in c.layers for t in (layer.keys, layer.values)),  # type: ignore[attr-defined]
                kw["attention_mask"]]
        with torch.no_grad():
            got = lowered(*flat)
            want = model(**copy.deepcopy(kw))
        torch.testing.assert_close(got[0], want.logits, rtol=1e-5, atol=1e-5)


class _KeyPadding(torch.nn.Module):
    """A key padding mask alone, one row broadcast over the queries (``[:, None, None, :]``): no causal structure."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask[:, None, None, :].bool())


@pytest.mark.parametrize("t", [2, 6])
def test_a_key_padding_mask_broadcast_over_fewer_queries_than_keys_is_not_read_as_causal(t: int) -> None:
    g = torch.Generator().manual_seed(2)
    model = _KeyPadding()
    traced = ncd.trace(model, *_step_inputs(g, [0, 2, 5], t=t))
    assert not any(isinstance(b.prim, CausalMaskOp) for b in traced.boxes())
    lowered = traced.to_torch()
    for pads in ([0, 2, 5], [3, 0, 1]):
        inputs = _step_inputs(g, pads, t=t)
        torch.testing.assert_close(lowered(*inputs), model(*inputs))


class _WindowStep(torch.nn.Module):
    """Queries after cached keys under a sliding window of 3 keys ending at the last query and key, and the input's
    padding: a structure the attention rule does not read (SDPA stays opaque)."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        t, s = q.shape[-2], k.shape[-2]
        band = torch.ones(t, s, dtype=torch.bool).tril(s - t) & ~torch.ones(t, s, dtype=torch.bool).tril(s - t - 3)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=band[None, None] & attention_mask[:, None, None, :].bool())


def test_an_attention_the_trace_leaves_opaque_reads_back_untrusted_equal_to_the_model() -> None:
    """The traced opaque SDPA itself (not a crafted box): its call, as the trace writes it, loads untrusted, and the
    read-back lowered module equals the model on fresh inputs and paddings."""
    g = torch.Generator().manual_seed(3)
    model = _WindowStep()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = ncd.trace(model, *_step_inputs(g, [0, 1, 3], s=5))
    assert traced.opaque_count == 1
    back = ncd.load_json(traced.to_json())
    lowered = back.to_torch()
    lowered.load_state_dict(traced.state_dict(lowered))
    for pads in ([0, 1, 3], [2, 0, 4]):
        inputs = _step_inputs(g, pads, s=5)
        torch.testing.assert_close(lowered(*inputs), model(*inputs))
