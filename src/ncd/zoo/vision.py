"""Attention on images: the vision transformer (ViT) and the visual attention of the paper's Figure 28.

An image is ``c h w`` (channels first); its two item axes ``h w`` are the figure's double wire.
"""

from __future__ import annotations

import ncd
from ncd.zoo._model import model
from ncd.zoo.heads import heads_attention, scaled_dot_product
from ncd.zoo.transformers import add_positions, feed_forward, sublayer

__all__ = ["vit", "visual_attention"]


def visual_attention(c: int = 64, k: int = 64, h: int = 8, w: int = 8) -> ncd.Block:
    """Visual attention (Figure 28): 1×1 convolutions **L^Q**, **L^K**, **L^V** ``c -> k`` on every pixel, scaled
    dot-product attention of the query image's pixels ``~y`` over the key image's pixels ``~x``, and a 1×1 **L^O** back to ``c``.

    Both images are ``c h w``; ``k`` is the attention depth.
    """
    def conv(name: str, a: str, b: str) -> ncd.Diagram:
        return ncd.Conv(f"{a} h w -> {b} h w", kernel=1, name=name)

    def pixels(item: str) -> ncd.Diagram:  # k h w -> ~item k: the pixels become one item wire
        return ncd.Identity.of("k h w") >> ncd.Bind(f"h w -> ~{item}") >> ncd.Transpose(f"k {item} -> {item} k")

    query = conv("Q", "c", "k") >> pixels("y")
    keys = ncd.Copy("c h w") >> (conv("K", "c", "k") >> pixels("x")) @ (conv("V", "c", "k") >> pixels("x"))
    out = (
        ncd.Transpose("y k -> k y") >> ncd.Unbind("y -> h w") >> conv("O", "k", "c")
    )
    body = (query @ keys).block("Linear") >> scaled_dot_product().block("ScaledDotProductAttention") >> out
    return model("VisualAttention", body, c=c, k=k, h=h, w=w)


def vit(
    c: int = 3, x: int = 32, p: int = 16, m: int = 768, k: int = 64, heads: int = 12, N: int = 12, f: int = 3072,
    n: int = 1000, *, eps: float = 1e-12, dropout: float = 0.0,
) -> ncd.Block:
    """ViT-Base: patch embedding (strided ``★p`` + **L₊**), class token **C**, learned positions **P**, ``N`` pre-norm
    encoder layers (GELU), final layer norm and a linear head on the class token to ``n`` classes.

    The image is ``c row col`` (``row`` and ``col`` of size ``x``, so that ``h`` stays the number of heads);
    ``x`` is its size, divisible by the patch size ``p`` (a structural constant of ``★``; 224 in the
    paper, 32 by default); ``m`` the width, ``heads`` the number of heads, ``f`` the feed-forward width.
    """
    if x % p:
        raise ncd.SizeError(f"vit: the image size x={x} must be divisible by the patch size p={p}")
    patches = (
        ncd.Identity.of("c row:x col:x") >> ncd.ConvolutionTensor("row col", p, stride=p, kernel_axes="i j")
        >> ncd.Transpose("c row col i j -> row col c i j") >> ncd.Linear("c i j -> m", bias=True)
        >> ncd.Bind("row col -> ~t")
    )
    token = ncd.Parameter("~o:1 m", name="C")
    positions = ncd.Parameter("~s m", name="P")
    embed = (token @ patches >> ncd.Concat("~o:1, ~t -> ~s") >> add_positions(positions, "s") >> ncd.Dropout(dropout))
    layer = (
        sublayer(heads_attention(self_attention=True, tokens="s"), "s", dropout, eps)
        >> sublayer(feed_forward(ncd.GELU()), "s", dropout, eps)
    ).block("EncoderLayer")
    head = (
        ncd.Identity.of("~s m") >> ncd.LayerNorm("m", eps=eps) >> ncd.Index("~s", 0) >> ncd.Linear("m -> n", bias=True)
    ).block("Head")
    body = embed.block("Embeddings") >> ncd.repeat(layer, "i", 0, "N", name="Encoder") >> head
    return model("ViT", body, c=c, x=x, m=m, k=k, h=heads, N=N, f=f, n=n)
