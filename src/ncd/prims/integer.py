"""Arithmetic between two integer (or boolean) tensors, entry by entry: ``a ∘ b``; and ``one_hot``.

The importer meets it in index plumbing: RoBERTa's position ids ``(cumsum(mask) + past) * mask``, ``k // 2 - ids % 3``.
``IndexArithmetic("*", "[9]", "[2]", "[9]")`` has scalar domains ``[9], [2] -> [9]``: composed after two tensors it is
woven over their axes, and an axis only one of them carries is broadcast, like :func:`ncd.Divide`.  The operand with a
Python number is :class:`ncd.prims.arithmetic.ArithmeticOp`; a float tensor with an integer one is a cast and the float
operation (:mod:`ncd.trace.boxes_complex`).  No gradient flows through integers; it is drawn as its label in a box,
like the importer's other index computations (family ``opaque``).

>>> import ncd
>>> from ncd.prims.integer import IndexArithmetic
>>> d = ncd.Identity.of("b t [9], b t [2]") >> IndexArithmetic("*", "[9]", "[2]", "[9]")
>>> str(d.cod)
'b t [9]'
>>> IndexArithmetic("//", "[9]", "[3]").prim.label()
'//'

``OneHot("e:4")`` reads a position ``[4]`` as a row of ``e`` zeros and ones (``F.one_hot``: a router's chosen
expert, ``"[4] -> e:4 [2]"``).

>>> str((ncd.Identity.of("t [4]") >> OneHot("e:4")).cod)
't e:4 [2]'

``IndexUnary("abs", "[9]")`` is ``|i|`` (``"neg"``: ``−i``) of integers, entry by entry, of the same range (a bound on
``|i|``): the relative-position buckets of T5's kind, ``n = torch.abs(j - i)``, over positions read from the input.

>>> str((ncd.Identity.of("b t tʹ [9]") >> IndexUnary("abs", "[9]")).cod), IndexUnary("neg", "[9]").prim.label()
('b t tʹ [9]', '−')

``Bucket("[9]", 16, 8, math.log(16), 8, 15)`` is T5's relative-position bucket of a distance ``n`` (``[9]``), entry by
entry: ``16·(n > 0) + (|n| if |n| < 8 else min(8 + trunc(log(|n|/8) / log 16 · 8), 15))`` in float32 as T5 computes
it (the bucket's last term over ``max_distance``), read from the input where the distances are (LayoutLMv3's box
coordinates): ``[32]``, the rows of the bias table it reads.

>>> import math
>>> str((ncd.Identity.of("b t tʹ [9]") >> Bucket("[9]", 16, 8, math.log(16), 8, 15)).cod)
'b t tʹ [32]'

``Any("t")`` (``Any("t", every=True)``: all) asks whether some (every) entry of a boolean mask along ``t`` holds:
``"t [bool] -> [bool]"``, woven over the other wires (``padding_mask.any()``).

>>> str((ncd.Identity.of("b t [bool]") >> Any("t")).cod), Any("t", every=True).prim.label()
('b [bool]', 'all t')
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import sympy

from ncd.errors import ParseError, SizeError
from ncd.ir import weaving
from ncd.ir.axes import SCALAR, Axis, Segment, Type, TypeLike, parse_axis
from ncd.ir.diagram import Box
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import BACKWARD, COST, IMPORT, LOWERING
from ncd.prims.arithmetic import OPERATORS
from ncd.prims.gather import _scalar, backward_index_computation

if TYPE_CHECKING:
    from ncd.analysis.backward import Builder
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.ir.rules import BoxBackward
    from ncd.torch.rules import RuleContext

__all__ = ["IndexArithmeticOp", "IndexArithmetic", "combined_range", "IndexUnaryOp", "IndexUnary", "BucketOp", "Bucket",
           "OneHotOp", "OneHot",
           "AnyOp", "Any"]

#: the operators of two integer tensors and their torch call (``None``: the Python operator itself)
CALLS: dict[str, str | None] = {"+": None, "-": None, "*": None, "//": None, "%": None, "/": None,
                                "min": "torch.minimum", "max": "torch.maximum", "&": None, "|": None, "^": None}


@dataclass(frozen=True)
class IndexArithmeticOp(Primitive):
    """``a ∘ b`` for two scalar segments of integers or booleans (``left``, ``right``); ``target`` is the result's dtype
    as torch gives it (an index segment; a float for ``/``), with a range bounding its entries where one is known."""

    operator: str
    left: Segment
    right: Segment
    target: Segment

    op: ClassVar[str] = "index_arithmetic"
    family: ClassVar[str] = "opaque"
    kind: ClassVar[Kind] = "nonlinear"
    weave_policy = weaving.same_layouts
    zero_dim_operands = True

    def __post_init__(self) -> None:
        if self.operator not in CALLS:
            raise ParseError(f"index arithmetic: unknown operator {self.operator!r}; known: {' '.join(CALLS)}")
        for what, seg in (("left", self.left), ("right", self.right)):
            if seg.axes or seg.dtype not in ("index", "bool"):
                raise ParseError(f"index arithmetic {self.operator}: the {what} operand '{seg}' must be a scalar index"
                                 " or bool segment (a float operand is the float operation)")
        if self.target.axes or self.target.dtype not in ("index", "float") or (
                (self.target.dtype == "float") != (self.operator == "/")):
            raise ParseError(f"index arithmetic {self.operator}: the result '{self.target}' must be a scalar index"
                             " segment (a float for '/')")

    def signature(self) -> tuple[Type, Type]:
        return Type((self.left, self.right)), Type((self.target,))

    def label(self) -> str:
        return OPERATORS.get(self.operator, self.operator) if self.operator not in ("min", "max") else self.operator


def combined_range(operator: str, left: Segment, right: Segment) -> sympy.Integer | None:
    """A bound on ``|a ∘ b|`` (+1, an index segment's range) from the operands' ranges, by the ends of their intervals
    ``[0, range-1]`` (``None`` when a range is unknown or symbolic, or for ``/``)."""
    ends: list[list[int]] = []
    for seg in (left, right):
        rng = 2 if seg.dtype == "bool" else seg.range
        if rng is None or sympy.sympify(rng).free_symbols:
            return None
        ends.append([0, int(rng) - 1])
    if operator == "/":
        return None
    if operator in ("//", "%"):  # |a // b| <= a for b >= 1 (b = 0 raises); a % b < b
        return sympy.Integer(max((ends[0] if operator == "//" else ends[1])[1] + int(operator == "//"), 1))
    if operator in ("&", "|", "^"):  # |a|, |b| < 2^k: the bits of a ∘ b are theirs, in [-2^k, 2^k) for either sign
        return sympy.Integer((1 << max(ends[0][1], ends[1][1]).bit_length()) + 1)
    ops: dict[str, Callable[[int, int], int]] = {"+": lambda a, b: a + b, "-": lambda a, b: a - b,
                                                 "*": lambda a, b: a * b, "min": min, "max": max}
    values = [ops[operator](a, b) for a in ends[0] for b in ends[1]]
    return sympy.Integer(max(max(abs(v) for v in values) + 1, 1))


def IndexArithmetic(operator: str, left: TypeLike = "", right: TypeLike = "", target: TypeLike | None = None) -> Box:
    """``a ∘ b`` (``+ - * // % / min max``) for two scalar index or bool segments (``"[9]"``, ``"bool"``); ``target``
    (default: an index segment ranged by :func:`combined_range`, a float for ``/``) is the result's dtype."""
    a, b = _scalar(left, "index arithmetic"), _scalar(right, "index arithmetic")
    if target is None:
        rng = combined_range(operator, a, b)
        if operator != "/" and rng is None:
            raise ParseError(f"index arithmetic {operator}: the operands '{a}', '{b}' bound no range; give the target")
        out = SCALAR if operator == "/" else Segment((), "index", rng)
    else:
        out = _scalar(target, "index arithmetic")
    return Box.make(IndexArithmeticOp(operator, a, b, out))


@LOWERING.rule(IndexArithmeticOp)
def lower_index_arithmetic(prim: IndexArithmeticOp, ctx: RuleContext) -> list[str]:
    """The Python expression itself (``a * b``, ``a // b``) or ``torch.minimum``/``maximum``: torch's promotion gives the
    result's dtype, as in the model."""
    a, b = ctx.args[0].var, ctx.args[1].var
    call = CALLS[prim.operator]
    return [f"{call}({a}, {b})" if call else f"({a} {prim.operator} {b})"]


@COST.rule(IndexArithmeticOp)
def cost_index_arithmetic(prim: IndexArithmeticOp, ctx: CostContext) -> list[Tensor]:
    """One operation per entry on integers: no gradient, nothing kept."""
    n = ctx.numel()
    ctx.other(n, sympy.Integer(0))
    return [ctx.new(ctx.out_axes[0], grad=False, dtype=prim.target.dtype)]


@BACKWARD.rule(IndexArithmeticOp)
def backward_index_arithmetic(prim: IndexArithmeticOp, box: Box, builder: Builder) -> BoxBackward:
    """No gradient flows through integers (a float ``/`` result's cotangent is deleted)."""
    return backward_index_computation(prim, box, builder)


IMPORT.known(IndexArithmeticOp, aten=("aten.add", "aten.sub", "aten.mul", "aten.floor_divide", "aten.remainder",
                                      "aten.div", "aten.maximum", "aten.minimum", "aten.min", "aten.max", "aten.__and__",
                                      "aten.__or__", "aten.__xor__", "aten.bitwise_and", "aten.bitwise_or",
                                      "aten.bitwise_xor"),
             by="ncd.trace.boxes_integer")


#: the functions of one integer tensor, their label and torch call
UNARY: dict[str, tuple[str, str]] = {"abs": ("|·|", "torch.abs"), "neg": ("−", "torch.neg")}


@dataclass(frozen=True)
class IndexUnaryOp(Primitive):
    """``|i|`` (``operator`` ``"abs"``) or ``−i`` (``"neg"``) of a scalar index segment, in the model's integer type:
    the same range (a bound on ``|i|``; ``|·|`` of the most negative integer is itself, in torch as in the box)."""

    operator: str
    source: Segment

    op: ClassVar[str] = "index_unary"
    family: ClassVar[str] = "opaque"
    kind: ClassVar[Kind] = "nonlinear"
    weave_policy = weaving.same_layouts

    def __post_init__(self) -> None:
        if self.operator not in UNARY:
            raise ParseError(f"index unary: unknown function {self.operator!r}; known: {' '.join(UNARY)}")
        if self.source.axes or self.source.dtype != "index":
            raise ParseError(f"index unary {self.operator}: the operand '{self.source}' must be a scalar index segment"
                             " (a float one is the elementwise function)")

    def signature(self) -> tuple[Type, Type]:
        return Type((self.source,)), Type((self.source,))

    def label(self) -> str:
        return UNARY[self.operator][0]


def IndexUnary(operator: str, source: TypeLike) -> Box:
    """``|i|`` (``"abs"``) or ``−i`` (``"neg"``) of a scalar index segment (``"[9]"``), entry by entry."""
    return Box.make(IndexUnaryOp(operator, _scalar(source, "index unary")))


@LOWERING.rule(IndexUnaryOp)
def lower_index_unary(prim: IndexUnaryOp, ctx: RuleContext) -> list[str]:
    return [f"{UNARY[prim.operator][1]}({ctx.args[0].var})"]


@COST.rule(IndexUnaryOp)
def cost_index_unary(prim: IndexUnaryOp, ctx: CostContext) -> list[Tensor]:
    """One operation per entry on integers: no gradient, nothing kept."""
    ctx.other(ctx.numel(), sympy.Integer(0))
    return [ctx.new(ctx.out_axes[0], grad=False, dtype="index")]


BACKWARD.rule(IndexUnaryOp)(backward_index_computation)
IMPORT.known(IndexUnaryOp, aten=("aten.abs", "aten.neg"), by="ncd.trace.boxes_integer")


@dataclass(frozen=True)
class BucketOp(Primitive):
    """T5's relative-position bucket of a scalar index segment of distances ``n`` (bidirectional), as T5 computes it::

        half * (n > 0) + where(|n| < exact, |n|, min(exact + int64(log(float32(|n|) / exact) / divisor * span), top))

    ``half``: the buckets of one sign (``num_buckets // 2``); ``exact``: those counted one by one (``half // 2``);
    ``divisor``: ``log(max_distance / exact)``; ``span``: ``half - exact``; ``top``: the last bucket of a sign
    (``half - 1``).  The result ranges over ``half + max(exact - 1, top) + 1`` values (``num_buckets``); the distances
    must have a range (``|n|`` of the most negative integer is itself)."""

    source: Segment
    half: int
    exact: int
    divisor: float
    span: int
    top: int

    op: ClassVar[str] = "bucket"
    family: ClassVar[str] = "opaque"
    kind: ClassVar[Kind] = "nonlinear"
    weave_policy = weaving.same_layouts

    def __post_init__(self) -> None:
        if self.source.axes or self.source.dtype != "index" or self.source.range is None:
            raise ParseError(f"bucket: the distances '{self.source}' must be a scalar index segment with a range")
        numbers = (self.half, self.exact, self.span, self.top)
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in numbers) or self.exact < 1 \
                or isinstance(self.divisor, bool) or not isinstance(self.divisor, (int, float)) \
                or not (math.isfinite(self.divisor) and self.divisor > 0):
            raise ParseError(f"bucket: half {self.half!r}, exact {self.exact!r}, span {self.span!r} and top {self.top!r}"
                             f" must be whole numbers of at least 0 (exact at least 1), divisor {self.divisor!r} finite"
                             " and positive")

    @property
    def target(self) -> Segment:
        return Segment((), "index", sympy.Integer(self.half + max(self.exact - 1, self.top) + 1))

    def signature(self) -> tuple[Type, Type]:
        return Type((self.source,)), Type((self.target,))

    def label(self) -> str:
        return "bucket"


def Bucket(source: TypeLike, half: int, exact: int, divisor: float, span: int, top: int) -> Box:
    """T5's relative-position bucket (:class:`BucketOp`) of a scalar index segment of distances (``"[9]"``)."""
    return Box.make(BucketOp(_scalar(source, "bucket"), half, exact, float(divisor), span, top))


@LOWERING.rule(BucketOp)
def lower_bucket(prim: BucketOp, ctx: RuleContext) -> list[str]:
    """The model's own operations in its order and types (the float ones decide the logarithmic buckets)."""
    x = ctx.args[0].var
    n = f"torch.abs({x})"
    large = (f"torch.clamp_max((torch.log({n}.to(torch.float32) / {prim.exact}) / {prim.divisor!r} * {prim.span})"
             f".to(torch.int64) + {prim.exact}, {prim.top})")
    return [f"({x} > 0).to(torch.int64) * {prim.half} + torch.where({n} < {prim.exact}, {n}, {large})"]


@COST.rule(BucketOp)
def cost_bucket(prim: BucketOp, ctx: CostContext) -> list[Tensor]:
    """Twelve operations per entry on integers and floats: no gradient, nothing kept."""
    ctx.other(12 * ctx.numel(), sympy.Integer(0))
    return [ctx.new(ctx.out_axes[0], grad=False, dtype="index")]


BACKWARD.rule(BucketOp)(backward_index_computation)
IMPORT.known(BucketOp, aten=("aten.gt", "aten.abs", "aten.lt", "aten.log", "aten.where"), by="ncd.trace.buckets")


@dataclass(frozen=True)
class OneHotOp(Primitive):
    """A position ``[n]`` read as a row of ``axis`` (of size ``n``) holding 1 there and 0 elsewhere: ``F.one_hot``."""

    axis: Axis

    op: ClassVar[str] = "one_hot"
    family: ClassVar[str] = "opaque"
    kind: ClassVar[Kind] = "nonlinear"

    def signature(self) -> tuple[Type, Type]:
        return Type((Segment((), "index", self.axis.size),)), Type((Segment((self.axis,), "index", sympy.Integer(2)),))

    def label(self) -> str:
        return f"one-hot {self.axis.name}"


def OneHot(axis: str | Axis) -> Box:
    """``F.one_hot(i, n)`` along a new wire ``axis`` of size ``n`` (its positions ``[n]``)."""
    ax = parse_axis(axis) if isinstance(axis, str) else axis
    if ax.size.free_symbols or int(ax.size) < 1:
        raise SizeError(f"one-hot along axis {ax.name}: needs a whole-number size, not {ax.size}")
    return Box.make(OneHotOp(ax))


@LOWERING.rule(OneHotOp)
def lower_one_hot(prim: OneHotOp, ctx: RuleContext) -> list[str]:
    return [f"F.one_hot({ctx.args[0].var}, {ctx.int(prim.axis.size, f'axis {prim.axis.name}')})"]


@COST.rule(OneHotOp)
def cost_one_hot(prim: OneHotOp, ctx: CostContext) -> list[Tensor]:
    """A new integer tensor: no FLOPs, no gradient, nothing kept."""
    return [ctx.new(ctx.out_axes[0], grad=False, dtype="index")]


BACKWARD.rule(OneHotOp)(backward_index_computation)
IMPORT.known(OneHotOp, aten=("aten.one_hot",), by="ncd.trace.boxes_integer")


@dataclass(frozen=True)
class AnyOp(Primitive):
    """Whether some (``every``: every) entry of a boolean segment over ``axes`` holds: ``torch.any``/``torch.all``."""

    axes: Segment
    every: bool = False

    op: ClassVar[str] = "any"
    family: ClassVar[str] = "opaque"
    kind: ClassVar[Kind] = "nonlinear"

    def __post_init__(self) -> None:
        if not self.axes.axes or self.axes.repeated or self.axes.dtype != "bool":
            raise ParseError(f"any/all takes distinct axes of booleans, not '{self.axes}'")

    def signature(self) -> tuple[Type, Type]:
        return Type((self.axes,)), Type((Segment((), "bool"),))

    def label(self) -> str:
        return ("all " if self.every else "any ") + " ".join(self.axes.names)


def Any(axes: TypeLike, every: bool = False) -> Box:
    """``m.any(dims)`` (``every``: ``m.all(dims)``) of a boolean mask over ``axes`` (``"t"`` reads ``"t [bool]"``)."""
    seg = _scalar(axes, "any") if not isinstance(axes, str) or "[" in axes else _scalar(f"{axes} [bool]", "any")
    return Box.make(AnyOp(seg, every))


@LOWERING.rule(AnyOp)
def lower_any(prim: AnyOp, ctx: RuleContext) -> list[str]:
    """The woven wires in front, its own last: ``torch.any(m, dim=(-k, ..., -1))``."""
    k = len(prim.axes)
    return [f"torch.{'all' if prim.every else 'any'}({ctx.args[0].var}, dim={tuple(range(-k, 0))})"]


@COST.rule(AnyOp)
def cost_any(prim: AnyOp, ctx: CostContext) -> list[Tensor]:
    """A new boolean tensor: no FLOPs, no gradient, nothing kept."""
    return [ctx.new(ctx.out_axes[0], grad=False, dtype="bool")]


BACKWARD.rule(AnyOp)(backward_index_computation)
IMPORT.known(AnyOp, aten=("aten.any", "aten.all"), by="ncd.trace.boxes_integer")
