"""``nn.Embedding(padding_idx=p)``: lookups of row ``p`` pass no gradient into the table (a tied head's still does).

The traced diagram's lowered module must give the model's parameter gradients (``torch.autograd`` on the model is the
reference); the DSL box, its backward diagram, JSON and pickling keep the row.
"""

from __future__ import annotations

import pickle

import pytest
import torch
import transformers as T  # noqa: N812  (a test dependency: its absence must fail, not skip)

import ncd
from ncd.errors import ParseError
from ncd.prims.embedding import EmbeddingOp
from ncd.torch.verify import compare_gradients


class _Toy(torch.nn.Module):
    """An embedding with a padding row, a layer, and (``tied``) an output head sharing the table, as GPT-2's."""

    def __init__(self, tied: bool) -> None:
        super().__init__()
        self.wte = torch.nn.Embedding(10, 4, padding_idx=1)
        self.mlp = torch.nn.Linear(4, 4)
        self.head = torch.nn.Linear(4, 10, bias=False) if tied else None
        if self.head is not None:
            self.head.weight = self.wte.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.mlp(self.wte(ids)))
        return h if self.head is None else self.head(h)


def _grads_agree(model: torch.nn.Module, *inputs: torch.Tensor) -> ncd.trace.TracedDiagram:
    """Trace ``model``, then check the lowered module's gradient of every parameter against the model's (autograd).

    The parameters are first drawn at random (no two alike), so each lowered parameter is found by its values (GPT-2's
    ``Conv1D`` weights are lowered transposed, as a linear map's).
    """
    model.eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    d = ncd.trace(model, *inputs)
    lowered = d.to_torch()

    def loss(out: object) -> torch.Tensor:
        first = out if isinstance(out, torch.Tensor) else out[0]  # a tuple's or a ModelOutput's first
        torch.manual_seed(7)
        return (first * torch.randn_like(first)).sum()

    loss(model(*inputs)).backward()
    loss(lowered(*inputs)).backward()
    theirs = list(model.parameters())
    mine = list(lowered.parameters())
    assert len(mine) == len(theirs)
    for p in mine:
        found = [q.grad if q.grad is None or not flip else q.grad.t() for q in theirs for flip in (False, True)
                 if (q.dim() == 2 or not flip) and torch.equal(q.detach().t() if flip else q.detach(), p.detach())]
        assert len(found) == 1
        assert (p.grad is None) == (found[0] is None)
        if p.grad is not None:
            torch.testing.assert_close(p.grad, found[0], rtol=1e-4, atol=1e-5)
    return d


@pytest.mark.parametrize("tied", [False, True], ids=["alone", "tied-head"])
def test_the_padding_row_gets_the_models_gradient(tied: bool) -> None:
    """On main the lowered table's row 1 took the lookups' gradient (|∂| 16 where the model's is 8 with a sum loss)."""
    torch.manual_seed(0)
    model = _Toy(tied)
    ids = torch.tensor([[1, 3, 1, 5], [2, 1, 7, 7]])
    d = _grads_agree(model, ids)
    (emb,) = [b.prim for b in d.boxes() if isinstance(b.prim, EmbeddingOp)]
    assert emb.padding_idx == 1
    lowered = d.to_torch()
    lowered(ids).sum().backward()
    table = next(p for p in lowered.parameters() if p.shape == (10, 4))
    assert table.grad is not None
    if tied:  # the head's gradient still reaches the row: exactly the model's
        model.zero_grad()
        model(ids).sum().backward()
        torch.testing.assert_close(table.grad, model.wte.weight.grad)
    else:
        assert not table.grad[1].any() and table.grad[3].any()


def test_an_embedding_without_padding_is_unchanged() -> None:
    torch.manual_seed(0)
    d = ncd.trace(torch.nn.Embedding(10, 4), torch.tensor([[0, 1, 2]]))
    (emb,) = [b.prim for b in d.boxes() if isinstance(b.prim, EmbeddingOp)]
    assert emb.padding_idx is None and "padding_idx" not in d.to_torch().ncd_source


def test_bert_word_embeddings_padding_gradient() -> None:
    """BERT's word embeddings have ``padding_idx=0`` (its pad token); ids hold pads."""
    torch.manual_seed(0)
    model = T.BertModel(T.BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=64,
                                     vocab_size=50, max_position_embeddings=16, pad_token_id=0))
    ids = torch.tensor([[5, 7, 9, 0, 0], [3, 0, 4, 8, 0]])
    d = _grads_agree(model, ids)
    assert [b.prim.padding_idx for b in d.boxes() if isinstance(b.prim, EmbeddingOp)].count(0) == 1


def test_gpt2_tied_head_with_a_padding_row() -> None:
    """GPT-2's head shares ``wte``; given a padding row, the row's gradient is the head's alone, as in the model."""
    torch.manual_seed(0)
    model = T.GPT2LMHeadModel(T.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=50, n_positions=16,
                                           use_cache=False, bos_token_id=0, eos_token_id=0))
    model.transformer.wte.padding_idx = 0
    ids = torch.tensor([[5, 0, 9, 0, 2], [3, 0, 4, 8, 0]])
    _grads_agree(model, ids)


@pytest.mark.parametrize("dom", ["b t [v]", "[v]"], ids=["woven", "one"])
def test_the_backward_diagram_zeroes_the_padding_row(dom: str) -> None:
    d = ncd.Identity.of(dom) >> ncd.Embedding("v", "m", name="E", padding_idx=2) >> ncd.Unembed("v", "m", tied_to="E")
    sizes = {"v": 6, "m": 3} | ({"b": 2, "t": 3} if "b" in dom else {})
    ids = torch.tensor([[2, 0, 2], [5, 2, 1]]) if "b" in dom else torch.tensor(2)
    pairs = compare_gradients(d, inputs=(ids,), **sizes)
    assert pairs
    for name, got, want in pairs:
        torch.testing.assert_close(got, want, msg=lambda m, name=name: f"{name}: {m}")
    back = ncd.backward(d)
    assert [b.prim.padding_idx for b in back.boxes() if b.prim.op == "embedding_grad"] == [2]


def test_the_padding_row_survives_json_and_pickle() -> None:
    d = ncd.Identity.of("t [v]") >> ncd.Embedding("v", "m", name="E", padding_idx=0)
    again = ncd.load_json(d.to_json())
    assert again == d and [b.prim.padding_idx for b in again.boxes()] == [0]
    assert pickle.loads(pickle.dumps(d)) == d
    plain = ncd.Identity.of("t [v]") >> ncd.Embedding("v", "m", name="E")
    assert ncd.load_json(plain.to_json()) == plain != d


def test_a_padding_row_outside_the_table_is_an_error() -> None:
    with pytest.raises(ParseError, match="padding_idx 7 is not a row of a table of 7 rows"):
        ncd.Embedding("v:7", "m", padding_idx=7)
    with pytest.raises(ParseError, match="padding_idx must be a row of the table"):
        ncd.Embedding("v", "m", padding_idx=-1)
