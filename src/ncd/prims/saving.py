"""Save and load: the paper's ``→C_λ`` stores a tensor under a key (and an index, such as a repetition's ``λ``) and
passes it on; ``C_λ→`` brings it back later in the diagram, taking no input (the U-Net's skip connections, and the
caches of :mod:`ncd.inference`'s prefill and one-token step).

Structural boxes, imported with the others from :mod:`ncd.prims.structure`.

>>> import ncd
>>> skip = ncd.Save("c x", "C", "i") >> ncd.Identity.of("c x")
>>> [b.text() for b in skip.boxes()], str((ncd.Identity.of("c x") @ ncd.Load("c x", "C", "i")).cod)
(['→C_i'], 'c x, c x')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ncd.ir.axes import Type, TypeLike, as_type
from ncd.ir.diagram import Box, Identity, Par, Seq
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import BACKWARD, COST, IMPORT, LOWERING, BoxBackward
from ncd.ir.size import Size, SizeLike, evaluate, size, size_text

if TYPE_CHECKING:
    from ncd.analysis.backward import Builder
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.torch.rules import RuleContext

__all__ = ["SaveOp", "LoadOp", "Save", "Load"]


@dataclass(frozen=True)
class _Slot(Primitive):
    """A place in the store: ``key``, indexed by ``index`` (e.g. the repetition ``λ``), holding a tensor of ``type``."""

    type: Type
    key: str
    index: Size | None = None

    family: ClassVar[str] = "structure"
    kind: ClassVar[Kind] = "structural"

    def slot(self) -> str:
        return self.key if self.index is None else f"{self.key}_{size_text(self.index)}"


@dataclass(frozen=True)
class SaveOp(_Slot):
    """Store the input under ``key`` (indexed by ``index``, e.g. the repetition ``λ``) and pass it on."""

    op: ClassVar[str] = "save"

    def signature(self) -> tuple[Type, Type]:
        return self.type, self.type

    def label(self) -> str:
        return "→" + self.slot()


@dataclass(frozen=True)
class LoadOp(_Slot):
    """Bring back the tensor stored under ``key`` (and ``index``); it takes no input.

    Put it beside the wires passing through: ``Identity.of("c x") @ Load("c x", "C", i)``.
    """

    op: ClassVar[str] = "load"

    def signature(self) -> tuple[Type, Type]:
        return Type(()), self.type

    def label(self) -> str:
        return self.slot() + "→"


# -- constructors ------------------------------------------------------------------------
def Save(type_: TypeLike, key: str, index: SizeLike | None = None) -> Box:
    """``→ C_λ``: store the tensor for a later :func:`Load` (the U-Net's skip connections)."""
    return Box.make(SaveOp(as_type(type_), key, None if index is None else size(index)))


def Load(type_: TypeLike, key: str, index: SizeLike | None = None) -> Box:
    """``C_λ →``: bring back a tensor stored by :func:`Save` (it takes no input)."""
    return Box.make(LoadOp(as_type(type_), key, None if index is None else size(index)))


# -- lowering: the module's ``store`` dict, one slot per key and index ------------------
def _lowered_slot(ctx: RuleContext, key: str, index: Size | None) -> str:
    if index is None:
        return repr(key)
    return repr(f"{key}_{evaluate(index, what='save/load index')}")


@LOWERING.rule(SaveOp)
def lower_save(prim: SaveOp, ctx: RuleContext) -> list[str]:
    if len(ctx.args) != 1:
        ctx.em.line(f"store[{_lowered_slot(ctx, prim.key, prim.index)}] = ({', '.join(v.var for v in ctx.args)})")
    else:
        ctx.em.line(f"store[{_lowered_slot(ctx, prim.key, prim.index)}] = {ctx.args[0].var}")
    return [v.var for v in ctx.args]


@LOWERING.rule(LoadOp)
def lower_load(prim: LoadOp, ctx: RuleContext) -> list[str]:
    slot = _lowered_slot(ctx, prim.key, prim.index)
    if len(prim.type) == 1:
        return [f"store[{slot}]"]
    return [f"store[{slot}][{k}]" for k in range(len(prim.type))]


# -- costs and backward ------------------------------------------------------------------------
@COST.rule(SaveOp)
def cost_save(prim: SaveOp, ctx: CostContext) -> list[Tensor]:
    ctx.walker.store[prim.slot()] = list(ctx.inputs)
    return list(ctx.inputs)


@COST.rule(LoadOp)
def cost_load(prim: LoadOp, ctx: CostContext) -> list[Tensor]:
    slot = prim.slot()
    stored = ctx.walker.store.get(slot)
    if stored is None:
        return [ctx.new(axes, grad=False) for axes in ctx.out_axes]
    return [t.relabel(axes) for t, axes in zip(stored, ctx.out_axes)]


@BACKWARD.rule(SaveOp)
def backward_save(prim: SaveOp, box: Box, builder: Builder) -> BoxBackward:
    """``∂x = g + Σ`` the cotangents of every load of this slot (saved by their backward, which runs first)."""
    from ncd.prims.structure import AddOp, cot, route, woven_scalar  # structure imports this module

    t = cot(prim.type)
    keys = builder.saved_keys(prim.slot())
    if not keys or not len(t):
        return BoxBackward((), Identity(t))
    loads = [Box(LoadOp(t, key)) for key in keys]
    n = len(keys) + 1
    k = len(t)
    picks = [c * k + s for s in range(k) for c in range(n)]
    adds = [woven_scalar(Box(AddOp(n)), seg) for seg in t]
    return BoxBackward((), Seq.of(Par.of(Identity(t), *loads), route(list(t) * n, picks), Par.of(*adds)))


@BACKWARD.rule(LoadOp)
def backward_load(prim: LoadOp, box: Box, builder: Builder) -> BoxBackward:
    """A load's cotangent is saved for the matching save's backward."""
    from ncd.prims.structure import DeleteOp, cot  # structure imports this module

    t = cot(prim.type)
    if not len(t):
        return BoxBackward((), Identity(Type(())))
    key = builder.load_key(prim.slot())
    return BoxBackward((), Seq.of(Box(SaveOp(t, key)), Box(DeleteOp(t))))


# -- import ----------------------------------------------------------------------------------
for _cls in (SaveOp, LoadOp):
    IMPORT.unsupported(_cls, "caches of the decode passes (ncd.decode), built from a diagram, never traced")
