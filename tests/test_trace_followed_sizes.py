"""Sizes a model merges or counts under names of their own are followed as the batch and sequence symbols.

A model that flattens ``(b, t, m)`` to ``(b*t, m)`` (or reads attention scores as ``(b*h, t, tʹ)``) names the merged
wire by itself; the position ids a cumulative sum counts range up to ``t + 1``.  Before, one such wire made the whole
diagram keep its sizes as numbers (no ``b``/``t`` symbols: deberta-v2, bloom, mpnet, roberta), so it could not be
lowered at other sizes at all.  Each case here: the inputs' ``b t`` are symbols, the lowered module at other sizes
equals the model there (or is refused by the other-sizes check, never silently wrong), and tracing is deterministic.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import ncd
from ncd.render import to_svg
from ncd.torch.codegen import defaults_of
from tests.benchmarks import benchmark


def _trace(model: nn.Module, *args: torch.Tensor, **kwargs: object) -> ncd.TracedDiagram:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ncd.trace(model, *args, **kwargs)


class _Flat(nn.Module):
    """``x.reshape(b*t, m)``, a linear map and a norm on the rows, then back to ``(b, t, m)``."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(6, 6)
        self.norm = nn.LayerNorm(6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, m = x.shape
        y = self.norm(self.proj(x.reshape(b * t, m)))
        return y.reshape(b, t, m) + x


class _Scores(nn.Module):
    """Attention scores over ``(b*h, t, tʹ)`` by ``bmm``, as bloom and deberta-v2 compute them."""

    def __init__(self, heads: int = 3, k: int = 4) -> None:
        super().__init__()
        self.heads, self.k = heads, k
        self.qkv = nn.Linear(heads * k, 3 * heads * k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, self.k).permute(2, 0, 3, 1, 4).unbind(0)
        q, k, v = (z.reshape(b * self.heads, t, self.k) for z in (q, k, v))
        w = torch.bmm(q, k.transpose(1, 2)).softmax(-1)
        return torch.bmm(w, v).view(b, self.heads, t, self.k).transpose(1, 2).reshape(b, t, -1)


class _Counted(nn.Module):
    """Position ids counted by a cumulative sum over the non-padding tokens (RoBERTa's, MPNet's)."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens = nn.Embedding(20, 6)
        self.positions = nn.Embedding(40, 6)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = ids.ne(1).int()
        positions = torch.cumsum(mask, dim=1) * mask + 1
        return self.tokens(ids) + self.positions(positions)


def _sizes(d: ncd.TracedDiagram) -> dict[str, int]:
    return dict(defaults_of(d.as_block()))


@pytest.mark.parametrize("cls, shape", [(_Flat, (2, 5, 6)), (_Scores, (2, 5, 12)), (_Counted, (2, 5))])
def test_merged_and_counted_sizes_are_followed_and_lower_at_other_sizes(cls: type[nn.Module], shape: tuple[int, ...]
                                                                        ) -> None:
    torch.manual_seed(0)
    model = cls().eval()
    make = (lambda *s: torch.randint(2, 20, s)) if cls is _Counted else torch.randn
    d = _trace(model, make(*shape))
    assert {"b": 2, "t": 5}.items() <= _sizes(d).items()
    assert [a.name for a in d.dom.segments[0].axes][:2] == ["b", "t"]
    assert to_svg(_trace(model, make(*shape))) == to_svg(d)  # deterministic
    for b, t in ((3, 5), (2, 7), (4, 3)):
        x = make(b, t, *shape[2:])
        with torch.no_grad():
            want, got = model(x), d.to_torch(b=b, t=t)(x)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["bloom", "deberta-v2", "mpnet", "roberta"])
def test_corpus_models_that_kept_numbers_get_batch_and_token_symbols(name: str) -> None:
    corpus = benchmark("import_corpus")
    entry = next(e for e in corpus.hf_entries() if e.name == name)
    model, inputs, fresh = entry.build()
    d = _trace(model, **inputs)
    ids = inputs["input_ids"]
    assert [a.name for a in d.dom.segments[0].axes] == ["b", "t"]
    assert {"b": ids.shape[0], "t": ids.shape[1]}.items() <= _sizes(d).items()
    with torch.no_grad():  # at the traced sizes, on fresh inputs, the lowered module is the model
        want, got = model(**fresh), d.to_torch()(*fresh.values())
    want = want[0] if not isinstance(want, torch.Tensor) else want
    got = got[0] if not isinstance(got, torch.Tensor) else got
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    x = torch.cat([fresh["input_ids"], fresh["input_ids"][:1]])  # b = 3: the model's value there, or refused
    try:
        lowered = d.to_torch(b=3)
    except ncd.TraceError:
        return
    with torch.no_grad():
        want, got = model(input_ids=x), lowered(x)
    torch.testing.assert_close(got[0] if not isinstance(got, torch.Tensor) else got, want[0], atol=1e-4, rtol=1e-4)


class _SeqFirst(nn.Module):
    """``nn.MultiheadAttention`` and a GRU built with ``batch_first=False``: they read ``(t, b, m)``."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2)
        self.gru = nn.GRU(8, 6)

    def forward(self, x: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
        y, _ = self.attn(x, x, x, need_weights=False)
        return self.gru(y + x, h0)[0]


def test_inputs_are_named_by_the_layout_the_module_reading_them_has() -> None:
    torch.manual_seed(0)
    model = _SeqFirst().eval()
    t, b = 5, 3
    d = _trace(model, torch.randn(t, b, 8), torch.randn(1, b, 6))
    x_names, h_names = ([a.name for a in s.axes] for s in d.dom.segments)
    assert x_names == ["t", "b", "m"] and h_names[1] == "b"  # the GRU's state is (layers, b, hidden)
    assert {"b": b, "t": t}.items() <= _sizes(d).items()
    for b2, t2 in ((2, 5), (3, 7), (4, 2)):  # the batch as many as the GRU's 3 gates, its merge with the heads apart
        x, h0 = torch.randn(t2, b2, 8), torch.randn(1, b2, 6)
        with torch.no_grad():
            torch.testing.assert_close(d.to_torch(b=b2, t=t2)(x, h0), model(x, h0), atol=1e-5, rtol=1e-5)


def test_several_sequences_per_sample_name_the_last_axis_the_tokens() -> None:
    import transformers

    config = transformers.BertConfig(hidden_size=32, num_attention_heads=4, intermediate_size=64, num_hidden_layers=1,
                                     vocab_size=100)
    torch.manual_seed(0)
    model = transformers.BertForMultipleChoice(config).eval()
    ids = torch.randint(3, 100, (2, 4, 8))
    d = _trace(model, input_ids=ids)
    names = [a.name for a in d.dom.segments[0].axes]
    assert names[0] == "b" and names[2] == "t" and names[1] not in ("b", "t")
    assert {"b": 2, "t": 8}.items() <= _sizes(d).items()
    with torch.no_grad():
        fresh = torch.randint(3, 100, (2, 4, 8))
        got = d.to_torch()(fresh)
        got = got if isinstance(got, torch.Tensor) else got[0]
        torch.testing.assert_close(got, model(input_ids=fresh).logits, atol=1e-4, rtol=1e-4)


class _CausalConv(nn.Module):
    """A causal convolution as Mamba's: padded by ``k - 1`` on both sides (``t + 3``), cut back to the first ``t``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(6, 6, 4, padding=3, groups=6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        return self.conv(x.transpose(1, 2))[..., :t].transpose(1, 2) + x


class _PadConv(nn.Module):
    """``F.pad`` on the left by 2 (``t + 2``), a convolution of width 3 back to ``t``; a strided one to ``t/2``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(6, 6, 3)
        self.down = nn.Conv1d(6, 6, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(nn.functional.pad(x.transpose(1, 2), (2, 0))).transpose(1, 2) + x
        return self.down(y.transpose(1, 2)).transpose(1, 2)


class _Pooled(nn.Module):
    """CLIP's text pooling: the state at each row's largest id (an argmax over ``t``), gathered along ``t``; logits of
    every sample against every other (``b bʹ``)."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens = nn.Embedding(20, 6)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.tokens(ids)
        pooled = h[torch.arange(h.shape[0]), ids.argmax(-1)]
        return pooled @ pooled.t()


@pytest.mark.parametrize("cls, shape, sizes", [(_CausalConv, (2, 8, 6), ((3, 5), (1, 11), (2, 8))),
                                               (_PadConv, (2, 8, 6), ((3, 6), (1, 12), (2, 4))),
                                               (_Pooled, (2, 8), ((3, 5), (1, 11), (4, 2)))])
def test_sizes_boxes_derive_from_the_symbols_are_followed(cls: type[nn.Module], shape: tuple[int, ...],
                                                           sizes: tuple[tuple[int, int], ...]) -> None:
    """A convolution's or pad's output (``t + 3``, ``t + 2``, ``t/2``) and an argmax's positions (``[t]``) were held as
    the traced numbers, so the whole diagram kept its sizes as numbers; now they are those expressions, and the module
    lowered at other sizes is the model there."""
    torch.manual_seed(0)
    model = cls().eval()
    make = (lambda *s: torch.randint(0, 20, s)) if cls is _Pooled else torch.randn
    d = _trace(model, make(*shape))
    assert [a.name for a in d.dom.segments[0].axes][:2] == ["b", "t"]
    assert {"b": 2, "t": shape[1]}.items() <= _sizes(d).items()
    assert to_svg(_trace(model, make(*shape))) == to_svg(d)  # deterministic
    for b, t in sizes:
        x = make(b, t, *shape[2:])
        with torch.no_grad():
            want, got = model(x), d.to_torch(b=b, t=t)(x)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


class _Baddbmm(nn.Module):
    """BLOOM's scores: ``baddbmm(bias, q, kᵀ, alpha=1/√head_dim)`` on ``(b·h, t, tʹ)``."""

    def __init__(self, num_heads: int = 3, head_dim: int = 8) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, head_dim
        self.qkv = nn.Linear(num_heads * head_dim, 3 * num_heads * head_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k, v = (z.reshape(b * self.num_heads, t, self.head_dim) for z in (q, k, v))
        bias = torch.zeros(b * self.num_heads, 1, t)
        w = bias.baddbmm(q, k.transpose(1, 2), beta=1.0, alpha=self.head_dim ** -0.5).softmax(-1)
        return torch.bmm(w, v).view(b, self.num_heads, t, self.head_dim).transpose(1, 2).reshape(b, t, -1)


def test_a_scale_given_as_baddbmm_alpha_is_the_head_dimension() -> None:
    """The factor was drawn as 0.353553390593274 (then as ``1/√q``, ``q`` the merged ``b·h`` wire of size 8)."""
    import sympy

    from ncd.ir.diagram import Box
    from ncd.ir.size import symbol

    torch.manual_seed(0)
    model = _Baddbmm().eval()
    d = _trace(model, torch.randn(2, 4, 24))
    factors = [b.prim.factor for b in d.walk() if isinstance(b, Box) and b.prim.op == "scale"]
    assert any(f == symbol("k") ** sympy.Rational(-1, 2) for f in factors), factors
    assert _sizes(d).get("k") == 8
    x = torch.randn(2, 4, 24)
    with torch.no_grad():
        torch.testing.assert_close(d.to_torch()(x), model(x), atol=1e-5, rtol=1e-5)


class _PerSample(nn.Module):
    """A score per token read at one position per sample, the positions a ``(b,)`` input of their own (a QA head's
    start positions): the input's axis is named apart from ``b`` and renamed ``b`` (a view) where it meets the scores."""

    def __init__(self) -> None:
        super().__init__()
        self.score = nn.Linear(6, 1)

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.score(x).squeeze(-1).gather(1, positions[:, None]).squeeze(1)


def test_an_input_renamed_as_the_batch_is_sized_by_it() -> None:
    """The positions' axis stayed the traced 2 while the scores' was ``b``: the view renaming it held at the traced
    batch only, so lowering at another batch was refused; now the input is sized by ``b`` and the module lowered at
    other sizes is the model there."""
    torch.manual_seed(0)
    model = _PerSample().eval()
    d = _trace(model, torch.randn(2, 8, 6), torch.tensor([3, 7]))
    assert [str(a.size) for a in d.dom.segments[0].axes][:2] == ["b", "t"]
    assert str(d.dom.segments[1].axes[0].size) == "b"
    for b, t in ((3, 5), (1, 1), (2, 11)):
        x, positions = torch.randn(b, t, 6), torch.randint(0, t, (b,))
        with torch.no_grad():
            torch.testing.assert_close(d.to_torch(b=b, t=t)(x, positions), model(x, positions))
