"""``ncd.trace`` on real architectures from ``transformers`` (small configs, random weights, no downloads).

For each: the lowered diagram equals the model (allclose) and the count of opaque boxes is pinned
(the counts are reported in docs/trace.md).
"""

from __future__ import annotations

import warnings

import pytest
import torch
import transformers as T  # noqa: E402  (a test dependency: its absence must fail, not skip)

import ncd
from tests.test_trace import round_trip

warnings.filterwarnings("ignore", message=".*bos_token_id.*")


def gpt2():
    return T.GPT2Model(T.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=50, n_positions=16, use_cache=False,
                                    bos_token_id=0, eos_token_id=0)), (torch.randint(0, 50, (2, 6)),), {}


def bert():
    return T.BertModel(T.BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=64,
                                    vocab_size=50, max_position_embeddings=16)), (torch.randint(0, 50, (2, 6)),), {}


def vit():
    return T.ViTModel(T.ViTConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=64,
                                  image_size=16, patch_size=4, num_channels=3)), (torch.randn(2, 3, 16, 16),), {}


def llama():
    return T.LlamaModel(T.LlamaConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                                      intermediate_size=64, vocab_size=50, max_position_embeddings=16, use_cache=False)), \
        (torch.randint(0, 50, (2, 6)),), {}


def t5():
    return T.T5Model(T.T5Config(num_layers=2, num_decoder_layers=2, d_model=32, d_kv=8, num_heads=4, d_ff=64, vocab_size=50,
                                use_cache=False, decoder_start_token_id=0)), \
        (torch.randint(0, 50, (2, 6)),), {"decoder_input_ids": torch.randint(0, 50, (2, 5))}


def clip_text():
    return T.CLIPTextModel(T.CLIPTextConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=64,
                                            vocab_size=50, max_position_embeddings=16)), (torch.randint(0, 50, (2, 6)),), {}


def clip_vision():
    return T.CLIPVisionModel(T.CLIPVisionConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4,
                                                intermediate_size=64, image_size=16, patch_size=4)), \
        (torch.randn(2, 3, 16, 16),), {}


# no opaque box left (T5's decoder masks its relative-position bias with ``where(causal, bias, min)``: a where box;
# CLIP-text's end-token pooling is compare, cast, argmax and gather).
CORPUS = {"gpt2": (gpt2, 0), "bert": (bert, 0), "vit": (vit, 0), "llama": (llama, 0), "t5": (t5, 0),
          "clip_text": (clip_text, 0), "clip_vision": (clip_vision, 0)}


@pytest.mark.parametrize("name", list(CORPUS))
def test_corpus_round_trip_and_opaque_count(name: str) -> None:
    build, opaque = CORPUS[name]
    torch.manual_seed(0)
    model, args, kwargs = build()
    d = round_trip(model.eval(), *args, **kwargs)
    assert d.opaque_count == opaque, d.opaque


def test_gpt2_attention_is_drawn_as_the_papers_attention() -> None:
    model, args, _ = gpt2()
    d = round_trip(model.eval(), *args)
    einsums = [b.prim.spec() for b in d.boxes() if b.prim.op == "einsum"]
    # the heads' crossings are the einsums' order of their axes (ncd.trace.crossings): q and k read as split, b t h k
    assert "b t h k, b tʹ h k -> b h t tʹ" in einsums and "b h t tʹ, b tʹ h k -> b t h k" in einsums
    softmax = [b.prim.axis.name for b in d.boxes() if b.prim.op == "softmax"]
    assert softmax == ["tʹ"]  # over the key positions
    repeats = [n for n in d.walk() if isinstance(n, ncd.Repeat)]
    assert len(repeats) == 1 and repeats[0].count() == 2 and repeats[0].name == "h.i: GPT2Block"


def test_llama_grouped_query_attention_shares_the_key_value_heads() -> None:
    """Query heads h = (g r): the scores contract each key/value head g with its r query heads, no copies."""
    model, args, _ = llama()
    d = round_trip(model.eval(), *args)
    einsums = [b.prim for b in d.boxes() if b.prim.op == "einsum"]
    grouped = [e for e in einsums if len(e.inputs[0]) == 5]
    assert len(grouped) == 2  # scores and values, drawn once in the repetition
    q, k = (seg.names for seg in grouped[0].inputs)
    shared, queries_only = [n for n in q if n in k], [n for n in q if n not in k]
    assert len(shared) == 3 and len(queries_only) == 2  # b, g and the head features shared; t and r only on the queries
    assert len(q) == 5 and len(k) == 4  # the keys carry no r: no copies of the key/value heads


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_export_capture_round_trips(name: str) -> None:
    """``capture="export"`` (torch.export) gives the same function as the default eager recording."""
    build, _ = CORPUS[name]
    torch.manual_seed(0)
    model, args, _ = build()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model.eval(), *args, capture="export")
    assert d.method == "export"
    with torch.no_grad():
        torch.testing.assert_close(d.to_torch()(*args), model(*args).last_hidden_state, atol=1e-5, rtol=1e-4)


def test_clip_text_pools_on_the_end_token_wherever_it_is() -> None:
    """``x[arange(b), (ids == eos).int().argmax(-1)]`` becomes compare, cast, argmax and gather; traced on one batch,
    the lowered diagram pools at the end token of another (against the model's own ``pooler_output``)."""
    torch.manual_seed(0)
    model = T.CLIPTextModel(T.CLIPTextConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=4,
                                             intermediate_size=64, vocab_size=50, max_position_embeddings=16,
                                             eos_token_id=3, bos_token_id=0)).eval()
    ids = torch.tensor([[5, 6, 3, 7, 8, 9], [5, 3, 4, 3, 8, 9]])
    d = round_trip(model, ids)
    assert d.opaque_count == 0
    ops = {b.prim.op: b.prim for b in d.boxes()}
    assert ops["compare"].relation == "==" and ops["compare"].value == 3
    assert ops["argmax"].source.names == ("t",) and ops["gather"].axis.name == "t"
    other = torch.tensor([[3, 6, 1, 7, 8, 9], [5, 4, 4, 9, 8, 3]])
    with torch.no_grad():
        want = model(other).pooler_output
    torch.testing.assert_close(d.to_torch()(other)[1], want, atol=1e-5, rtol=1e-4)


def test_llama_rotary_embedding_is_one_box_per_query_and_key() -> None:
    """HF's ``apply_rotary_pos_emb`` (products, slices, a negation, a concatenation) is drawn as ``ρ`` on the position
    and head-feature wires, woven over batch and heads; nothing of its arithmetic is left and the round trip holds."""
    torch.manual_seed(0)
    model, args, _ = llama()
    d = round_trip(model.eval(), *args)
    rotary = [b.prim for b in d.boxes() if b.prim.op == "rotary"]
    assert len(rotary) == 2 and d.opaque_count == 0  # queries and keys, drawn once in the repetition
    assert all(p.axis.size == 8 and str(p.position.size) == "t" and p.base == 10000.0 for p in rotary)
    assert not [b for b in d.boxes() if b.prim.op in ("concat", "slice") or getattr(b.prim, "function", "") == "neg"]


def test_gpt2_traced_at_8_tokens_lowers_at_12_and_bert_says_why_it_cannot() -> None:
    """Batch and sequence axes are symbols (traced sizes as defaults): GPT-2's position table is a slice ``:t`` and its
    mask ``◸``, so the diagram lowered at t=12 equals the model at t=12.  BERT's token-type ids are still a traced
    ``b t`` constant (read from its ``token_type_ids`` buffer), so other sizes are refused with a TraceError naming
    that box."""
    torch.manual_seed(0)
    model, _, _ = gpt2()
    d = ncd.trace(model.eval(), torch.randint(0, 50, (2, 8)))
    assert dict(d.get("defaults")) == {"b": 2, "k": 8, "t": 8} and str(d.dom) == "b t̅ [50]"  # k: the scale k**-0.5
    x = torch.randint(0, 50, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(d.to_torch(t=12)(x), model(x).last_hidden_state, atol=1e-5, rtol=1e-4)
    model, _, _ = bert()
    d = ncd.trace(model.eval(), torch.randint(0, 50, (2, 8)))
    with pytest.raises(ncd.NCDError, match=r"cannot lower BertModel at \{'t': 12\}.*token_type_ids"):
        d.to_torch(t=12)
