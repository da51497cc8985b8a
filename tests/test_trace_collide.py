"""Size collisions: two roles of one size (width = positions = heads x head features, ffn = width, key/value heads =
heads, head features = tokens) never make ``ncd.trace`` draw a constant for a live value, warn, or lower wrongly.

Each model is compared with the original model on the traced input and on a fresh input of the same shapes.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
import transformers as T  # noqa: E402  (a test dependency: its absence must fail, not skip)

import ncd
from ncd.prims.embedding import EmbeddingOp
from ncd.prims.opaque import ConstantOp, OpaqueOp, ParameterOp

warnings.filterwarnings("ignore", message=".*_token_id.*")


def _ids(seed: int, vocab: int = 100, shape: tuple[int, int] = (1, 8)) -> torch.Tensor:
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(seed))


def _traced_equal(model: torch.nn.Module, inputs: dict[str, torch.Tensor], fresh: dict[str, torch.Tensor]
                  ) -> ncd.TracedDiagram:
    """Traces ``model`` (no warning of ours), lowers it and checks it against the model on both inputs."""
    torch.manual_seed(0)
    model.eval()
    with torch.no_grad():
        for p in model.parameters():  # away from the initialisation (ones and zeros hide how a weight is read)
            p.add_(0.05 * torch.randn_like(p))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d: ncd.TracedDiagram = ncd.trace(model, **inputs)
    ours = [str(w.message) for w in caught if "ncd.trace" in str(w.message)]
    assert ours == []
    lowered = d.to_torch()
    for given in (inputs, fresh):
        with torch.no_grad():
            want = [t for t in torch.utils._pytree.tree_leaves(model(**given)) if isinstance(t, torch.Tensor)]
            got = lowered(*given.values())
        got = list(got) if isinstance(got, tuple) else [got]
        assert len(got) == len(want)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4)
    return d


def test_gpt_bigcode_with_as_many_positions_as_width_reads_its_embeddings_live() -> None:
    """``n_positions = n_embd``: the position table ``wpe(arange(t))`` is square; its rows are sliced, not the width."""
    config = T.GPTBigCodeConfig(n_layer=2, n_embd=32, n_head=4, vocab_size=100, n_positions=32)
    d = _traced_equal(T.GPTBigCodeModel(config), {"input_ids": _ids(0)}, {"input_ids": _ids(1)})
    boxes = list(d.boxes())
    constants = [b.prim.name for b in boxes if isinstance(b.prim, ConstantOp)]
    assert not any("wte" in c or "wpe" in c for c in constants), constants
    assert [b.label for b in boxes if isinstance(b.prim, EmbeddingOp)] == ["wte"]  # the token embedding, learned
    assert [b.prim.name for b in boxes if isinstance(b.prim, ParameterOp)] == ["wpe.weight"]  # then sliced to its rows
    assert d.opaque_count == 0
    original = sum(p.numel() for p in T.GPTBigCodeModel(config).parameters())
    assert sum(p.numel() for p in d.to_torch().parameters()) == original


def test_a_failing_leading_rows_reading_falls_back_to_a_parameter_not_a_constant(monkeypatch: pytest.MonkeyPatch) -> None:
    """An internal inconsistency while drawing a table's rows leaves the rows a learned box: still right on fresh input."""
    from ncd.trace.convert import Converter

    def broken(self: Any, *args: Any) -> int:
        raise AssertionError("inconsistent")

    monkeypatch.setattr(Converter, "leading_rows", broken)
    config = T.GPTBigCodeConfig(n_layer=1, n_embd=32, n_head=4, vocab_size=100, n_positions=32)
    d = _traced_equal(T.GPTBigCodeModel(config), {"input_ids": _ids(0)}, {"input_ids": _ids(1)})
    assert not [b for b in d.boxes() if isinstance(b.prim, ConstantOp) and "wpe" in b.prim.name]
    assert d.opaque_count == 0 and not [b for b in d.boxes() if isinstance(b.prim, OpaqueOp)]


def _llama() -> torch.nn.Module:
    return T.LlamaModel(T.LlamaConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=4,
                                      head_dim=8, intermediate_size=32, vocab_size=100, max_position_embeddings=32,
                                      use_cache=False))


def _bert() -> torch.nn.Module:
    return T.BertModel(T.BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=32,
                                    vocab_size=100, max_position_embeddings=32))


def _gpt2() -> torch.nn.Module:
    return T.GPT2Model(T.GPT2Config(n_layer=2, n_embd=32, n_head=4, n_inner=32, vocab_size=100, n_positions=32,
                                    use_cache=False))


def _t5() -> torch.nn.Module:
    return T.T5Model(T.T5Config(num_layers=2, num_decoder_layers=2, d_model=32, d_kv=8, num_heads=4, d_ff=32,
                                vocab_size=100, use_cache=False, decoder_start_token_id=0))  # type: ignore[call-arg]


def _t5_heads() -> torch.nn.Module:  # 8 heads as many as the tokens: the relative-position bias table is 8 wide
    return T.T5Model(T.T5Config(num_layers=1, num_decoder_layers=1, d_model=32, d_kv=4, num_heads=8, d_ff=32,
                                vocab_size=100, use_cache=False, decoder_start_token_id=0))  # type: ignore[call-arg]


@pytest.mark.parametrize("build", [_llama, _bert, _gpt2, _t5, _t5_heads], ids=["llama", "bert", "gpt2", "t5", "t5-heads"])
def test_models_whose_roles_share_sizes_round_trip_equal(build: Any) -> None:
    """Width = positions = ffn = heads x head features, key/value heads = heads, head features = tokens = 8."""
    model = build()
    inputs = {"input_ids": _ids(0, shape=(2, 8))}
    fresh = {"input_ids": _ids(1, shape=(2, 8))}
    if isinstance(model, T.T5Model):
        inputs["decoder_input_ids"], fresh["decoder_input_ids"] = _ids(2, shape=(2, 8)), _ids(3, shape=(2, 8))
    d = _traced_equal(model, inputs, fresh)
    assert d.opaque_count == 0
    assert not [b for b in d.boxes() if isinstance(b.prim, ConstantOp) and "weight" in b.prim.name]


def test_a_call_not_even_drawn_opaque_warns_that_its_constant_is_wrong_on_other_inputs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The last resort (an opaque box failed too) is a constant; the warning says when that constant depends on the
    inputs, i.e. when the lowered module is wrong on other inputs (never silently)."""
    from ncd.trace.convert import Converter

    class Model(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y: torch.Tensor = torch.special.erfcx(x) + 1.0
            return y

    def broken(self: Any, node: Any) -> None:
        raise AssertionError("inconsistent")

    monkeypatch.setattr(Converter, "opaque", broken)
    x = torch.randn(2, 3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d = ncd.trace(Model(), x)
    text = [str(w.message) for w in caught if "not even an opaque box" in str(w.message)]
    assert len(text) == 1 and "erfcx" in text[0] and "wrong on other inputs" in text[0]
    y = torch.randn(2, 3)
    assert not torch.allclose(d.to_torch()(y), Model()(y))  # what the warning says: a constant stands in


def test_the_corpus_collide_modes_give_roles_equal_sizes() -> None:
    """``import_corpus.py --collide``: the shrunk configs' sizes collide as the modes say (checked on the built model's
    tensors, not on the caps), and one colliding model runs through the corpus harness equal and unwarned."""
    from tests.test_import_corpus import corpus

    llama = corpus.shrink(T.AutoConfig.for_model("llama"), collide="width")
    model = T.LlamaModel(llama)
    p = dict(model.named_parameters())
    q, k = p["layers.0.self_attn.q_proj.weight"], p["layers.0.self_attn.k_proj.weight"]
    width, ffn = p["embed_tokens.weight"].shape[1], p["layers.0.mlp.up_proj.weight"].shape[0]
    assert width == ffn == llama.max_position_embeddings == q.shape[0] == k.shape[0] == 32  # key/value heads = heads
    heads = corpus.shrink(T.AutoConfig.for_model("llama"), collide="heads")
    assert heads.num_attention_heads == corpus.TOKENS == 8 and heads.head_dim == 4
    assert heads.num_key_value_heads == corpus.BATCH == 2
    entry = next(e for e in corpus.all_entries("width") if e.name == "gpt_bigcode")
    result, _ = corpus.run_one(entry, determinism=False)
    assert result.status == "traced" and result.equal and not result.warned and not result.failed
    assert result.params_lowered == result.params


def _names(d: ncd.TracedDiagram) -> dict[str, set[str]]:
    """Every axis name of the diagram and the sizes it stands for."""
    out: dict[str, set[str]] = {}
    for b in d.boxes():
        for seg in (*b.dom, *b.cod):
            for a in seg.axes:
                out.setdefault(a.name, set()).add(str(a.size))
    return out


def _collided(name: str, mode: str) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    from tests.test_import_corpus import corpus

    model, inputs, _ = next(e for e in corpus.all_entries(mode) if e.name == name).build()
    return model.eval(), inputs


def _size(config: Any, *keys: str) -> int | None:
    return next((int(getattr(config, k)) for k in keys if isinstance(getattr(config, k, None), int)), None)


@pytest.mark.parametrize("mode", ["width", "heads"])
@pytest.mark.parametrize("name", ["gpt_bigcode", "t5", "llama", "bert"])
def test_roles_of_one_size_get_their_roles_names(name: str, mode: str) -> None:
    """``import_corpus.py --collide``: heads, head features, width and positions are ``h``, ``k``, ``m``, ``n`` (read
    from the config and the module structure), key/value heads ``g``, whatever sizes they share; no role's name is
    primed (``mʹ`` was the position table's rows, ``n`` T5's relative-position bias heads)."""
    from ncd.prims.embedding import EmbeddingOp
    from ncd.trace.naming import PRIME

    model, inputs = _collided(name, mode)
    config = model.config
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, **inputs)
    names = _names(d)
    width = _size(config, "hidden_size", "d_model", "n_embd")
    heads = _size(config, "num_attention_heads", "num_heads", "n_head")
    assert width and heads
    head_features = _size(config, "head_dim", "d_kv") or width // heads
    kv = _size(config, "num_key_value_heads") or heads
    assert names["m"] == {str(width)} and names["k"] == {str(head_features)}
    # the query heads h, or (grouped-query attention) straight as key/value heads g and the heads each serves r
    # (``ncd.trace.crossings_through``: llama's queries are b t g r k from the view on)
    assert names.get("h", {str(heads)}) == {str(heads)}
    if "h" not in names:
        assert 1 < kv != heads and names["r"] == {str(heads // kv)}
    if 1 < kv != heads:  # grouped-query attention (multi-query: no wire of one key/value head)
        assert names["g"] == {str(kv)}
    roles = {"m", "h", "k", "g", "f", "e"} | ({"n"} if _size(config, "max_position_embeddings", "n_positions") else set())
    assert not [n for n in names if PRIME in n and n.rstrip(PRIME) in roles]
    tables = [b for b in d.boxes() if isinstance(b.prim, ParameterOp) and "position" in b.prim.name or
              isinstance(b.prim, ParameterOp) and b.prim.name == "wpe.weight"]
    if name in ("gpt_bigcode", "bert"):  # the learned position table: positions n, sliced to the tokens
        assert [b.cod[0].names for b in tables] == [("n", "m")]
        assert names["n"] == {str(_size(config, "max_position_embeddings", "n_positions"))}
    if name == "t5":  # one relative-position bias per head
        biases = [b for b in d.boxes() if isinstance(b.prim, EmbeddingOp) and b.label == "relative_attention_bias"]
        assert biases and all(b.cod[0].names[-1] == "h" for b in biases)


def test_axes_given_by_the_user_win_over_role_names() -> None:
    """``axes=`` names the tokens ``n``: the position table's rows take another name, apart from it."""
    model, inputs = _collided("gpt_bigcode", "width")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, **inputs, axes={"input_ids": "b n"})
    assert d.dom[0].names == ("b", "n") and _names(d)["n"] == {"8"}
    (table,) = [b for b in d.boxes() if isinstance(b.prim, ParameterOp) and b.prim.name == "wpe.weight"]
    rows, columns = table.cod[0].names
    assert columns == "m" and rows not in ("n", "m") and _names(d)[rows] == {"32"}
