"""Discrete Fourier transforms over some axes, and the complex wires they make.

A wire may carry complex numbers (a segment of dtype ``complex``, written ``"t m [complex]"``).
``Fourier("t m")`` is ``torch.fft.fftn`` over ``t`` and ``m`` (``inverse=True``: ``ifftn``): float
or complex in, complex out, the same axes.  ``Fourier("t", "f:t/2+1", real=True)`` is the
transform of a real signal (``rfftn``: only the non-negative frequencies of the last axis are
kept, on a new axis ``f``); with ``inverse=True`` it maps those frequencies back to a real signal of
the output axes' sizes (``irfftn``).  ``norm`` is torch's (``"backward"``, ``"ortho"``, ``"forward"``).
:func:`ComplexPart` reads the real or imaginary part of a complex wire, :func:`ComplexConjugate` conjugates it
(``torch.conj``), and :func:`ComplexMultiply` is the entrywise product of two complex tensors (a spectral filter;
Autoformer's auto-correlation ``irfft(rfft(q) ⊙ conj(rfft(k)))``).
:func:`ComplexView` reads a wire of size 2 as the real and imaginary parts of complex numbers
(``torch.view_as_complex``: ``t 2 -> t [complex]``) or back (``torch.view_as_real``).
Every box is woven over the axes it does not name.

The backward diagram of a complex box would need conjugate (Wirtinger) cotangents, which
``ncd.backward`` does not model: each says so (the lowered module still trains through
torch's autograd).  One module holds every rule of the family: declaration, lowering, costs,
drawing and import (recognised by :mod:`ncd.trace.boxes_complex`).

>>> import ncd
>>> str((ncd.Identity.of("b t m") >> ncd.Fourier("t m")).cod)
'b t m [complex]'
>>> str((ncd.Identity.of("b t m") >> ncd.Fourier("t", "f:5", real=True)).cod)
'b f:5 m [complex]'
>>> d = ncd.Identity.of("b t m") >> ncd.Fourier("t m") >> ncd.ComplexPart("real")
>>> str(d.cod)
'b t m'
>>> ncd.Fourier("t:8", "f:4", real=True)
Traceback (most recent call last):
...
ncd.errors.SizeError: rfft over 't:8': the last axis of 8 points has 5 non-negative frequencies, but f has size 4
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import sympy

from ncd.errors import ParseError, SizeError
from ncd.ir import weaving
from ncd.ir.axes import SCALAR, Dtype, Segment, Type, TypeLike, as_type
from ncd.ir.diagram import Box
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import BACKWARD, COST, DRAWING, IMPORT, LOWERING, SCALAR_DRAWING
from ncd.ir.size import size_text, sizes_equal
from ncd.prims.binary import Entrywise, draw_meeting

if TYPE_CHECKING:
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.render.layout import Frag, Layout
    from ncd.torch.rules import RuleContext

__all__ = ["FourierOp", "ComplexPartOp", "ComplexConjugateOp", "ComplexMultiplyOp", "ComplexViewOp", "Fourier",
           "ComplexPart", "ComplexConjugate", "ComplexMultiply", "ComplexView", "BACKWARD_UNSUPPORTED"]

BACKWARD_UNSUPPORTED = ("complex wires: the backward diagram would need conjugate (Wirtinger) cotangents, which"
                        " ncd.backward does not model (the lowered module trains through torch's autograd)")
Kind_ = Literal["fft", "ifft", "rfft", "irfft"]
Norm = Literal["backward", "ortho", "forward"]
COMPLEX = Segment((), "complex")
REAL = SCALAR


@dataclass(frozen=True)
class FourierOp(Primitive):
    """The discrete Fourier transform of ``source``'s axes to ``target``'s (``kind``: torch's ``fftn``, ``ifftn``,
    ``rfftn``, ``irfftn``), normalised as torch's ``norm``."""

    source: Segment
    target: Segment
    transform: Kind_ = "fft"
    norm: Norm = "backward"

    op: ClassVar[str] = "fourier"
    family: ClassVar[str] = "fourier"
    kind: ClassVar[Kind] = "nonlinear"  # complex-linear, but not a real linear map with a derived transpose (see above)

    def __post_init__(self) -> None:
        where = f"{self.transform} over '{self.source}'"
        if self.transform not in ("fft", "ifft", "rfft", "irfft"):
            raise ParseError(f"{where}: unknown transform (fft, ifft, rfft or irfft)")
        if self.norm not in ("backward", "ortho", "forward"):
            raise ParseError(f"{where}: norm must be 'backward', 'ortho' or 'forward', not {self.norm!r}")
        if not self.source.axes or self.source.repeated or len(self.source.axes) != len(self.target.axes):
            raise ParseError(f"{where}: transforms distinct axes to as many axes, not '{self.target}'")
        want_in = {"fft": ("float", "complex"), "ifft": ("float", "complex"), "rfft": ("float",), "irfft": ("complex",)}
        want_out = "float" if self.transform == "irfft" else "complex"
        if self.source.dtype not in want_in[self.transform] or self.target.dtype != want_out:
            raise ParseError(f"{where}: takes {' or '.join(want_in[self.transform])} to {want_out} numbers, not "
                             f"{self.source.dtype} to {self.target.dtype}")
        *lead, last = zip(self.source.axes, self.target.axes)
        for a, b in lead if self.transform in ("rfft", "irfft") else lead + [last]:
            if a.name != b.name or not sizes_equal(a.size, b.size):
                raise ParseError(f"{where}: axis {a.name} comes out as {b.name}:{size_text(b.size)}; only the last"
                                 " axis of a real transform changes")
        if self.transform in ("rfft", "irfft"):
            n, m = (last[0], last[1]) if self.transform == "rfft" else (last[1], last[0])
            half = sympy.floor(n.size / 2) + 1
            if not (half - m.size).free_symbols and not sizes_equal(half, m.size):
                raise SizeError(f"{where}: the last axis of {size_text(n.size)} points has {size_text(half)} non-negative"
                                f" frequencies, but {m.name} has size {size_text(m.size)}")

    def signature(self) -> tuple[Type, Type]:
        return Type((self.source,)), Type((self.target,))

    def label(self) -> str:
        return {"fft": "FFT", "ifft": "FFT⁻¹", "rfft": "FFTᵣ", "irfft": "FFTᵣ⁻¹"}[self.transform]


@dataclass(frozen=True)
class ComplexPartOp(Primitive):
    """The real or imaginary part of a complex number: ``() [complex] -> ()``, woven over every axis."""

    part: Literal["real", "imag"] = "real"

    op: ClassVar[str] = "complex_part"
    family: ClassVar[str] = "fourier"
    kind: ClassVar[Kind] = "nonlinear"  # complex-linear, but not a real linear map with a derived transpose (see above)
    weave_policy = weaving.always

    def __post_init__(self) -> None:
        if self.part not in ("real", "imag"):
            raise ParseError(f"complex part: 'real' or 'imag', not {self.part!r}")

    def signature(self) -> tuple[Type, Type]:
        return Type((COMPLEX,)), Type((REAL,))

    def label(self) -> str:
        return "Re" if self.part == "real" else "Im"


@dataclass(frozen=True)
class ComplexConjugateOp(Primitive):
    """The complex conjugate ``z̄`` (the imaginary part negated): ``() [complex] -> () [complex]``, woven over every
    axis."""

    op: ClassVar[str] = "complex_conjugate"
    family: ClassVar[str] = "fourier"
    kind: ClassVar[Kind] = "nonlinear"  # real-linear, but its transpose reads complex cotangents (see above)
    weave_policy = weaving.always

    def signature(self) -> tuple[Type, Type]:
        return Type((COMPLEX,)), Type((COMPLEX,))

    def label(self) -> str:
        return "conj"


@dataclass(frozen=True)
class ComplexMultiplyOp(Entrywise):
    """``a ⊙ b`` for complex numbers: ``[complex], [complex] -> [complex]``, woven over the axes of both."""

    op: ClassVar[str] = "complex_multiply"
    family: ClassVar[str] = "fourier"
    operands: ClassVar[tuple[Segment, ...]] = (COMPLEX, COMPLEX)
    result: ClassVar[Segment] = COMPLEX
    symbol: ClassVar[str] = "⊙"


@dataclass(frozen=True)
class ComplexViewOp(Primitive):
    """The pair wire ``pair`` (size 2: real, imaginary) read as one complex number (``to="complex"``:
    ``torch.view_as_complex``, ``pair -> [complex]``), or a complex number as that pair (``to="real"``:
    ``torch.view_as_real``, ``[complex] -> pair``); woven over every other axis, the pair last as torch has it.
    Nothing is computed and autograd keeps nothing; its backward would be the other view of a complex cotangent."""

    pair: Segment
    to: Literal["complex", "real"] = "complex"

    op: ClassVar[str] = "complex_view"
    family: ClassVar[str] = "fourier"
    kind: ClassVar[Kind] = "nonlinear"  # real-linear, but its transpose reads complex cotangents (see above)
    weave_policy = weaving.trailing

    def __post_init__(self) -> None:
        where = f"complex view of '{self.pair}'"
        if self.to not in ("complex", "real"):
            raise ParseError(f"{where}: to 'complex' or 'real', not {self.to!r}")
        if len(self.pair.axes) != 1 or self.pair.dtype != "float":
            raise ParseError(f"{where}: one float wire holds the real and imaginary parts")
        if not sizes_equal(self.pair.axes[0].size, sympy.Integer(2)):
            raise SizeError(f"{where}: the wire {self.pair.axes[0].name} holding the real and imaginary parts has size"
                            f" {size_text(self.pair.axes[0].size)}, not 2")

    def signature(self) -> tuple[Type, Type]:
        ends = (Type((self.pair,)), Type((COMPLEX,)))
        return ends if self.to == "complex" else (ends[1], ends[0])

    def label(self) -> str:
        return "re, im→z" if self.to == "complex" else "z→re, im"


def ComplexView(pair: TypeLike, to: Literal["complex", "real"] = "complex") -> Box:
    """``torch.view_as_complex`` on the pair wire (``ComplexView("r:2")``: ``t r:2 -> t [complex]``), or with
    ``to="real"`` ``torch.view_as_real`` making it (``t [complex] -> t r:2``)."""
    return Box.make(ComplexViewOp(Segment(_segment(pair, "complex view").axes), to))


def _segment(axes: TypeLike, what: str) -> Segment:
    typ = as_type(axes)
    if len(typ) != 1:
        raise ParseError(f"{what} takes one segment, not '{typ}'")
    return typ[0]


def Fourier(axes: TypeLike, out: TypeLike | None = None, *, inverse: bool = False, real: bool = False,
            norm: Norm = "backward", complex_input: bool | None = None) -> Box:
    """The discrete Fourier transform over ``axes`` (``fftn``; ``inverse``: ``ifftn``).

    ``real=True``: the transform of a real signal, keeping the non-negative frequencies of the last
    axis on ``out``'s last axis (``rfftn``), or with ``inverse`` its inverse to a real signal of
    ``out``'s sizes (``irfftn``).  The input holds complex numbers for ``irfftn`` (and, if
    ``complex_input``, for ``fftn``/``ifftn``), real numbers otherwise."""
    source = _segment(axes, "fourier")
    transform: Kind_ = ("irfft" if inverse else "rfft") if real else ("ifft" if inverse else "fft")
    takes: Dtype = "complex" if transform == "irfft" or (complex_input and not real) else "float"
    source = Segment(source.axes, takes)
    if out is None:
        if real:
            raise ParseError(f"{transform} over '{source}': name the axes it makes (the last one changes size)")
        target = Segment(source.axes, "complex")
    else:
        target = Segment(_segment(out, "fourier").axes, "float" if transform == "irfft" else "complex")
    return Box.make(FourierOp(source, target, transform, norm))


def ComplexPart(part: Literal["real", "imag"] = "real") -> Box:
    """The real (``x.real``) or imaginary (``x.imag``) part of a complex tensor, entry by entry."""
    return Box.make(ComplexPartOp(part))


def ComplexConjugate() -> Box:
    """The complex conjugate of a complex tensor, entry by entry (``torch.conj``).

    >>> import ncd
    >>> str((ncd.Identity.of("t m [complex]") >> ncd.ComplexConjugate()).cod)
    't m [complex]'
    """
    return Box.make(ComplexConjugateOp())


def ComplexMultiply() -> Box:
    """The entrywise product of two complex tensors (broadcast over the axes only one of them has)."""
    return Box.make(ComplexMultiplyOp())


# -- lowering -----------------------------------------------------------------------------------
@LOWERING.rule(FourierOp)
def lower_fourier(prim: FourierOp, ctx: RuleContext) -> list[str]:
    """Always the n-dimensional call (``fftn`` on one axis too): its autograd keeps what the cost rule says."""
    dims = ", ".join(map(str, ctx.own_dims("dom", 0)))
    sizes = ""
    if prim.transform == "irfft":
        sizes = "s=(" + ", ".join(str(ctx.int(a.size, f"axis {a.name}")) for a in prim.target.axes) + ",), "
    norm = "" if prim.norm == "backward" else f", norm={prim.norm!r}"
    return [f"torch.fft.{prim.transform}n({ctx.args[0].var}, {sizes}dim=({dims},){norm})"]


@LOWERING.rule(ComplexPartOp)
def lower_complex_part(prim: ComplexPartOp, ctx: RuleContext) -> list[str]:
    return [f"torch.{prim.part}({ctx.args[0].var})"]


@LOWERING.rule(ComplexConjugateOp)
def lower_complex_conjugate(prim: ComplexConjugateOp, ctx: RuleContext) -> list[str]:
    """``torch.conj``: a view marking the imaginary parts negated (torch resolves it where it is read)."""
    return [f"torch.conj({ctx.args[0].var})"]


@LOWERING.rule(ComplexMultiplyOp)
def lower_complex_multiply(prim: ComplexMultiplyOp, ctx: RuleContext) -> list[str]:
    a, b = ctx.args
    return [f"{a.var} * {b.var}"]


@LOWERING.rule(ComplexViewOp)
def lower_complex_view(prim: ComplexViewOp, ctx: RuleContext) -> list[str]:
    """The pair is the last dim (``trailing`` weave); ``view_as_complex`` needs it dense, hence ``contiguous()``."""
    x = ctx.args[0].var
    return [f"torch.view_as_complex({x}.contiguous())" if prim.to == "complex" else f"torch.view_as_real({x})"]


# -- costs ----------------------------------------------------------------------------------------
@COST.rule(FourierOp)
def cost_fourier(prim: FourierOp, ctx: CostContext) -> list[Tensor]:
    """The textbook ``5 N ⌈log₂ L⌉`` FLOPs of a radix-2 transform of ``N`` complex entries in lines of ``L`` points
    (half for the real transforms); the FLOP counter counts none.  Autograd keeps the input of ``rfftn`` only."""
    x = ctx.inputs[0]
    points = sympy.Integer(1)
    for a in (prim.target if prim.transform != "irfft" else prim.source).axes:
        points = points * a.size
    n = x.numel if prim.transform != "irfft" else ctx.numel()
    flops = 5 * n * sympy.ceiling(sympy.log(points, 2))
    if prim.transform in ("rfft", "irfft"):
        flops = sympy.floor(flops / 2)
    if prim.transform == "rfft" and x.grad:
        ctx.save(x)
    ctx.other(flops, flops if x.grad else sympy.Integer(0))
    return [ctx.output(0, dtype="float" if prim.transform == "irfft" else "complex")]


@COST.rule(ComplexPartOp)
def cost_complex_part(prim: ComplexPartOp, ctx: CostContext) -> list[Tensor]:
    """A view of every other float of the input: nothing computed, nothing kept."""
    ctx.other(sympy.Integer(0), sympy.Integer(0))
    return [ctx.output(0)]


@COST.rule(ComplexConjugateOp)
def cost_complex_conjugate(prim: ComplexConjugateOp, ctx: CostContext) -> list[Tensor]:
    """A view with the conjugate bit set (read by the next kernel): nothing computed, nothing kept."""
    ctx.other(sympy.Integer(0), sympy.Integer(0))
    return [ctx.output(0, dtype="complex")]


@COST.rule(ComplexViewOp)
def cost_complex_view(prim: ComplexViewOp, ctx: CostContext) -> list[Tensor]:
    """A view (of a dense copy when the pair is not dense): nothing computed, nothing kept."""
    ctx.other(sympy.Integer(0), sympy.Integer(0))
    return [ctx.output(0, dtype=prim.to if prim.to == "complex" else "float")]


@COST.rule(ComplexMultiplyOp)
def cost_complex_multiply(prim: ComplexMultiplyOp, ctx: CostContext) -> list[Tensor]:
    """Six real operations per product; autograd keeps each factor the other one's gradient needs."""
    a, b = ctx.inputs
    n = ctx.numel()
    if a.grad:
        ctx.save(b)
    if b.grad:
        ctx.save(a)
    ctx.other(6 * n, 6 * n * (int(a.grad) + int(b.grad)))
    return [ctx.output(0, dtype="complex")]


for _cls in (FourierOp, ComplexPartOp, ComplexConjugateOp, ComplexMultiplyOp, ComplexViewOp):
    BACKWARD.unsupported(_cls, BACKWARD_UNSUPPORTED)


# -- drawing --------------------------------------------------------------------------------------
@DRAWING.rule(FourierOp)
def draw_fourier(prim: FourierOp, ctx: Layout, box: Box) -> Frag:
    """A box on the transformed wires: ``FFT`` (``FFT⁻¹`` inverse; subscript ``r``: a real signal)."""
    from ncd.render.pictograms import generic_box
    from ncd.render.typeset import Piece

    parts: tuple[Piece, ...] = (Piece("FFT"),)
    if prim.transform in ("rfft", "irfft"):
        parts += (Piece("r", italic=True, script=-1),)
    if prim.transform in ("ifft", "irfft"):
        parts += (Piece("−1", script=1),)
    return generic_box(ctx, box.dom, box.cod, parts, fill="#ffffff", name="fourier")


@SCALAR_DRAWING.rule(ComplexPartOp)
def draw_complex_part(prim: ComplexPartOp, ctx: Layout, box: Box, dom: Type, cod: Type) -> Frag:
    """``➤Re➤`` above the wires, which run straight through (as an elementwise function)."""
    from ncd.render.pictograms import glyph_through
    from ncd.render.typeset import Piece

    return glyph_through(ctx, dom, (Piece(prim.label()),), name="complex_part")


@SCALAR_DRAWING.rule(ComplexConjugateOp)
def draw_complex_conjugate(prim: ComplexConjugateOp, ctx: Layout, box: Box, dom: Type, cod: Type) -> Frag:
    """``➤conj➤`` above the wires, which run straight through (as an elementwise function)."""
    from ncd.render.pictograms import glyph_through
    from ncd.render.typeset import Piece

    return glyph_through(ctx, dom, (Piece(prim.label()),), name="complex_conjugate")


@DRAWING.rule(ComplexViewOp)
def draw_complex_view(prim: ComplexViewOp, ctx: Layout, box: Box) -> Frag:
    """A box on the pair wire: ``re, im→z`` (the pair read as complex numbers) or ``z→re, im`` (complex numbers as
    pairs)."""
    from ncd.render.pictograms import generic_box
    from ncd.render.typeset import Piece

    return generic_box(ctx, box.dom, box.cod, (Piece(prim.label()),), fill="#ffffff", name="complex_view")


# as the product ``⊙``: equal wires of both tensors meet at dots
SCALAR_DRAWING.rule(ComplexMultiplyOp)(draw_meeting)


# -- import: recognised by ncd.trace.boxes_complex ---------------------------------------------------------
IMPORT.known(FourierOp, ComplexPartOp, ComplexConjugateOp, ComplexMultiplyOp, ComplexViewOp, by="ncd.trace.boxes_complex")
