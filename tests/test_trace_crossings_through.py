"""A crossing separated from the einsum that reads it by woven boxes (a rotary embedding, a norm, a scale) and by views
that split or rename wires is moved past them and folded (``ncd.trace.crossings_through``); a view, a woven box and a
view splitting its woven wires are one view and the box (``split_before_woven``).  Every diagram is compared with the
model: the lowered module on the traced and a fresh input, gradients against torch.autograd, the backward diagram,
the JSON round trip, PyTorch's FLOP count and a second trace's SVG (``_checked``)."""

from __future__ import annotations

import warnings

import torch
import transformers as T  # noqa: E402  (a test dependency: its absence must fail, not skip)
from torch import nn

import ncd
from ncd.ir.axes import parse_segment
from ncd.prims.opaque import ViewOp
from ncd.prims.rotary import Rotary
from ncd.render import to_svg
from ncd.trace.crossings_through import _rewoven
from tests.test_trace_crossings import _checked, _crossings

warnings.filterwarnings("ignore", message=".*(bos|eos)_token_id.*")


class Grouped(nn.Module):
    """Grouped-query attention written out: heads crossed, then a woven box, then the query heads split ``h -> g r``;
    with ``norms``, learned RMS norms after the crossings, called after the key projection (the order the lowered
    module reads its tensors in must stay the model's: both norms' weights have the same shape)."""

    def __init__(self, m: int = 16, h: int = 4, g: int = 2, norms: bool = False, keep: str = "") -> None:
        super().__init__()
        self.h, self.g, self.k, self.keep = h, g, m // h, keep
        self.q, self.kk, self.v, self.o = nn.Linear(m, m), nn.Linear(m, g * m // h), nn.Linear(m, g * m // h), \
            nn.Linear(m, m)
        self.norms = norms
        if norms:
            self.qn, self.kn = nn.RMSNorm(m // h), nn.RMSNorm(m // h)
            with torch.no_grad():
                self.qn.weight.uniform_(0.5, 1.5)
                self.kn.weight.uniform_(-1.5, -0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        b, t, _ = x.shape
        q = self.q(x).view(b, t, self.h, self.k).transpose(1, 2)
        k = self.kk(x).view(b, t, self.g, self.k).transpose(1, 2)
        v = self.v(x).view(b, t, self.g, self.k).transpose(1, 2)
        q, k = (self.qn(q), self.kn(k)) if self.norms else (torch.tanh(q), k * 0.5)
        if self.keep == "query":  # the crossed, woven queries are an output too: that crossing stays
            kept = q
        q = q.reshape(b, self.g, self.h // self.g, t, self.k)
        scores = torch.einsum("bgrtk,bgsk->bgrts", q, k).softmax(-1)
        out = torch.einsum("bgrts,bgsk->bgrtk", scores, v).reshape(b, self.h, t, self.k)
        y = self.o(out.transpose(1, 2).reshape(b, t, self.h * self.k))
        return (y, kept) if self.keep == "query" else y


def test_a_crossing_moves_past_woven_boxes_and_splits_into_the_einsum() -> None:
    d = _checked(Grouped(), (2, 5, 16))
    assert _crossings(d) == 0
    # the queries: one view b t m -> b t g r k (the split h -> g r moved before the woven tanh), no second view
    views = [b.prim for b in d.boxes() if isinstance(b.prim, ViewOp)]
    assert any(str(v.source) == "b t̅ m:16" and len(v.target) == 5 and v.target.sizes[2:] == (2, 2, 4) for v in views), views


def test_learned_boxes_moved_keep_their_tensors() -> None:
    # the norms' weights differ (one positive, one negative): read in another order, the lowered module differs
    d = _checked(Grouped(norms=True), (2, 5, 16))
    assert _crossings(d) == 0
    assert sum(type(b.prim).__name__ == "RMSNormOp" for b in d.boxes()) == 2


def test_a_crossing_read_by_an_output_stays() -> None:
    d = _checked(Grouped(keep="query"), (2, 5, 16))
    assert _crossings(d) == 1  # the queries': an output reads the woven value; the keys' is folded


def test_a_rotary_llama_has_no_crossings() -> None:
    """transformers' Llama (grouped heads, rotary on the crossed heads): equal to the model on the traced and a fresh
    input, in JSON, deterministic; every crossing folded."""
    torch.manual_seed(0)
    model = T.LlamaModel(T.LlamaConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                                       intermediate_size=64, vocab_size=50, max_position_embeddings=16,
                                       use_cache=False)).eval()
    ids, fresh = torch.randint(0, 50, (2, 6)), torch.randint(0, 50, (2, 6))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, ids)
        again = ncd.trace(model, ids)
    assert d.opaque_count == 0 and _crossings(d) == 0
    assert sum(b.prim.op == "rotary" for b in d.boxes()) == 2
    lowered = d.to_torch()
    back = ncd.load_json(d.to_json()).to_torch()
    back.load_state_dict(lowered.state_dict())
    with torch.no_grad():
        for x in (ids, fresh):
            want = model(x).last_hidden_state
            torch.testing.assert_close(lowered(x), want, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(back(x), want, rtol=1e-4, atol=1e-5)
    assert to_svg(again) == to_svg(d)


def test_a_crossing_that_reorders_a_box_own_wires_is_kept() -> None:
    rotary = Rotary("k:8", "t:6")  # acts on t k (positions, features): woven over b h
    assert _rewoven(rotary, [parse_segment("b").axes[0], parse_segment("h").axes[0]], parse_segment("b k:8 h t:6")) \
        is None
    moved = _rewoven(rotary, [parse_segment("b").axes[0], parse_segment("h").axes[0]], parse_segment("b t:6 h k:8"))
    assert moved is not None and str(moved.dom) == "b t:6 h k:8"
