"""Elementwise functions: scalar maps ``1 -> 1`` broadcast over every wire they meet.

Their domain is a single segment with no axes (a scalar); composing one after a tensor
weaves it over all of that tensor's axes, exactly as the paper draws ``➤R➤``.

>>> import ncd
>>> d = ncd.Identity.of("b m") >> ncd.ReLU()
>>> str(d.cod)
'b m'
>>> str(ncd.Scale("k**-0.5").prim.label())
'*1/√(k)'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import sympy

from ncd.errors import ParseError
from ncd.ir import weaving
from ncd.ir.axes import SCALAR, SCALAR_TYPE, Type
from ncd.ir.diagram import Box, Diagram, Identity, Par, Seq
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import BACKWARD, COST, IMPORT, LOWERING, NOT_TRACED, SECOND_ORDER, BoxBackward
from ncd.prims.functions import FUNCTIONS as FUNCTIONS
from ncd.prims.functions import ROWS as ROWS
from ncd.prims.functions import Function as Function
from ncd.prims.functions import number_text as number_text
from ncd.prims.kinds import partials
from ncd.prims.scale import Scale as Scale
from ncd.prims.scale import ScaleOp as ScaleOp
from ncd.prims.scale import factor_text as factor_text
from ncd.prims.scale import finite as finite

if TYPE_CHECKING:
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.torch.rules import RuleContext

__all__ = [
    "ElementwiseOp",
    "ScaleOp",
    "MultiplyOp",
    "Scale",
    "Multiply",
    "FUNCTIONS",
    "Function",
    "ROWS",
    "elementwise",
    "ReLU",
    "GELU",
    "SiLU",
    "Tanh",
    "Sigmoid",
    "Exp",
    "Log",
    "Square",
    "Sqrt",
    "Identity1",
    "DerivativeOp",
    "Derivative",
    "DERIVATIVES",
]


@dataclass(frozen=True)
class ElementwiseOp(Primitive):
    """A named scalar function (``relu``, ``gelu``, ``silu``, ``tanh``, ``sigmoid``, ``exp``, ...).

    ``args`` are its numeric arguments where it has some (``ElementwiseOp("leaky_relu", (0.2,))``); empty means
    the defaults (arguments equal to the defaults are stored empty, so the two spellings are one primitive).
    """

    function: str
    args: tuple[float, ...] = ()

    op: ClassVar[str] = "elementwise"
    weave_policy = weaving.always
    family: ClassVar[str] = "elementwise"
    kind: ClassVar[Kind] = "nonlinear"

    def __post_init__(self) -> None:
        if self.function not in FUNCTIONS:
            raise ParseError(
                f"unknown elementwise function {self.function!r}; known: {', '.join(sorted(FUNCTIONS))}"
            )
        object.__setattr__(self, "args", function_args(self.function, self.args))

    def fields(self) -> dict[str, Any]:
        return {"function": self.function, **({"args": self.args} if self.args else {})}

    def signature(self) -> tuple[Type, Type]:
        return SCALAR_TYPE, SCALAR_TYPE

    def label(self) -> str:
        return FUNCTIONS[self.function] + args_label(self.args)

    def hint(self) -> str:
        return self.function


@dataclass(frozen=True)
class MultiplyOp(Primitive):
    """Elementwise (Hadamard) product of ``n`` tensors: multilinear ``1, 1 -> 1``."""

    n: int = 2

    op: ClassVar[str] = "multiply"
    weave_policy = weaving.same_layouts
    zero_dim_operands = True
    family: ClassVar[str] = "elementwise"
    kind: ClassVar[Kind] = "multilinear"

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 2:
            raise ParseError(f"multiply takes at least two tensors, not {self.n!r}")

    def signature(self) -> tuple[Type, Type]:
        return Type((SCALAR,) * self.n), SCALAR_TYPE

    def label(self) -> str:
        return "⊙"


def function_args(function: str, args: Any) -> tuple[float, ...]:
    """``args`` of the elementwise ``function`` checked (finite numbers, one per parameter); empty when they are the
    defaults."""
    params = ROWS[function].params
    if not isinstance(args, tuple) or any(isinstance(a, bool) or not isinstance(a, (int, float)) for a in args):
        raise ParseError(f"elementwise {function}: arguments must be a tuple of numbers, not {args!r}")
    if args and len(args) != len(params):
        names = ", ".join(n for n, _ in params) or "none"
        raise ParseError(f"elementwise {function} takes {len(params)} argument(s) ({names}), not {len(args)}: {args!r}")
    if not all(math.isfinite(a) for a in args):
        raise ParseError(f"elementwise {function}: arguments must be finite, not {args!r}")
    values = tuple(float(a) for a in args)
    return () if values == ROWS[function].defaults() else values


def args_label(args: tuple[float, ...]) -> str:
    return " " + ", ".join(f"{a:g}" for a in args) if args else ""


def elementwise(function: str, *args: float) -> Box:
    """A box applying the named scalar function elementwise (``args``: its numeric arguments, if it takes some).

    >>> elementwise("leaky_relu", 0.2).prim.label()
    'LR 0.2'
    """
    return Box.make(ElementwiseOp(function, tuple(args)))


def ReLU() -> Box:
    """``➤R➤``: max(x, 0) elementwise."""
    return Box.make(ElementwiseOp("relu"))


def GELU(approximate: str = "none") -> Box:
    """GELU elementwise (``approximate="tanh"`` for GPT-2's variant)."""
    return Box.make(ElementwiseOp("gelu_tanh" if approximate == "tanh" else "gelu"))


def SiLU() -> Box:
    return Box.make(ElementwiseOp("silu"))


def Tanh() -> Box:
    return Box.make(ElementwiseOp("tanh"))


def Sigmoid() -> Box:
    return Box.make(ElementwiseOp("sigmoid"))


def Exp() -> Box:
    return Box.make(ElementwiseOp("exp"))


def Log() -> Box:
    return Box.make(ElementwiseOp("log"))


def Square() -> Box:
    return Box.make(ElementwiseOp("square"))


def Sqrt() -> Box:
    return Box.make(ElementwiseOp("sqrt"))


def Identity1() -> Box:
    return Box.make(ElementwiseOp("identity"))


def Multiply(n: int = 2) -> Box:
    """Elementwise product of ``n`` tensors of the same type."""
    return Box.make(MultiplyOp(n))


# -- the derivative of an elementwise function (backward diagrams) ---------------------------
#: for each elementwise function, which stored value its derivative reads (from ``ncd.prims.elementwise.ROWS``)
DERIVATIVES: dict[str, str] = {name: row.saves for name, row in ROWS.items()
                               if row.derivative is not None and row.saves is not None}


@dataclass(frozen=True)
class DerivativeOp(Primitive):
    """``f′``: the derivative of the elementwise ``function``, read from its stored input or output."""

    function: str
    at: str = "input"
    args: tuple[float, ...] = ()

    op: ClassVar[str] = "derivative"
    weave_policy = weaving.always
    family: ClassVar[str] = "derivative"
    kind: ClassVar[Kind] = "nonlinear"

    def __post_init__(self) -> None:
        if self.function not in DERIVATIVES:
            raise ParseError(f"derivative: no derivative known for {self.function!r}; known: {', '.join(sorted(DERIVATIVES))}")
        if self.at != DERIVATIVES[self.function]:
            raise ParseError(f"derivative of {self.function!r} is read from its {DERIVATIVES[self.function]}, not its {self.at}")
        object.__setattr__(self, "args", function_args(self.function, self.args))

    def fields(self) -> dict[str, Any]:
        return {"function": self.function, "at": self.at, **({"args": self.args} if self.args else {})}

    def signature(self) -> tuple[Type, Type]:
        return SCALAR_TYPE, SCALAR_TYPE

    def label(self) -> str:
        return f"{self.function}′" + args_label(self.args)

    def hint(self) -> str:
        return f"d_{self.function}"


def Derivative(function: str, at: str | None = None, args: tuple[float, ...] = ()) -> Box:
    """``f′`` of an elementwise function (``at``: the stored value it reads, by default the one autograd keeps)."""
    return Box.make(DerivativeOp(function, at if at is not None else DERIVATIVES.get(function, "input"), args))


# -- lowering --------------------------------------------------------------------------------
@LOWERING.rule(ElementwiseOp)
def lower_elementwise(prim: ElementwiseOp, ctx: RuleContext) -> list[str]:
    """The lowering column of the elementwise family table (``ncd.prims.elementwise.ROWS``)."""
    return [ROWS[prim.function].lowering(ctx.args[0].var, prim.args)]


@LOWERING.rule(MultiplyOp)
def lower_multiply(prim: MultiplyOp, ctx: RuleContext) -> list[str]:
    return [" * ".join(v.var for v in ctx.args)]


@LOWERING.rule(DerivativeOp)
def lower_derivative(prim: DerivativeOp, ctx: RuleContext) -> list[str]:
    """f′ written in terms of the stored value ``{v}``: the derivative column of :data:`ROWS`."""
    return [ROWS[prim.function].derivative_at(ctx.args[0].var, prim.args)]  # DerivativeOp checks it has one


# -- costs: what autograd keeps ---------------------------------------------------------------
#: which value autograd saves for each elementwise function's backward (None: nothing): ``ROWS``' column
SAVES: dict[str, str | None] = {name: row.saves for name, row in ROWS.items()}


@COST.rule(ElementwiseOp)
def cost_elementwise(prim: ElementwiseOp, ctx: CostContext) -> list[Tensor]:
    x = ctx.inputs[0]
    function = prim.function
    if function == "identity":
        return [x.relabel(ctx.out_axes[0])]
    y = ctx.like(0, x)
    n = ctx.numel()
    if x.grad:
        which = SAVES[function]
        if which is not None:
            ctx.save(y if which == "output" else x)
        if ROWS[function].inner:  # (a composite's intermediate, e.g. QuickGELU's sigmoid)
            ctx.save(ctx.like(0, x))
        ctx.other(n, n if which is None else 2 * n)
    else:
        ctx.other(n, sympy.Integer(0))
    return [y]


@COST.rule(MultiplyOp)
def cost_multiply(prim: MultiplyOp, ctx: CostContext) -> list[Tensor]:
    inputs = ctx.inputs
    n = ctx.numel()
    acc = inputs[0]
    for k, x in enumerate(inputs[1:], start=1):
        last = k == len(inputs) - 1
        full = all(a.name in acc.names for a in ctx.out_axes[0])
        grad = acc.grad or x.grad
        if last:
            out = ctx.like(0, acc) if full else ctx.output(0)
        else:
            out = ctx.new(ctx.out_axes[0], acc.order if full else None, grad)
        ctx.save(*([x] if acc.grad else []) + ([acc] if x.grad else []))
        ctx.other(n, n * (int(acc.grad) + int(x.grad)))
        acc = out
    return [acc]


@COST.rule(DerivativeOp)
def cost_derivative(prim: DerivativeOp, ctx: CostContext) -> list[Tensor]:
    ctx.other(ctx.numel(), sympy.Integer(0))
    return [ctx.like(0, ctx.inputs[0])]


# -- backward ------------------------------------------------------------------------------


@BACKWARD.rule(ElementwiseOp)
def backward_elementwise(prim: ElementwiseOp, box: Box, builder: object) -> BoxBackward:
    """``∂x = g ⊙ f′(v)`` with ``v`` the stored input or output (a constant f′, as ``neg``'s: ``f′ · g``;
    ``identity``'s and ``frac``'s: ``g``; ``sign``'s, ``round``'s: zeros)."""
    function = prim.function
    slope = ROWS[function].slope
    if slope == 1:
        return BoxBackward((), Identity(SCALAR_TYPE))
    if slope == 0:  # autograd's zeros_like(g), not 0 · g: an infinite or NaN cotangent gives 0 there too
        from ncd.prims.structure import DeleteOp, ZerosOp

        return BoxBackward((), Seq.of(Box(DeleteOp(SCALAR_TYPE)), Box(ZerosOp(SCALAR_TYPE))))
    if slope is not None:
        return BoxBackward((), Box(ScaleOp(sympy.Integer(int(slope)))))
    which = SAVES[function]
    port = ("out", 0) if which == "output" else ("in", 0)
    derivative = Box(DerivativeOp(function, which or "input", prim.args))
    if function in SELECTED:  # where(f′ != 0, f′ ⊙ g, 0): torch selects, so an infinite cotangent gives 0 there
        from ncd.ir.axes import Segment
        from ncd.prims.gather import CompareOp
        from ncd.prims.selection import WhereOp
        from ncd.prims.structure import CopyOp, ZerosOp

        ones = Seq.of(derivative, Box(CopyOp(SCALAR_TYPE)))  # v -> (f′, f′)
        split = Par.of(Box(CompareOp("!=", 0.0, SCALAR)), Box(MultiplyOp(2)))  # (f′, f′, g) -> ([f′ != 0], f′ ⊙ g)
        select = Seq.of(Par.of(Identity(Type((Segment((), "bool"), SCALAR))), Box(ZerosOp(SCALAR_TYPE))), Box(WhereOp()))
        return BoxBackward((port,), Seq.of(Par.of(ones, Identity(SCALAR_TYPE)), split, select))
    return BoxBackward((port,), Seq.of(Par.of(derivative, Identity(SCALAR_TYPE)), Box(MultiplyOp(2))))


#: the piecewise functions whose gradient torch selects (``threshold_backward``, ``hardtanh_backward``,
#: ``hardsigmoid_backward``, ``hardswish_backward``: ``where(inside, g·f′, 0)``), not multiplies: 0 outside, even where
#: ``g`` is infinite.  (hardswish's f′ is also 0 at x = −1.5 inside, where torch gives ``g · 0``: NaN for an infinite
#: ``g``, 0 here; outside, x ≤ −3, both give 0, where ``g · f′`` gave NaN.)
SELECTED = frozenset({"relu", "relu6", "hardtanh", "hardsigmoid", "hardswish"})


@partials(MultiplyOp)
def multiply_partial(prim: MultiplyOp, box: Box, i: int) -> Diagram:
    """``∂x_i = g ⊙ ∏_{j≠i} x_j`` (every factor stored)."""
    return Box(MultiplyOp(prim.n))

BACKWARD.unsupported(DerivativeOp, SECOND_ORDER)

# -- import: recognised by ncd.trace.idioms (unary functions, powers, products and scalings) -----
IMPORT.known(ElementwiseOp, aten=("aten.relu", "aten.silu", "aten.tanh", "aten.sigmoid", "aten.exp", "aten.log",
                                  "aten.sqrt", "aten.neg", "aten.abs", "aten.gelu", "aten.pow"))
IMPORT.known(MultiplyOp, aten=("aten.mul",))
IMPORT.unsupported(DerivativeOp, NOT_TRACED)
