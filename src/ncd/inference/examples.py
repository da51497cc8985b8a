"""Causal decoders built with the DSL, for the decode examples: grouped-query attention, RMSNorm, a gated MLP.

``gqa_decoder`` has ``g`` key/value heads, each shared by ``r`` query heads (``h = g·r``):
the scores are ``Einsum("~y k g r, ~x k g -> ~y ~x g r")``, so keys and values never carry
``r`` and the derived caches hold ``g`` heads only.

>>> import ncd
>>> from ncd.inference.examples import gqa_decoder
>>> d = ncd.decode(gqa_decoder())
>>> [str(s.segment) for s in d.sites]
['x̅:t k g', 'x̅:t k g']
>>> llama8b = ncd.decode(gqa_decoder(v=128256, m=4096, k=128, g=8, r=4, f=14336, N=32))
>>> llama8b.cache_bytes(dtype="bfloat16")
131072
"""

from __future__ import annotations

import ncd
from ncd.zoo._model import model

__all__ = ["gqa_attention", "gqa_decoder", "llama_8b_shape", "PRESETS"]


def gqa_attention(tokens: str = "t", window: int | str | None = None) -> ncd.Diagram:
    """Causal grouped-query self-attention ``~t m -> ~t m``: queries ``k g r``, keys and values ``k g``;
    ``window``: a sliding window (each query sees itself and the ``window-1`` positions before it)."""
    t = tokens

    def project(role: str, axis: str, spec: str) -> ncd.Diagram:
        return ncd.Identity.of(f"~{t} m") >> ncd.Rename(f"~{t} -> ~{axis}") >> ncd.Linear(spec, name=role)

    projections = (
        ncd.Copy(f"~{t} m", 3)
        >> project("Q", "y", "m -> k g r") @ project("K", "x", "m -> k g") @ project("V", "x", "m -> k g")
    ).block("Linear")
    scores = (
        ncd.Einsum("~y k g r, ~x k g -> ~y ~x g r") >> ncd.Scale("k**-0.5")
        >> ncd.CausalMask(query="y", key="x", window=window) >> ncd.Softmax("~x")
    )
    attend = (scores @ ncd.Identity.of("~x k g") >> ncd.Einsum("~y ~x g r, ~x k g -> ~y k g r")).block("Attention")
    return projections >> attend >> ncd.Linear("k g r -> m", name="O") >> ncd.Rename(f"~y -> ~{t}")


def gqa_decoder(
    v: int = 64, m: int = 32, k: int = 8, g: int = 2, r: int = 2, f: int = 48, N: int = 2, t: int = 6,
    *, eps: float = 1e-6, window: int | None = None,
) -> ncd.Block:
    """A pre-norm causal decoder: token embedding, ``N`` blocks (RMSNorm, grouped-query attention, RMSNorm,
    SiLU-gated MLP), final RMSNorm and an output **L** to the vocabulary ``v``; no positions are added.
    ``window``: Mistral's sliding window on every layer's attention."""
    wires = ncd.Identity.of("~t m")
    gate = ncd.Copy("m") >> ncd.Linear("m -> f", name="gate") @ ncd.Linear("m -> f", name="up")
    mlp = gate >> (ncd.SiLU() @ ncd.Identity.of("f")) >> ncd.Multiply() >> ncd.Linear("f -> m", name="down")
    layer = (
        ncd.residual(wires >> ncd.RMSNorm("m", eps=eps) >> gqa_attention("t", window))
        >> ncd.residual(wires >> ncd.RMSNorm("m", eps=eps) >> mlp)
    ).block("Layer")
    body = (
        ncd.Identity.of("~t [v]") >> ncd.Embedding(vocab="v", dim="m", name="E")
        >> ncd.repeat(layer, "i", 0, "N", name="Layers")
        >> ncd.RMSNorm("m", eps=eps) >> ncd.Linear("m -> v", name="head")
    )
    return model("GQADecoder", body, v=v, m=m, k=k, g=g, r=r, f=f, N=N, t=t)


def llama_8b_shape(**sizes: int) -> ncd.Block:
    """:func:`gqa_decoder` at the sizes of Llama-3.1-8B: 32 layers, 32 query heads in 8 key/value groups of
    head dimension 128, width 4096, MLP 14336, vocabulary 128256 (no rotary positions)."""
    return gqa_decoder(**{"v": 128256, "m": 4096, "k": 128, "g": 8, "r": 4, "f": 14336, "N": 32, "t": 128, **sizes})


#: models ``ncd decode`` knows by name besides the zoo
PRESETS = {"gqa_decoder": gqa_decoder, "llama-3.1-8b": llama_8b_shape}
