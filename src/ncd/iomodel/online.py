"""``ncd.online_softmax``: softmax-then-contraction rewritten into the streamable online form.

``softmax_x(s) · v`` summed over ``x`` is not streamable along ``x`` as written: the softmax
needs every score before it can normalise one.  The online form carries a state
``(m, ℓ, o)`` — running max, rescaled running sum and rescaled output — and for a new chunk
``x₂`` after ``x₁``::

    m' = max(m, max_x₂ s)      ℓ' = ℓ e^(m−m') + Σ_x₂ e^(s−m')      o' = o e^(m−m') + Σ_x₂ e^(s−m') v

with the result ``o / ℓ`` after the last chunk: an accumulator, so ``x`` may be streamed.

The rewrite fences each softmax with the contraction that consumes it in a block named
``"online softmax"`` whose ``meta['key']`` is the streamed axis.  The block computes the same
function (its plain lowering is the softmax and the einsum); the IO model treats it as one
operation with the online state, and :mod:`ncd.iomodel.lower` runs it chunk by chunk.

>>> import ncd
>>> att = ncd.zoo.attention()
>>> on = ncd.online_softmax(att)
>>> [b.get("key") for b in on.walk() if isinstance(b, ncd.Block) and b.name == "online softmax"]
['x']
>>> str(on.dom) == str(att.dom) and str(on.cod) == str(att.cod)
True
"""

from __future__ import annotations

from ncd.iomodel.program import ONLINE
from ncd.ir.axes import Type
from ncd.ir.diagram import Block, Box, Diagram, Identity, Par, Seq, unweave
from ncd.ir.interpreter import Rebuild
from ncd.prims.linear import EinsumOp
from ncd.prims.softmax import SoftmaxOp

__all__ = ["online_softmax", "online_blocks"]


def _softmax_axis(d: Diagram) -> str | None:
    core, _ = unweave(d)
    if isinstance(core, Box) and isinstance(core.prim, SoftmaxOp) and not core.prim.log:
        return core.prim.axis.name
    return None


def _split_last(d: Diagram) -> tuple[Diagram, Diagram] | None:
    """``d`` as ``rest >> softmax`` when it ends in a (woven) softmax."""
    if _softmax_axis(d):
        return Identity(d.dom), d
    if isinstance(d, Seq) and _softmax_axis(d.parts[-1]):
        return Seq.of(*d.parts[:-1]) if len(d.parts) > 2 else d.parts[0], d.parts[-1]
    return None


def _fuse(left: Diagram, einsum: Diagram) -> tuple[Diagram, Diagram] | None:
    """``left >> einsum`` with a softmax ending one of left's segments, contracted by the einsum."""
    core, _ = unweave(einsum)
    if not (isinstance(core, Box) and isinstance(core.prim, EinsumOp)) or len(einsum.dom) != 2:
        return None
    parts = list(left.parts) if isinstance(left, Par) else [left]
    offset = 0
    for j, part in enumerate(parts):
        n = len(part.cod)
        split = _split_last(part) if n == 1 else None
        if split is not None:
            axis = _softmax_axis(split[1])
            if axis in core.prim.contracted:
                rest, soft = split
                pieces = [soft if s == offset else Identity(Type((einsum.dom[s],))) for s in range(2)]
                body = Seq.of(Par.of(*pieces), einsum)
                block = Block(body, ONLINE, (("key", axis),))
                parts[j] = rest
                return Par.of(*parts) if len(parts) > 1 else parts[0], block
        offset += n
    return None


def online_softmax(diagram: Diagram) -> Diagram:
    """Rewrite every softmax-then-contraction of ``diagram`` into the streamable online form.

    The result computes the same function (equal when lowered); streaming the key axis
    through it is then legal in :func:`ncd.io`.  Diagrams with no such pattern come back
    unchanged.
    """
    return _Online().fold(diagram)


class _Online(Rebuild):
    """The rewrite as a :class:`~ncd.ir.interpreter.Rebuild`: sequences fuse adjacent parts, online blocks stay."""

    def seq(self, node: Seq) -> Diagram:
        out: list[Diagram] = []
        for p in [self.fold(p) for p in node.parts]:
            if out:
                fused = _fuse(out[-1], p)
                if fused is not None:
                    out[-1] = fused[0]
                    out.append(fused[1])
                    continue
            out.append(p)
        return Seq.of(*out)

    def block(self, node: Block) -> Diagram:
        return node if node.name == ONLINE else super().block(node)


def online_blocks(diagram: Diagram) -> list[Block]:
    """The online-softmax blocks of ``diagram``."""
    return [b for b in diagram.walk() if isinstance(b, Block) and b.name == ONLINE]
