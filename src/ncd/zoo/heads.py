"""Scaled dot-product attention and multi-head attention (the paper's Figures 20 and 21).

Queries live on the item axis ``~y``, keys and values on ``~x``; heads are the ``h`` wire,
diagonalised (kept) through both contractions.

>>> import ncd.zoo
>>> d = ncd.zoo.multi_head_attention()
>>> str(d.dom), str(d.cod)
('y̅ m, x̅ m', 'y̅ m')
>>> str(ncd.zoo.multi_head_attention(self_attention=True, mask="causal").dom)
'x̅ m'
"""

from __future__ import annotations

from typing import Literal

import ncd
from ncd.errors import ParseError
from ncd.zoo._model import model

__all__ = ["attention", "multi_head_attention", "scaled_dot_product", "heads_attention", "Mask"]

Mask = Literal["causal", "padding"] | None


def scaled_dot_product(heads: str = "", mask: Mask = None) -> ncd.Diagram:
    """``softmax_x(Q·K / √k) · V`` on ``~y k H, ~x k H, ~x k H [, ~x [bool]] -> ~y k H`` (``H`` = ``heads``, maybe none).

    With ``mask="causal"`` key positions after the query are excluded (``y`` and ``x`` must be
    equal in size); with ``mask="padding"`` a last input ``~x [bool]`` marks the keys to attend to (false = padding).
    """
    h = f" {heads}" if heads else ""
    scores = ncd.Einsum(f"~y k{h}, ~x k{h} -> ~y ~x{h}") >> ncd.Scale("k**-0.5")
    if mask == "causal":
        scores = scores >> ncd.CausalMask(query="y", key="x")
    elif mask == "padding":
        scores = (scores @ ncd.Identity.of("~x [bool]")) >> ncd.PaddingMask(key="x")
    elif mask is not None:
        raise ParseError(f"attention mask {mask!r} is not known; use 'causal', 'padding' or None")
    weights = scores >> ncd.Softmax("~x")
    if mask == "padding":  # scores take (q, k, mask); move the mask next to the queries and keys
        weights = ncd.Identity.of(f"~y k{h}, ~x k{h}") @ ncd.Swap(f"~x k{h}, ~x [bool]") >> (weights @ ncd.Identity.of(f"~x k{h}"))
    else:
        weights = weights @ ncd.Identity.of(f"~x k{h}")
    return weights >> ncd.Einsum(f"~y ~x{h}, ~x k{h} -> ~y k{h}")


def attention(y: int = 8, x: int = 8, k: int = 64, *, mask: Mask = None) -> ncd.Block:
    """Scaled dot-product attention ``~y k, ~x k, ~x k -> ~y k`` (Figure 20).

    Sequence lengths ``y`` (queries) and ``x`` (keys) default to small values; ``k`` is the key depth.
    """
    return model("Attention", scaled_dot_product("", mask), y=y, x=x, k=k)


def heads_attention(*, self_attention: bool, bias: bool = True, mask: Mask = None, tokens: str = "x") -> ncd.Diagram:
    """Multi-head attention as a diagram, unfenced (the transformer's layers reuse it).

    Cross attention: ``~y m, ~x m -> ~y m``.  Self attention over the item axis ``tokens``:
    ``~t m -> ~t m``; inside, the queries' copy is called ``y`` and the keys' ``x``, so that the
    scores ``~y ~x h`` have two distinct item wires.  With a padding mask the last input is ``~x [bool]``.
    """
    def L(name: str, spec: str = "m -> k h") -> ncd.Diagram:
        return ncd.Linear(spec, bias=bias, name=name)

    def rename(old: str, new: str) -> ncd.Diagram:
        wires = ncd.Identity.of(f"~{old} m")
        return wires if old == new else wires >> ncd.Rename(f"~{old} -> ~{new}")

    if self_attention:
        t = tokens
        # each branch is fitted to its own wires: a weave around the whole tuple would put t on every output
        projections = ncd.Copy(f"~{t} m", 3) >> (rename(t, "y") >> L("Q")) @ (rename(t, "x") >> L("K")) @ (rename(t, "x") >> L("V"))
    else:
        keys = ncd.Identity.of("~x m")
        projections = (ncd.Identity.of("~y m") >> L("Q")) @ (ncd.Copy("~x m") >> (keys >> L("K")) @ (keys >> L("V")))
    projections = projections.block("Linear")
    if mask == "padding":
        projections = projections @ ncd.Identity.of("~x [bool]")
    body = projections >> scaled_dot_product("h", mask).block("ScaledDotProductAttention") >> L("O", "k h -> m")
    if self_attention:
        body = body >> rename("y", tokens)
    return body


def multi_head_attention(
    m: int = 512,
    k: int = 64,
    h: int = 8,
    y: int = 8,
    x: int = 8,
    *,
    self_attention: bool = False,
    bias: bool = True,
    mask: Mask = None,
) -> ncd.Block:
    """Multi-head attention of *Attention Is All You Need* (Figure 21).

    **L^Q**, **L^K**, **L^V** ``m -> k h``, scaled dot-product attention per head, **L^O** ``k h -> m``.

    ``m`` is the model width, ``k`` the depth per head, ``h`` the number of heads; ``y`` and
    ``x`` the query and key lengths (for self attention only ``x`` is used).  ``bias`` gives
    the four linear maps biases (**L₊**); ``mask`` is ``None``, ``"causal"`` or ``"padding"``.
    """
    body = heads_attention(self_attention=self_attention, bias=bias, mask=mask)
    sizes = {"m": m, "k": k, "h": h, "x": x} | ({} if self_attention else {"y": y})
    return model("MultiHeadAttention", body, **sizes)
