"""Index computations the importer meets: gather along an axis, argmax, comparisons, casts.

These are the boxes ``ncd.trace`` needs for pooling on a data-dependent position (CLIP's
end-of-text token: ``x[arange(b), (ids == eos).int().argmax(-1)]``).  Each acts on few
axes and is woven over the rest, like an embedding:

* ``Gather("t")`` takes a float segment ``t`` and an index segment ``[t]`` and gives the
  entry at that position: ``"t, [t] -> ()"``.  Woven over ``b`` on both inputs (a
  diagonal) and over ``m`` on the first only, it is ``x[b, i[b], m]``.  With positions
  ``"j [t]"`` it takes several entries (``"t, j [t] -> j"``).
* ``Scatter("t", 1.0, "j [t]")`` writes a number at positions: ``"t, j [t] -> t"`` (a router's group mask,
  ``zeros.scatter_(1, i, 1)``); woven over ``b`` on both inputs it is ``x[b, i[b, j]] = 1``.
* ``ArgMax("t")`` gives the position of the largest entry: ``"t -> [t]"`` (the first one
  on ties, as torch does); the input may be float, index or bool.
* ``Compare("==", 3, "[v]")`` compares a scalar with a number and gives a bool; ``Cast``
  reads a scalar segment as another dtype (``bool -> [2]``, ``[v] -> ()``).
* a binary operator between a scalar and a Python number (``1 - x``, ``ids * 3 + 1``) is
  :mod:`ncd.prims.arithmetic`'s ``Arithmetic``.

They are drawn as labelled boxes (family ``opaque``, the importer's family).

>>> import ncd
>>> from ncd.prims.gather import ArgMax, Cast, Compare, Gather, Scatter
>>> str((ncd.Identity.of("b t m, b [t]") >> Gather("t")).cod)
'b m'
>>> str((ncd.Identity.of("b t [50]") >> Compare("==", 7, "[50]") >> Cast("bool", "[2]") >> ArgMax("t [2]")).cod)
'b [t]'
>>> str((ncd.Identity.of("b t, b j [t]") >> Scatter("t", 1.0, "j [t]")).cod)
'b t'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import sympy

from ncd.errors import ParseError, SizeError, derived_size
from ncd.ir.axes import SCALAR, Axis, Dtype, Segment, Type, TypeLike, as_type, parse_axis
from ncd.ir.diagram import Box, Diagram, Identity, Seq
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import BACKWARD, COST, IMPORT, LOWERING, BoxBackward
from ncd.ir.size import Size, size_text, sizes_equal
from ncd.prims.gather_derivative import GatherTranspose as GatherTranspose
from ncd.prims.gather_derivative import GatherTransposeOp as GatherTransposeOp
from ncd.prims.gather_derivative import cost_scatter_add as cost_scatter_add
from ncd.prims.kinds import transpose
from ncd.prims.structure import DeleteOp, ZerosOp, cot, route

if TYPE_CHECKING:
    from ncd.analysis.backward import Builder
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.prims.arithmetic import ArithmeticOp
    from ncd.torch.rules import RuleContext


__all__ = ["GatherOp", "ScatterOp", "Scatter", "ArgMaxOp", "CompareOp", "CastOp", "Gather", "ArgMax", "Compare", "Cast",
           "RELATIONS"]

#: comparison relations and their torch operators
RELATIONS = {"==": "eq", "!=": "ne", "<": "lt", "<=": "le", ">": "gt", ">=": "ge"}


@dataclass(frozen=True)
class GatherOp(Primitive):
    """The entry of ``axis`` at the positions of an index segment ``positions`` (range: the axis' size).

    ``dtype``/``range``: what the gathered tensor holds (integers keep their range: RoBERTa's token-type buffer read at
    the position ids); only floats carry a gradient.  ``wraps``: a negative position counts from the end, as indexing
    does (``x[i]``); ``torch.gather`` raises on it instead.  Past either end, both raise."""

    axis: Axis
    positions: Segment
    dtype: Dtype = "float"
    range: Size | None = None
    wraps: bool = True

    op: ClassVar[str] = "gather"
    family: ClassVar[str] = "opaque"
    kind: ClassVar[Kind] = "linear"

    def __post_init__(self) -> None:
        rng = self.positions.range
        if self.positions.dtype != "index" or rng is None or not sizes_equal(rng, self.axis.size):
            raise derived_size(SizeError(
                f"gather along axis {self.axis.name} of size {size_text(self.axis.size)}: the positions"
                f" '{self.positions}' must be an index segment with range [{size_text(self.axis.size)}]"),
                *([(None, rng, self.axis.size), (self.axis.name, self.axis.size, rng)] if rng is not None else []))
        if self.axis.name in self.positions.names:
            raise ParseError(f"gather along axis {self.axis.name}: the positions '{self.positions}' reuse its name")
        if isinstance(self.range, int):
            object.__setattr__(self, "range", sympy.Integer(self.range))
        Segment((), self.dtype, self.range)  # a range exactly for integers

    def signature(self) -> tuple[Type, Type]:
        return (Type((Segment((self.axis,), self.dtype, self.range), self.positions)),
                Type((Segment(self.positions.axes, self.dtype, self.range),)))

    def label(self) -> str:
        return f"gather {self.axis.name}"


@dataclass(frozen=True)
class ScatterOp(Primitive):
    """``x`` with the entries of ``axis`` at the positions of an index segment ``positions`` set to ``value``
    (``torch.scatter(x, dim, i, value)``; the positions' own axes, ``J``, are the positions written)."""

    axis: Axis
    positions: Segment
    value: float | bool
    dtype: Dtype = "float"  # what ``x`` holds: numbers, or flags (``bool``, set to a bool ``value``: a mask)

    op: ClassVar[str] = "scatter"
    family: ClassVar[str] = "opaque"
    kind: ClassVar[Kind] = "nonlinear"

    def __post_init__(self) -> None:
        GatherOp(self.axis, self.positions)  # the same checks as a gather at those positions
        if self.dtype == "bool":
            if not isinstance(self.value, bool):
                raise ParseError(f"scatter along axis {self.axis.name}: flags are set to True or False, not {self.value!r}")
        elif self.dtype != "float":
            raise ParseError(f"scatter along axis {self.axis.name}: writes into numbers or flags, not {self.dtype} values")
        elif isinstance(self.value, bool) or not isinstance(self.value, (int, float)):
            raise ParseError(f"scatter along axis {self.axis.name}: {self.value!r} is not a number")

    def signature(self) -> tuple[Type, Type]:
        x = Segment((self.axis,), self.dtype)
        return Type((x, self.positions)), Type((x,))

    def label(self) -> str:
        value = self.value if isinstance(self.value, bool) or not float(self.value).is_integer() else int(self.value)
        return f"{self.axis.name}[i] ← {value}"


@dataclass(frozen=True)
class ArgMaxOp(Primitive):
    """The position of the largest entry of a one-axis segment ``source`` (first on ties)."""

    source: Segment

    op: ClassVar[str] = "argmax"
    family: ClassVar[str] = "opaque"
    kind: ClassVar[Kind] = "nonlinear"

    def __post_init__(self) -> None:
        if len(self.source.axes) != 1:
            raise ParseError(f"argmax takes one axis, not '{self.source}'")

    def signature(self) -> tuple[Type, Type]:
        return Type((self.source,)), Type((Segment((), "index", self.source.axes[0].size),))

    def label(self) -> str:
        return f"argmax {self.source.axes[0].name}"


@dataclass(frozen=True)
class CompareOp(Primitive):
    """``x <relation> value`` for a scalar segment ``source`` (float or index): a bool."""

    relation: str
    value: float
    source: Segment

    op: ClassVar[str] = "compare"
    family: ClassVar[str] = "opaque"
    kind: ClassVar[Kind] = "nonlinear"

    def __post_init__(self) -> None:
        if self.relation not in RELATIONS:
            raise ParseError(f"compare: unknown relation {self.relation!r}; known: {' '.join(RELATIONS)}")
        if self.source.axes or self.source.dtype == "bool":
            raise ParseError(f"compare takes a scalar float or index segment, not '{self.source}'")
        if isinstance(self.value, bool) or not isinstance(self.value, (int, float)):
            raise ParseError(f"compare: {self.value!r} is not a number")

    def signature(self) -> tuple[Type, Type]:
        return Type((self.source,)), Type((Segment((), "bool"),))

    def label(self) -> str:
        value = int(self.value) if float(self.value).is_integer() else self.value
        return f"{self.relation} {value}"


@dataclass(frozen=True)
class CastOp(Primitive):
    """A scalar read as another dtype: ``bool -> [2]`` (0/1), ``[v] -> ()`` (a float), ``() -> bool``, ...

    ``width`` is the integer type of an index result when it is not ``int64`` (``"int32"``, ``"int16"``, ``"int8"``,
    ``"uint8"``): ``[v] -> [v]`` of that width is the model's ``.int()`` of its ``int64`` positions (the same values,
    but arithmetic after it wraps around where ``int64``'s does not, and its result is an ``int32`` tensor); or the
    type of a float result when it is not torch's default (``"float16"``, ``"bfloat16"``, ``"float64"``,
    ``"float32"``): a float16 model's ``mask.to(h.dtype)``, which the values after it are computed in.

    A float read as another float type (``x.half()``, ``x.to(torch.float64)``: ``() -> ()``, ``width`` the result's
    type) rounds its values; ``from_width`` is the type it reads (empty: torch's default), which its backward casts
    the cotangent back to, as autograd does.
    """

    source: Segment
    target: Segment
    width: str = ""
    from_width: str = ""

    op: ClassVar[str] = "cast"
    family: ClassVar[str] = "opaque"
    kind: ClassVar[Kind] = "nonlinear"

    def __post_init__(self) -> None:
        if self.source.axes or self.target.axes:
            raise ParseError(f"cast takes scalar segments, not '{self.source}' -> '{self.target}'")
        if self.width and self.width not in {"index": WIDTHS, "float": FLOAT_WIDTHS}.get(self.target.dtype, ()):
            raise ParseError(f"cast: width {self.width!r} is an index result's integer type, one of {' '.join(WIDTHS)},"
                             f" or a float result's type, one of {' '.join(FLOAT_WIDTHS)}")
        if self.from_width and (self.source.dtype != "float" or self.from_width not in FLOAT_WIDTHS):
            raise ParseError(f"cast: from_width {self.from_width!r} is a float source's type, one of"
                             f" {' '.join(FLOAT_WIDTHS)}")

    def signature(self) -> tuple[Type, Type]:
        return Type((self.source,)), Type((self.target,))

    def label(self) -> str:
        return "cast"


#: integer types of an index result other than int64 (:class:`CastOp`'s ``width``)
WIDTHS = ("int32", "int16", "int8", "uint8")
#: float types of a float result (:class:`CastOp`'s ``width``; empty: torch's default when the module runs)
FLOAT_WIDTHS = ("float16", "bfloat16", "float32", "float64")


def _scalar(value: TypeLike, what: str) -> Segment:
    if isinstance(value, str) and value.strip() in ("", "float"):
        return SCALAR
    if isinstance(value, str) and value.strip() == "bool":
        return Segment((), "bool")
    typ = as_type(value)
    if len(typ) != 1:
        raise ParseError(f"{what} takes one segment, not '{typ}'")
    return typ[0]


def Gather(axis: str | Axis, positions: TypeLike = "") -> Box:
    """Take entries along ``axis`` at the positions of an index segment (default: one position, ``[axis]``)."""
    ax = parse_axis(axis) if isinstance(axis, str) else axis
    pos = _scalar(positions, "gather") if positions else Segment((), "index", ax.size)
    return Box.make(GatherOp(ax, pos if pos.dtype != "float" else Segment(pos.axes, "index", ax.size)))


def Scatter(axis: str | Axis, value: float | bool, positions: TypeLike = "") -> Box:
    """Set the entries along ``axis`` at the positions of an index segment (default: one position, ``[axis]``) to
    ``value``: ``"t, j [t] -> t"`` (``torch.scatter`` with a number); a bool ``value`` writes into flags
    (``"t [bool], j [t] -> t [bool]"``: a mask of the positions)."""
    gather = Gather(axis, positions).prim
    assert isinstance(gather, GatherOp)
    return Box.make(ScatterOp(gather.axis, gather.positions, value, "bool" if isinstance(value, bool) else "float"))


def ArgMax(source: TypeLike) -> Box:
    """The position of the largest entry along the one axis of ``source`` (e.g. ``"t"``, ``"t [2]"``, ``"t [bool]"``)."""
    return Box.make(ArgMaxOp(_scalar(source, "argmax")))


def Compare(relation: str, value: float, source: TypeLike = "") -> Box:
    """``x == value`` (or ``!= < <= > >=``) for a scalar segment ``source`` (``""``: a float, ``"[v]"``: an index)."""
    return Box.make(CompareOp(relation, value, _scalar(source, "compare")))


def Cast(source: TypeLike, target: TypeLike) -> Box:
    """A scalar read as another dtype: ``Cast("bool", "[2]")``, ``Cast("[v]", "")``."""
    return Box.make(CastOp(_scalar(source, "cast"), _scalar(target, "cast")))


# -- import recognition (ncd.trace) ------------------------------------------------------------
IMPORT.known(GatherOp, aten=("aten.index",))
IMPORT.known(ScatterOp, aten=("aten.scatter",))
IMPORT.known(ArgMaxOp, aten=("aten.argmax",))
IMPORT.known(CompareOp, aten=("aten.eq", "aten.ne", "aten.lt", "aten.le", "aten.gt", "aten.ge"))
IMPORT.known(CastOp, aten=("aten.to", "aten._to_copy"))


# -- lowering ----------------------------------------------------------------------------------
_TORCH_DTYPE = {"index": "torch.long", "bool": "torch.bool"}


@LOWERING.rule(GatherOp)
def lower_gather(prim: GatherOp, ctx: RuleContext) -> list[str]:
    """``x[..., t]`` at positions ``i[..., J]``: both broadcast over the leading (woven) dimensions, then ``gather``
    (which raises on a position past the axis, as the model's ``gather`` or indexing does; ``take_along_dim`` checks no
    bounds); a negative position counts from the end where the prim ``wraps``."""
    x, positions = ctx.args[0].var, ctx.args[1].var
    n = len(prim.positions.axes)
    spread = x
    if n:
        spread = ctx.em.fresh("spread")
        ctx.em.line(f"{spread} = {x}[(..., {'None, ' * n}slice(None))]")
    if prim.wraps:
        at = ctx.em.fresh("at")
        ctx.em.line(f"{at} = {positions}.where({positions} >= 0, {positions} + {spread}.shape[-1])")
        positions = at
    lead = ctx.em.fresh("lead")
    ctx.em.line(f"{lead} = torch.broadcast_shapes({spread}.shape[:-1], {positions}.shape)")
    return [f"torch.gather({spread}.expand(*{lead}, {spread}.shape[-1]), -1,"
            f" {positions}.expand({lead}).unsqueeze(-1)).squeeze(-1)"]


@LOWERING.rule(ScatterOp)
def lower_scatter(prim: ScatterOp, ctx: RuleContext) -> list[str]:
    """``x.scatter(-1, i, value)`` with the positions' axes flattened and both broadcast over the woven axes in front."""
    x, positions = ctx.args[0].var, ctx.args[1].var
    n = len(prim.positions.axes)
    i = ctx.em.fresh("positions")
    ctx.em.line(f"{i} = {positions}.flatten(-{n})" if n else f"{i} = {positions}.unsqueeze(-1)")
    lead = ctx.em.fresh("lead")
    ctx.em.line(f"{lead} = torch.broadcast_shapes({x}.shape[:-1], {i}.shape[:-1])")
    value = str(prim.value) if isinstance(prim.value, bool) else number_text(float(prim.value))
    return [f"{x}.expand(*{lead}, {x}.shape[-1]).scatter(-1, {i}.expand(*{lead}, {i}.shape[-1]), {value})"]


@LOWERING.rule(ArgMaxOp)
def lower_argmax(prim: ArgMaxOp, ctx: RuleContext) -> list[str]:
    x = ctx.args[0].var
    if prim.source.dtype == "bool":  # torch's argmax takes no bools
        x = f"{x}.to(torch.uint8)"
    return [f"torch.argmax({x}, dim=-1)"]


@LOWERING.rule(CompareOp)
def lower_compare(prim: CompareOp, ctx: RuleContext) -> list[str]:
    value = float(prim.value)
    text = repr(int(value)) if value.is_integer() and prim.source.dtype == "index" else number_text(value)
    return [f"torch.{RELATIONS[prim.relation]}({ctx.args[0].var}, {text})"]


@LOWERING.rule(CastOp)
def lower_cast(prim: CastOp, ctx: RuleContext) -> list[str]:
    x = ctx.args[0].var
    dtype = f"torch.{prim.width}" if prim.width else _TORCH_DTYPE.get(prim.target.dtype)
    return [f"{x}.to({dtype})" if dtype else f"{x}.to(torch.get_default_dtype())"]


def number_text(value: float | int | bool) -> str:
    """A Python number as source (``float('inf')``, ``(-2)``)."""
    if isinstance(value, float) and value != value or value in (float("inf"), float("-inf")):
        return f"float('{value}')"
    text = repr(value)
    return f"({text})" if text.startswith("-") else text


# -- costs and backward ------------------------------------------------------------------------
# -- index computations (ncd.prims.gather) -------------------------------------------------
@COST.rule(GatherOp)
def cost_gather(prim: GatherOp, ctx: CostContext) -> list[Tensor]:
    """``gather`` counts no FLOPs; for the backward scatter autograd keeps the tensor and the positions it read at
    (broadcast views of them: the positions themselves, or where negative ones count from the end, a new integer
    tensor of their shape)."""
    x, i = ctx.inputs
    if x.grad:
        ctx.save(x, ctx.new(i.axes, grad=False, dtype="index") if prim.wraps else i)
    return [ctx.new(ctx.out_axes[0], grad=x.grad, dtype=x.dtype)]


@COST.rule(ScatterOp)
def cost_scatter(prim: ScatterOp, ctx: CostContext) -> list[Tensor]:
    """A copy of ``x`` with entries written: no FLOPs counted; for the backward (the cotangent with the written entries
    zeroed) autograd keeps the positions."""
    x, i = ctx.inputs
    if x.grad:
        ctx.save(i if i.contiguous else ctx.new(i.axes, grad=False, dtype="index"))
    return [ctx.new(ctx.out_axes[0], grad=x.grad, dtype=x.dtype)]


@BACKWARD.rule(ScatterOp)
def backward_scatter(prim: ScatterOp, box: Box, builder: Builder) -> BoxBackward:
    """The written entries take no gradient: the cotangent with zeros scattered at the stored positions (flags have
    no cotangent)."""
    if prim.dtype != "float":
        return BoxBackward((), Identity(Type(())))
    segments = [prim.positions, Segment((prim.axis,))]
    return BoxBackward((("in", 1),), Seq.of(route(segments, [1, 0]), Box(ScatterOp(prim.axis, prim.positions, 0.0))))


@COST.rule(ArgMaxOp, CompareOp, CastOp)
def cost_index_computation(prim: ArgMaxOp | CompareOp | CastOp, ctx: CostContext) -> list[Tensor]:
    """Argmax, comparisons and casts of scalars: no FLOPs, nothing kept (no gradient flows through them); a cast from
    float to float keeps nothing either, and its gradient flows (its backward is a cast back)."""
    if isinstance(prim, CastOp) and _floats(prim):
        x = ctx.inputs[0]
        return [ctx.new(ctx.out_axes[0], grad=x.grad, dtype="float")]
    return [ctx.new(ctx.out_axes[0], grad=False, dtype=ctx.box.cod[0].dtype)]


def _floats(prim: CastOp) -> bool:
    """Whether a cast reads a float and gives one (another float type, or the same)."""
    return prim.source.dtype == "float" and prim.target.dtype == "float"


@transpose(GatherOp, stored=lambda prim: (1,) if prim.dtype == "float" else ())
def transpose_gather(prim: GatherOp, box: Box) -> Diagram:
    """``gather tᵀ``: the cotangent added back at the stored positions (which get no gradient); a gather of integers has
    no cotangent (and stores nothing)."""
    if prim.dtype != "float":
        return Identity(Type(()))
    return Box(GatherTransposeOp(prim.axis, prim.positions, prim.wraps))


@BACKWARD.rule(ArgMaxOp, CompareOp, CastOp)
def backward_index_computation(prim: ArgMaxOp | CompareOp | CastOp | ArithmeticOp, box: Box, builder: Builder) -> BoxBackward:
    """No gradient flows through an index or a bool: float inputs get zeros, a float output's cotangent is deleted.

    A cast between two float segments (``() -> ()``) casts the cotangent back to the type it read (autograd's
    ``ToCopyBackward``): of ``x.half()`` in a float32 model, a float32 gradient.  A floor division of a float by a
    number (``x // c``, a step function) has derivative 0 wherever it has one: zeros, as ``torch.floor``'s gradient.
    """
    into, out = cot(box.dom), cot(box.cod)
    if isinstance(prim, CastOp) and _floats(prim):
        return BoxBackward((), Box(CastOp(prim.target, prim.source, prim.from_width, prim.width)))
    parts: list[Diagram] = []
    if len(out):
        parts.append(Box(DeleteOp(out)))
    if len(into):
        parts.append(Box(ZerosOp(into)))
    return BoxBackward((), Seq.of(*parts) if parts else Identity(out))
