"""A size of the model's own (a width, a config int) that equals a product of the input's batch or sequence by chance
is not drawn as that product: ``nn.MultiheadAttention(4, 2)`` at batch 2 merges its batch and heads into a wire of
4 (``b*h``), the width's size; the width stays 4 (before, the output was typed ``b t q:2*b``).

Each model is compared with the original model on the traced input and on inputs of other sizes.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import ncd


class _Attend(nn.Module):
    def __init__(self, width: int, heads: int, weights: bool) -> None:
        super().__init__()
        self.weights = weights
        self.proj = nn.Linear(width, width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj(x)
        out: torch.Tensor = self.attn(y, y, y, need_weights=self.weights)[0]
        return out.softmax(-1)


def _traced(width: int, heads: int, b: int, t: int, weights: bool = False) -> tuple[nn.Module, ncd.TracedDiagram]:
    torch.manual_seed(0)
    model = _Attend(width, heads, weights).eval()
    x = torch.randn(b, t, width, generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d: ncd.TracedDiagram = ncd.trace(model, x, axes="b t m")
    with torch.no_grad():
        torch.testing.assert_close(d.to_torch()(x), model(x), atol=1e-5, rtol=1e-5)
    return model, d


@pytest.mark.parametrize("weights", [False, True])
@pytest.mark.parametrize("width, heads", [(4, 2), (8, 4), (6, 3)])
def test_a_width_equal_to_batch_times_heads_stays_the_width(width: int, heads: int, weights: bool) -> None:
    """At batch 2, ``width = 2 * heads``: the attention's ``(b*h, t, k)`` wire has the width's size (with and
    without the attention weights: fused into SDPA or read as a softmax)."""
    model, d = _traced(width, heads, 2, 5, weights)
    (out,) = d.cod.segments
    last = out.axes[-1]
    assert not last.size.free_symbols and int(last.size) == width, str(d.cod)
    assert [str(a.size) for a in out.axes[:-1]] == ["b", "t"], str(d.cod)
    x = torch.randn(2, 7, width, generator=torch.Generator().manual_seed(2))  # another length
    with torch.no_grad():
        torch.testing.assert_close(d.to_torch(t=7)(x), model(x), atol=1e-5, rtol=1e-5)


def test_a_width_unlike_batch_times_heads_is_unchanged() -> None:
    """The control: width 16, 4 heads (b*h = 8) has the same output type."""
    model, d = _traced(16, 4, 2, 5)
    (out,) = d.cod.segments
    assert [str(a.size) for a in out.axes] == ["b", "t", "16"], str(d.cod)


def _at_another_batch(weights: bool) -> None:
    model, d = _traced(4, 2, 2, 5, weights)
    x = torch.randn(3, 7, 4, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(d.to_torch(b=3, t=7)(x), model(x), atol=1e-5, rtol=1e-5)


def test_the_lowered_attention_runs_at_another_batch() -> None:
    """Fused into SDPA: the batch and length are symbols all through (before: a view held ``q:6`` at batch 3)."""
    _at_another_batch(False)


def test_the_lowered_attention_with_weights_runs_at_another_batch() -> None:
    """With the weights: the output, read back from ``(b*h, t, k)`` as ``(t*b, m)``, is the merge ``t*b`` (before,
    ``2*t``: the leading half of a wire of 4 not yet followed as ``b*h``, and the batch was held at 2)."""
    _at_another_batch(True)


def test_torch_mha_need_weights_holds_no_box_at_its_traced_batch() -> None:
    """The corpus's sequence-first ``nn.MultiheadAttention(16, 4)`` at batch 2 (``b*h = 8``): no view is held at the
    traced batch, and it lowers equal at batch 3 and another length."""
    torch.manual_seed(0)
    model = nn.MultiheadAttention(16, 4).eval()

    class Call(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = model

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out, weights = self.attn(x, x, x)
            return out, weights

    call = Call().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(call, torch.randn(6, 2, 16), axes="t b m")
    assert d.fixed == (), d.fixed
    x = torch.randn(4, 3, 16, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        got, want = d.to_torch(b=3, t=4)(x), call(x)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)


# -- a batch of one: the batch's symbol traced at 1 is no evidence of where it is ------------------------------------
class _Grouped(nn.Module):
    """A pre-norm block of grouped-query attention (4 query heads over 2 key/value heads) with a residual add."""

    def __init__(self, width: int = 32, heads: int = 4, groups: int = 2) -> None:
        super().__init__()
        self.heads, self.groups, self.k = heads, groups, width // heads
        self.norm = nn.LayerNorm(width)
        self.q, self.kv = nn.Linear(width, width), nn.Linear(width, 2 * groups * self.k)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, m = x.shape
        y = self.norm(x)
        q = self.q(y).view(b, t, self.heads, self.k).transpose(1, 2).reshape(b, self.groups, -1, t, self.k)
        k, v = (z.transpose(1, 2)[:, :, None] for z in self.kv(y).view(b, t, 2, self.groups, self.k).unbind(2))
        scores = (q @ k.transpose(-1, -2)) * self.k ** -0.5
        out = (scores.softmax(-1) @ v).reshape(b, self.heads, t, self.k).transpose(1, 2).reshape(b, t, m)
        return x + self.out(out)


def _batch_of_one(model: nn.Module, x: torch.Tensor, axes: str) -> ncd.TracedDiagram:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d: ncd.TracedDiagram = ncd.trace(model, x, axes=axes)
    return d


def test_a_batch_of_one_is_no_factor_of_the_widths() -> None:
    """At batch 1 the views' sizes read 1 before and after ``b``: the batch was taken for the start of the heads, the
    key/value groups and the width (``g:2*b``, ``m:32*b``), and the adds named the batch ``1`` (``1:b t m:32*b``):
    to_torch(b=3) was refused.  Now the wires are ``b t m:32`` and it lowers equal at other sizes."""
    torch.manual_seed(0)
    model = nn.Sequential(_Grouped(), _Grouped()).eval()
    d = _batch_of_one(model, torch.randn(1, 5, 32), "b ~t m")
    (out,) = d.cod.segments
    assert [(a.name, str(a.size)) for a in out.axes] == [("b", "b"), ("t", "t"), ("m", "32")], str(d.cod)
    assert d.fixed == (), d.fixed
    for b, t in [(3, 7), (1, 9), (2, 5)]:
        x = torch.randn(b, t, 32, generator=torch.Generator().manual_seed(b + t))
        with torch.no_grad():
            torch.testing.assert_close(d.to_torch(b=b, t=t)(x), model(x), atol=1e-5, rtol=1e-5)


def test_a_batch_of_one_keeps_the_symbols_in_a_llama() -> None:
    """``LlamaModel`` at batch 1 with ``axes='b ~t'`` (before: ``1:b t̅ m:32*b``, refused at batch 3)."""
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(0)
    model = transformers.LlamaModel(config).eval()
    d = _batch_of_one(model, torch.randint(0, 50, (1, 6)), "b ~t")
    (out,) = d.cod.segments
    assert [str(a.size) for a in out.axes] == ["b", "t", "32"], str(d.cod)
    for b, t in [(3, 6), (2, 4)]:
        ids = torch.randint(0, 50, (b, t), generator=torch.Generator().manual_seed(b))
        with torch.no_grad():
            got, want = d.to_torch(b=b, t=t)(ids), model(ids, use_cache=False).last_hidden_state
        torch.testing.assert_close(got[0] if isinstance(got, (tuple, list)) else got, want, atol=1e-5, rtol=1e-5)


class _Positions(nn.Module):
    """Token and learned position embeddings added, the positions' rows read as ``(1, t, m)`` (GPT-2's ``wpe``)."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens, self.positions, self.out = nn.Embedding(50, 16), nn.Embedding(32, 16), nn.Linear(16, 16)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = self.positions(torch.arange(ids.shape[1], device=ids.device))[None]
        out: torch.Tensor = self.out(self.tokens(ids) + rows)
        return out


def test_a_constant_of_one_row_broadcasts_over_a_batch_of_one() -> None:
    """At batch 1 the positions' ``(1, t, m)`` rows are added to ``(b, t, m)``: the row of one broadcasts, as at
    other batches (before, named like the batch: a view of the table as ``b t m``, held at batch 1, refused at 3)."""
    torch.manual_seed(0)
    model = _Positions().eval()
    d = _batch_of_one(model, torch.randint(0, 50, (1, 6)), "b ~t")
    assert d.fixed == (), d.fixed
    for b, t in [(3, 6), (2, 9)]:
        ids = torch.randint(0, 50, (b, t), generator=torch.Generator().manual_seed(b))
        with torch.no_grad():
            torch.testing.assert_close(d.to_torch(b=b, t=t)(ids), model(ids), atol=1e-5, rtol=1e-5)
