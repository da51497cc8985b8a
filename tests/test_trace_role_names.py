"""Axis names and numbers by role: what a number or a wire is comes from the model's structure and config, never from
a chance equality of sizes.

* A live value times a one-number float32 buffer holding a power of one of its wires' sizes (Gemma's ``embed_scale =
  hidden_size ** 0.5``, stored rounded to float32) is the scaling ``*m**0.5``, not a constant 5.657 broadcast over the
  wires; a number as a user writes it (``torch.tensor(2.0)`` on a width of 4) stays that number, and a float16 buffer
  (rounded otherwise than the lowered scaling would round) stays a constant.

Each diagram is compared with the model it was traced from, bit for bit where the scaling replaced a constant."""

from __future__ import annotations

import warnings

import sympy
import torch
from torch import nn

import ncd
from ncd.prims.elementwise import ScaleOp
from ncd.prims.opaque import ConstantOp


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
