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

from dataclasses import dataclass
from typing import ClassVar

from ncd.errors import ParseError
from ncd.ir import weaving
from ncd.ir.axes import Segment, Type
from ncd.ir.diagram import Box
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.size import Size, SizeLike, size, size_text

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
]

SCALAR = Type((Segment(()),))

@dataclass(frozen=True)
class Function:
    """One row of the elementwise family: what every interpreter needs to know about a scalar function.

    ``glyph`` is what the paper draws; ``call`` the PyTorch source of the lowering (``{}`` is
    the input); ``saves`` which value autograd keeps for the backward pass (``"input"``,
    ``"output"`` or ``None``) — the cost model counts it and the backward diagram stores it;
    ``derivative`` is f′ as PyTorch source in that stored value ``{v}`` (``None`` when the
    backward needs no derivative box: ``neg`` and ``identity``).
    """

    glyph: str
    call: str
    saves: str | None
    derivative: str | None


_GELU = "0.5 * (1 + torch.erf({v} * 0.7071067811865476)) + {v} * torch.exp(-0.5 * {v} * {v}) * 0.3989422804014327"
_GELU_TANH = ("0.5 * (1 + torch.tanh(0.7978845608028654 * ({v} + 0.044715 * {v} ** 3)))"
              " + 0.5 * {v} * (1 - torch.tanh(0.7978845608028654 * ({v} + 0.044715 * {v} ** 3)) ** 2)"
              " * 0.7978845608028654 * (1 + 0.134145 * {v} * {v})")

#: The elementwise family, one row per function (add a function here and every interpreter has it).
ROWS: dict[str, Function] = {
    "relu": Function("R", "torch.relu({})", "output", "({v} > 0).to({v}.dtype)"),
    "gelu": Function("GELU", "F.gelu({})", "input", _GELU),
    "gelu_tanh": Function("GELU", "F.gelu({}, approximate='tanh')", "input", _GELU_TANH),
    "silu": Function("SiLU", "F.silu({})", "input", "torch.sigmoid({v}) * (1 + {v} * (1 - torch.sigmoid({v})))"),
    "tanh": Function("tanh", "torch.tanh({})", "output", "1 - {v} * {v}"),
    "sigmoid": Function("σ", "torch.sigmoid({})", "output", "{v} * (1 - {v})"),
    "exp": Function("exp", "torch.exp({})", "output", "{v}"),
    "log": Function("log", "torch.log({})", "input", "1 / {v}"),
    "square": Function("x²", "torch.square({})", "input", "2 * {v}"),
    "sqrt": Function("√", "torch.sqrt({})", "output", "0.5 / {v}"),
    "neg": Function("−", "torch.neg({})", None, None),
    "abs": Function("|x|", "torch.abs({})", "input", "torch.sign({v})"),
    "identity": Function("id", "{}", None, None),
    # functions the importer met opaque (one row each: lowering, saved value, derivative and glyph)
    "rsqrt": Function("1/√", "torch.rsqrt({})", "output", "-0.5 * {v} * {v} * {v}"),
    "reciprocal": Function("1/x", "torch.reciprocal({})", "output", "-{v} * {v}"),
    "softplus": Function("softplus", "F.softplus({})", "input", "torch.sigmoid({v})"),
    "mish": Function("mish", "F.mish({})", "input",
                     "torch.tanh(F.softplus({v})) + {v} * torch.sigmoid({v}) * (1 - torch.tanh(F.softplus({v})) ** 2)"),
    "hardswish": Function("hswish", "F.hardswish({})", "input",
                          "torch.where({v} < -3, 0.0, torch.where({v} <= 3, {v} / 3 + 0.5, 1.0))"),
    "hardsigmoid": Function("hσ", "F.hardsigmoid({})", "input", "(({v} > -3) & ({v} < 3)).to({v}.dtype) / 6"),
    "relu6": Function("R6", "F.relu6({})", "input", "(({v} > 0) & ({v} < 6)).to({v}.dtype)"),
    "leaky_relu": Function("LR", "F.leaky_relu({})", "input", "torch.where({v} > 0, 1.0, 0.01)"),
    "elu": Function("ELU", "F.elu({})", "input", "torch.where({v} > 0, 1.0, torch.exp({v}))"),
    "erf": Function("erf", "torch.erf({})", "input", "1.1283791670955126 * torch.exp(-{v} * {v})"),
    "sin": Function("sin", "torch.sin({})", "input", "torch.cos({v})"),
    "cos": Function("cos", "torch.cos({})", "input", "-torch.sin({v})"),
    "log1p": Function("log1p", "torch.log1p({})", "input", "1 / (1 + {v})"),
    "expm1": Function("expm1", "torch.expm1({})", "output", "{v} + 1"),
}

#: Elementwise function names and the glyph the paper draws for them.
FUNCTIONS: dict[str, str] = {name: row.glyph for name, row in ROWS.items()}


@dataclass(frozen=True)
class ElementwiseOp(Primitive):
    """A named scalar function (``relu``, ``gelu``, ``silu``, ``tanh``, ``sigmoid``, ``exp``, ...)."""

    function: str

    op: ClassVar[str] = "elementwise"
    weave_policy = weaving.always
    family: ClassVar[str] = "elementwise"
    kind: ClassVar[Kind] = "nonlinear"

    def __post_init__(self) -> None:
        if self.function not in FUNCTIONS:
            raise ParseError(
                f"unknown elementwise function {self.function!r}; known: {', '.join(sorted(FUNCTIONS))}"
            )

    def signature(self) -> tuple[Type, Type]:
        return SCALAR, SCALAR

    def label(self) -> str:
        return FUNCTIONS[self.function]

    def hint(self) -> str:
        return self.function


@dataclass(frozen=True)
class ScaleOp(Primitive):
    """Multiplication by a constant or symbolic factor (drawn as an arrow labelled ``*factor``)."""

    factor: Size

    op: ClassVar[str] = "scale"
    weave_policy = weaving.always
    family: ClassVar[str] = "elementwise"
    kind: ClassVar[Kind] = "linear"

    def signature(self) -> tuple[Type, Type]:
        return SCALAR, SCALAR

    def label(self) -> str:
        return "*" + size_text(self.factor).replace("**", "^").replace("sqrt(", "√(")


@dataclass(frozen=True)
class MultiplyOp(Primitive):
    """Elementwise (Hadamard) product of ``n`` tensors: multilinear ``1, 1 -> 1``."""

    n: int = 2

    op: ClassVar[str] = "multiply"
    weave_policy = weaving.same_layouts
    family: ClassVar[str] = "elementwise"
    kind: ClassVar[Kind] = "multilinear"

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 2:
            raise ParseError(f"multiply takes at least two tensors, not {self.n!r}")

    def signature(self) -> tuple[Type, Type]:
        return Type((Segment(()),) * self.n), SCALAR

    def label(self) -> str:
        return "⊙"


def elementwise(function: str) -> Box:
    """A box applying the named scalar function elementwise."""
    return Box.make(ElementwiseOp(function))


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


def Scale(factor: SizeLike) -> Box:
    """Multiply by ``factor`` (a number or a size expression such as ``"k**-0.5"``)."""
    return Box.make(ScaleOp(size(factor)))


def Multiply(n: int = 2) -> Box:
    """Elementwise product of ``n`` tensors of the same type."""
    return Box.make(MultiplyOp(n))
