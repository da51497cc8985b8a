"""Axis names and numbers by role: what a number or a wire is comes from the model's structure and config, never from
a chance equality of sizes.

* A live value times a one-number float32 buffer holding a power of one of its wires' sizes (Gemma's ``embed_scale =
  hidden_size ** 0.5``, stored rounded to float32) is the scaling ``*m**0.5``, not a constant 5.657 broadcast over the
  wires; a number as a user writes it (``torch.tensor(2.0)`` on a width of 4) stays that number, and a float16 buffer
  (rounded otherwise than the lowered scaling would round) stays a constant.
* The hunter: one model traced where its roles' sizes differ and where batch, tokens, heads and head features are all
  one size; box by box each wire has the same name in both, no name of the collided trace stands for two roles.  A
  learned map whose output one reader splits into one head (multi-query attention's ``k_proj(x).view(b, t, 1, k)``)
  names it the head features ``k`` the config gives that size (it was a generic name of the size, shared with every
  other wire of that size: at b = t = h = k it was the name of another role's wires).
* Scores over a one-number tensor holding the square root of the head features (``torch.full([], k ** 0.5)``) are
  scaled ``*k**-0.5``, not divided by a constant 2.828.

Each diagram is compared with the model it was traced from, bit for bit where the scaling replaced a constant."""

from __future__ import annotations

import types
import warnings

import pytest
import sympy
import torch
from torch import nn

import ncd
from ncd.prims.elementwise import ScaleOp
from ncd.prims.linear import LinearOp
from ncd.prims.opaque import ConstantOp
from ncd.trace.naming import PRIME


class _ScaledEmbedding(nn.Module):
    """Token embeddings scaled by a buffer holding the square root of their width (Gemma's ``embed_scale``)."""

    def __init__(self, m: int = 32, scale: float | None = None, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, m)
        self.register_buffer("embed_scale", torch.tensor(m ** 0.5 if scale is None else scale, dtype=dtype),
                             persistent=False)
        self.out = nn.Linear(m, m)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids) * self.embed_scale.to(self.embed.weight.dtype)
        return self.out(x)


def _traced(model: nn.Module) -> ncd.TracedDiagram:
    torch.manual_seed(0)
    ids = torch.randint(0, 50, (2, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d: ncd.TracedDiagram = ncd.trace(model.eval(), ids=ids)
    for lowered, x in ((d.to_torch(), ids), (d.to_torch(), torch.randint(0, 50, (2, 8))),
                       (d.to_torch(b=3, t=5), torch.randint(0, 50, (3, 5)))):
        with torch.no_grad():
            assert torch.equal(lowered(x), model(x))  # the scaling multiplies by the very float32 the buffer holds
    return d


def _scales(d: ncd.TracedDiagram) -> list[sympy.Expr]:
    return [b.prim.factor for b in d.boxes() if isinstance(b.prim, ScaleOp)]


def test_an_embedding_scale_buffer_is_the_square_root_of_the_width() -> None:
    d = _traced(_ScaledEmbedding())
    assert _scales(d) == [sympy.Symbol("m", positive=True, integer=True) ** sympy.Rational(1, 2)] \
        or [str(s) for s in _scales(d)] == ["sqrt(m)"]
    assert not [b for b in d.boxes() if isinstance(b.prim, ConstantOp)]
    assert "sizes.m ** 0.5" in d.to_source()


def test_a_written_number_or_a_half_precision_buffer_stays_a_constant() -> None:
    """2.0 is the square root of a width of 4 only by chance; float16's rounding of 5.657 is not the lowered scaling's."""
    for model in (_ScaledEmbedding(m=4, scale=2.0), _ScaledEmbedding(m=32, scale=32 ** 0.5, dtype=torch.float16)):
        if model.embed_scale.dtype == torch.float16:  # a float16 buffer multiplied into float32: not a size
            model.embed_scale = model.embed_scale.float().half()
        d = _traced(model)
        assert not [s for s in _scales(d) if s.free_symbols]


def test_gemmas_embedding_scale_is_drawn_as_a_size() -> None:
    import transformers as T

    config = T.GemmaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=8)
    model = T.GemmaModel(config).eval()
    ids = torch.randint(0, 50, (2, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, input_ids=ids)
    assert "sizes.m ** 0.5" in d.to_source() and "5.65" not in d.to_source()
    lowered = d.to_torch()
    for x in (ids, torch.randint(0, 50, (2, 8))):
        with torch.no_grad():
            torch.testing.assert_close(lowered(x), model(input_ids=x).last_hidden_state, atol=1e-5, rtol=1e-5)


# -- the hunter: one model traced at sizes where its roles collide and where they do not ----------------------------
class _Attention(nn.Module):
    """A layer of grouped-query attention (``g`` key/value heads, one for multi-query attention) and a gated MLP, its
    sizes read from its config as ``transformers`` models do."""

    def __init__(self, config: types.SimpleNamespace) -> None:
        super().__init__()
        m, self.h, self.g, self.head_dim = config.hidden_size, config.num_attention_heads, config.num_key_value_heads, \
            config.head_dim
        self.q_proj, self.o_proj = nn.Linear(m, self.h * self.head_dim), nn.Linear(self.h * self.head_dim, m)
        self.k_proj, self.v_proj = nn.Linear(m, self.g * self.head_dim), nn.Linear(m, self.g * self.head_dim)
        self.up, self.gate = nn.Linear(m, config.intermediate_size), nn.Linear(m, config.intermediate_size)
        self.down = nn.Linear(config.intermediate_size, m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.h, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.g, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.g, self.head_dim).transpose(1, 2)
        k = k.repeat_interleave(self.h // self.g, 1)
        v = v.repeat_interleave(self.h // self.g, 1)
        a = torch.softmax(q @ k.transpose(-1, -2) * self.head_dim ** -0.5, -1) @ v
        x = x + self.o_proj(a.transpose(1, 2).reshape(b, t, self.h * self.head_dim))
        out: torch.Tensor = x + self.down(torch.nn.functional.silu(self.gate(x)) * self.up(x))
        return out


class _Decoder(nn.Module):
    def __init__(self, **sizes: int) -> None:
        super().__init__()
        self.config = types.SimpleNamespace(**sizes)
        self.layers = nn.ModuleList([_Attention(self.config) for _ in range(2)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def _wires(d: ncd.TracedDiagram) -> list[tuple[tuple[object, ...], list[list[str]]]]:
    """Each box (its kind, label and the ranks of its wires) with its wires' names, primes dropped."""
    out = []
    for b in d.boxes():
        segs = [*b.dom, *b.cod]
        out.append(((type(b.prim).__name__, b.label, tuple(len(s.axes) for s in segs)),
                    [[a.name.rstrip(PRIME) for a in s.axes] for s in segs]))
    return out


def _assignment(apart: ncd.TracedDiagram, collided: ncd.TracedDiagram) -> dict[str, set[str]]:
    """For each name of the collided trace, the names the trace at distinct sizes gives the same wires (box by box);
    the two diagrams must be drawn alike."""
    a, c = _wires(apart), _wires(collided)
    assert [k for k, _ in a] == [k for k, _ in c]
    names: dict[str, set[str]] = {}
    for (_, x), (_, y) in zip(a, c):
        for p, q in zip(x, y):
            for n, o in zip(p, q):
                if n != "1" and o != "1":
                    names.setdefault(o, set()).add(n)
    return names


def _hunted(**sizes: int) -> tuple[nn.Module, ncd.TracedDiagram]:
    b, t = sizes.pop("b"), sizes.pop("t")
    torch.manual_seed(0)
    model = _Decoder(**sizes).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d: ncd.TracedDiagram = ncd.trace(model, x=torch.randn(b, t, sizes["hidden_size"]))
    return model, d


APART = dict(b=2, t=7, hidden_size=24, num_attention_heads=4, head_dim=6, intermediate_size=40)


@pytest.mark.parametrize("kv", [2, 1])
def test_roles_of_one_size_keep_their_names(kv: int) -> None:
    """Batch, tokens, heads and head features all 4 (key/value heads the batch's 2, or one): each wire is named as at
    distinct sizes, no name stands for two roles; the key and value head features are the queries' ``k`` (multi-query
    attention's one key head was a wire named by its size); the collided diagram lowers equal at other b, t."""
    _, apart = _hunted(**{**APART, "num_key_value_heads": kv})
    model, collided = _hunted(b=4 if kv == 1 else 2, t=4, hidden_size=16, num_attention_heads=4, head_dim=4,
                              num_key_value_heads=kv, intermediate_size=32)
    names = _assignment(apart, collided)
    assert {o: n for o, n in names.items() if len(n) > 1} == {}  # no collided name for two roles
    assert {n: o for o, ns in names.items() for n in ns} == {n: n for ns in names.values() for n in ns}
    heads = {n for b in apart.boxes() for s in (*b.dom, *b.cod) for n in s.names if n.rstrip(PRIME) in "hgk"}
    assert {n.rstrip(PRIME) for n in heads} == ({"h", "g", "k"} if kv > 1 else {"h", "k"})
    for d in (apart, collided) if kv == 1 else ():  # one key head's features are the queries' k
        assert {b.cod[0].names for b in d.boxes() if isinstance(b.prim, LinearOp) and b.label in ("k_proj", "v_proj")} \
            == {("k",)}
    y = torch.randn(3, 5, 16)
    with torch.no_grad():
        torch.testing.assert_close(collided.to_torch(b=3, t=5)(y), model(y), atol=1e-5, rtol=1e-5)


class _FullScaled(nn.Module):
    """Attention scores over ``torch.full([], head_dim ** 0.5)`` (GPT-2's eager attention in earlier ``transformers``)."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.num_heads, self.head_dim = nn.Linear(32, 32), 4, 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        s = q @ q.transpose(-1, -2)
        return (s / torch.full([], q.size(-1) ** 0.5, dtype=s.dtype, device=s.device)).softmax(-1)


def test_scores_over_a_full_tensor_are_scaled_by_the_head_features() -> None:
    """``*k**-0.5`` (the module's ``head_dim``), not a division by a constant 2.828 broadcast over ``b h t tʹ``."""
    torch.manual_seed(0)
    model, x = _FullScaled().eval(), torch.randn(2, 5, 32)
    d: ncd.TracedDiagram = ncd.trace(model, x=x)
    assert [str(s) for s in _scales(d)] == ["1/sqrt(k)"] and not [b for b in d.boxes() if isinstance(b.prim, ConstantOp)]
    for lowered, y in ((d.to_torch(), x), (d.to_torch(b=3, t=7), torch.randn(3, 7, 32))):
        with torch.no_grad():  # times k**-0.5 where the model divides by k**0.5: equal to a rounding
            torch.testing.assert_close(lowered(y), model(y), atol=1e-6, rtol=1e-6)
