"""The sharding derivation's rules (:data:`ncd.ir.rules.DISTRIBUTED`): per box, ``(arrived, inputs, outputs, style)``.

Routing boxes (copy, delete, swap, rename, transpose) pass placements through; a sum keeps partial sums partial;
linear maps and einsums decide column- or row-parallel (:meth:`~ncd.distributed.derive._Deriver.linear`,
:meth:`~ncd.distributed.derive._Deriver.einsum`); norms are sequence-parallel along the axes their input is split
over; every other box acts on its own axes (gathered if split) and runs on the slices of the woven ones.  The rules
read the deriver's internals; the table loads this module on first use (``RuleTable(home=...)``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ncd.distributed.derive import Path, Wire
from ncd.ir.diagram import Box, Diagram
from ncd.ir.primitive import Primitive
from ncd.ir.rules import DISTRIBUTED
from ncd.prims.linear import EinsumOp, LinearOp
from ncd.prims.normalization import LayerNormOp, RMSNormOp
from ncd.prims.structure import AddOp, CopyOp, DeleteOp, RenameOp, SwapOp, TransposeOp

if TYPE_CHECKING:
    from ncd.distributed.derive import _Deriver

__all__ = ["BoxSharding"]


#: what a rule gives: the inputs as they came (partial sums reduced), as the box reads them, its outputs, and
#: the parallel style per mesh axis ("colwise" / "rowwise" / "sequence")
BoxSharding = tuple[list[Wire], list[Wire], list[Wire], dict[str, str]]


def _arrived(d: _Deriver, node: Diagram, core: Box, wires: list[Wire], path: Path) -> list[Wire]:
    """The inputs with pending partial sums reduced (every box but the routing ones and the sum needs whole values)."""
    return d.resolve(wires, node, path, f"before {core.text()}")


@DISTRIBUTED.rule(CopyOp)
def _copy(prim: CopyOp, d: _Deriver, node: Diagram, core: Box, wires: list[Wire], path: Path) -> BoxSharding:
    return wires, wires, list(wires) * prim.n, {}


@DISTRIBUTED.rule(DeleteOp)
def _delete(prim: DeleteOp, d: _Deriver, node: Diagram, core: Box, wires: list[Wire], path: Path) -> BoxSharding:
    return wires, wires, [], {}


@DISTRIBUTED.rule(SwapOp)
def _swap(prim: SwapOp, d: _Deriver, node: Diagram, core: Box, wires: list[Wire], path: Path) -> BoxSharding:
    return wires, wires, [wires[k] for k in prim.perm], {}


@DISTRIBUTED.rule(RenameOp)
def _rename(prim: RenameOp, d: _Deriver, node: Diagram, core: Box, wires: list[Wire], path: Path) -> BoxSharding:
    mapping = dict(zip(prim.segment.names, prim.names))
    w = wires[0]
    return wires, wires, [Wire(d.axes_of(node.cod[0]), tuple((m, mapping.get(s, s)) for m, s in w.place), w.src,
                               w.gathered)], {}


@DISTRIBUTED.rule(TransposeOp)
def _transpose(prim: TransposeOp, d: _Deriver, node: Diagram, core: Box, wires: list[Wire], path: Path) -> BoxSharding:
    return wires, wires, [Wire(d.axes_of(node.cod[0]), wires[0].place, wires[0].src, wires[0].gathered)], {}


@DISTRIBUTED.rule(AddOp)
def _add(prim: AddOp, d: _Deriver, node: Diagram, core: Box, wires: list[Wire], path: Path) -> BoxSharding:
    """A sum of partial sums stays partial: no reduction before it."""
    return wires, wires, [d.add(node, wires, path)], {}


@DISTRIBUTED.rule(LinearOp)
def _linear(prim: LinearOp, d: _Deriver, node: Diagram, core: Box, wires: list[Wire], path: Path) -> BoxSharding:
    arrived = _arrived(d, node, core, wires, path)
    ins, outs, style = d.linear(node, prim, arrived, path)
    return arrived, ins, outs, style


@DISTRIBUTED.rule(EinsumOp)
def _einsum(prim: EinsumOp, d: _Deriver, node: Diagram, core: Box, wires: list[Wire], path: Path) -> BoxSharding:
    arrived = _arrived(d, node, core, wires, path)
    ins, outs = d.einsum(node, prim, arrived, path)
    return arrived, ins, outs, {}


@DISTRIBUTED.rule(LayerNormOp, RMSNormOp)
def _norm(prim: LayerNormOp | RMSNormOp, d: _Deriver, node: Diagram, core: Box, wires: list[Wire],
          path: Path) -> BoxSharding:
    """Generic, and sequence-parallel along the axes its input is split over."""
    arrived = _arrived(d, node, core, wires, path)
    ins, outs = d.generic(node, core, arrived, path)
    return arrived, ins, outs, ({m: "sequence" for m, _ in ins[0].place} if any(w.place for w in ins) else {})


@DISTRIBUTED.by_kind("linear", "multilinear", "nonlinear", "structural",
                     what="acts on its own axes (gathered if split), runs on the slices of the woven ones")
def _generic(prim: Primitive, d: _Deriver, node: Diagram, core: Box, wires: list[Wire], path: Path) -> BoxSharding:
    arrived = _arrived(d, node, core, wires, path)
    ins, outs = d.generic(node, core, arrived, path)
    return arrived, ins, outs, {}
