"""The encoder–decoder transformer of *Attention Is All You Need* and the decoder-only GPT-2.

>>> import ncd.zoo
>>> d = ncd.zoo.transformer()
>>> str(d.dom), str(d.cod)
('x̅ [v], y̅ [v]', 'y̅ v')
>>> str(ncd.zoo.gpt2().dom), str(ncd.zoo.gpt2().cod)
('t̅ [v]', 't̅ v')
"""

from __future__ import annotations

import ncd
from ncd.zoo._model import model
from ncd.zoo.heads import heads_attention

__all__ = ["transformer", "gpt2", "feed_forward", "sublayer", "add_norm", "add_positions"]


def feed_forward(activation: ncd.Diagram, hidden: str = "f") -> ncd.Diagram:
    """Position-wise feed-forward network ``L₊ ➤act➤ L₊`` on ``m -> m`` through the hidden width ``hidden``."""
    return ncd.Linear(f"m -> {hidden}", bias=True) >> activation >> ncd.Linear(f"{hidden} -> m", bias=True)


def add_norm(branch: ncd.Diagram, tokens: str, p: float, eps: float = 1e-5) -> ncd.Diagram:
    """Post-norm sublayer of the original transformer: ``LayerNorm(t + Dropout(branch(t)))``."""
    wires = ncd.Identity.of(f"~{tokens} m")
    return ncd.residual(wires >> branch >> ncd.Dropout(p)) >> ncd.LayerNorm("m", eps=eps)


def sublayer(branch: ncd.Diagram, tokens: str, p: float, eps: float = 1e-5) -> ncd.Diagram:
    """Pre-norm sublayer (GPT-2, ViT): ``t + Dropout(branch(LayerNorm(t)))``."""
    wires = ncd.Identity.of(f"~{tokens} m")
    return ncd.residual(wires >> ncd.LayerNorm("m", eps=eps) >> branch >> ncd.Dropout(p))


def add_positions(positions: ncd.Diagram, tokens: str) -> ncd.Diagram:
    """``~t m -> ~t m``: add a position tensor that takes no input (sinusoidal or learned)."""
    return (ncd.Identity.of(f"~{tokens} m") @ positions) >> ncd.Add()


def _embed(tokens: str, p: float) -> ncd.Diagram:
    """Token embedding scaled by √m plus sinusoidal positions (Sections 3.4 and 3.5 of the paper)."""
    embed = ncd.Identity.of(f"~{tokens} [v]") >> ncd.Embedding(vocab="v", dim="m") >> ncd.Scale("m**0.5")
    return embed >> add_positions(ncd.Sinusoidal(f"~{tokens} m"), tokens) >> ncd.Dropout(p)


def transformer(
    v: int = 37000, m: int = 512, k: int = 64, h: int = 8, f: int = 2048, N: int = 6, x: int = 8, y: int = 8,
    *, dropout: float = 0.1,
) -> ncd.Block:
    """The encoder–decoder transformer: ``N`` encoder and ``N`` decoder layers, post-norm, sinusoidal positions.

    ``v`` is the vocabulary, ``m`` the model width, ``k`` the depth per head, ``h`` the heads,
    ``f`` the feed-forward width, ``x`` and ``y`` the source and target lengths.  Source and
    target have their own embedding tables and the output projection is an **L₊** of its own
    (the paper shares all three; sharing is a choice of training, not of the wiring).  The
    result is the softmax over the vocabulary for every target position.
    """
    encoder_layer = (
        add_norm(heads_attention(self_attention=True, tokens="x"), "x", dropout)
        >> add_norm(feed_forward(ncd.ReLU()), "x", dropout)
    ).block("EncoderLayer")
    encoder = _embed("x", dropout).block("SourceEmbedding") >> ncd.repeat(encoder_layer, "i", 0, "N", name="Encoder")

    masked = add_norm(heads_attention(self_attention=True, mask="causal", tokens="y"), "y", dropout)
    memory = ncd.Identity.of("~x m")
    cross = (
        ncd.Copy("~y m") @ ncd.Copy("~x m")
        >> ncd.Identity.of("~y m") @ (heads_attention(self_attention=False) >> ncd.Dropout(dropout)) @ memory
        >> (ncd.Identity.of("~y m, ~y m") >> ncd.Add() >> ncd.LayerNorm("m")) @ memory
    )
    decoder_layer = (
        masked @ memory >> cross >> add_norm(feed_forward(ncd.ReLU()), "y", dropout) @ memory
    ).block("DecoderLayer")
    decoder = ncd.repeat(decoder_layer, "j", 0, "N", name="Decoder") >> ncd.Identity.of("~y m") @ ncd.Delete("~x m")

    # the source is encoded, the target embedded, and the decoder attends to the encoded source
    body = (
        encoder @ _embed("y", dropout).block("TargetEmbedding") >> ncd.Swap("~x m, ~y m")
        >> decoder
        >> (ncd.Linear("m -> v", bias=True) >> ncd.Softmax("v")).block("Output")
    )
    return model("Transformer", body, v=v, m=m, k=k, h=h, f=f, N=N, x=x, y=y)


def gpt2(
    v: int = 50257, m: int = 768, k: int = 64, h: int = 12, N: int = 12, n: int = 1024, t: int = 8,
    *, dropout: float = 0.1, eps: float = 1e-5,
) -> ncd.Block:
    """GPT-2 (small): token and learned position embeddings, ``N`` pre-norm blocks, final norm, tied output embedding.

    ``n`` is the context length (rows of the learned position table **P**, of which the first
    ``t`` are used), ``t ≤ n`` the sequence length; the feed-forward width is ``4m`` and the
    activation GELU with the tanh approximation.  The output head is the transpose of the token
    embedding **E** (one shared parameter).  The result is the logits over the vocabulary ``v``.
    """
    block = (
        sublayer(heads_attention(self_attention=True, mask="causal", tokens="t"), "t", dropout, eps)
        >> sublayer(feed_forward(ncd.GELU(approximate="tanh"), "f:4*m"), "t", dropout, eps)
    ).block("Block")
    positions = ncd.Parameter("~n m", name="P") >> ncd.Slice("~n", 0, "t", out="~t")
    embed = (
        ncd.Identity.of("~t [v]") >> ncd.Embedding(vocab="v", dim="m", name="E")
        >> add_positions(positions, "t") >> ncd.Dropout(dropout)
    )
    # E and its transpose stay in the model's own block: weight tying needs both in one module
    body = (
        embed
        >> ncd.repeat(block, "i", 0, "N", name="Blocks")
        >> ncd.LayerNorm("m", eps=eps)
        >> ncd.Unembed(vocab="v", dim="m", tied_to="E")
    )
    return model("GPT2", body, v=v, m=m, k=k, h=h, N=N, n=n, t=t)
