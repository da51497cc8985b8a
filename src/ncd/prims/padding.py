"""The ends of an axis: a cyclic shift (``roll``), the reversal (``flip``) and padding (constant, reflected, replicated).

Both act on a few axes of one tensor and are woven over the rest, like a convolution's window:

* ``Roll("h w", (-3, -3))`` shifts entries cyclically along ``h`` and ``w`` (Swin's shifted
  windows): ``torch.roll``; its transpose is the opposite shift.
* ``Flip("k")`` reverses the entries along ``k`` (a causal convolution's kernel read backwards):
  ``torch.flip``; it is its own transpose.
* ``Pad("x y", (1, 1), mode="reflect")`` adds entries before and after each axis:
  ``mode="constant"`` fills them with ``value`` (negative amounts crop, as ``F.pad`` does),
  ``"reflect"`` mirrors the axis without repeating its edge, ``"replicate"`` repeats the edge,
  ``"circular"`` wraps around (the axis is a ring: a convolution on a torus).
  The padded axes keep their names (``x -> x:x+2``) unless ``out`` renames them.  A constant
  pad's transpose is the crop of the same amounts; a reflected, replicated or circular pad's transpose
  adds each copied entry back onto its source (:class:`PadTransposeOp`).

One module holds every rule of the family: declaration, lowering, costs, backward and drawing.

>>> import ncd
>>> str((ncd.Identity.of("c x y") >> ncd.Pad("x y", 1, 2, mode="reflect")).cod)
'c x:x+3 y:y+3'
>>> ncd.Roll("h w", (-3, -3)).prim.label()
'roll −3, −3'
>>> from ncd.prims.padding import Flip
>>> str((ncd.Identity.of("b t k") >> Flip("k")).cod), Flip("k").prim.label()
('b t k', 'flip')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import sympy

from ncd.errors import ParseError, SizeError, derived_size, worded_later
from ncd.ir import weaving
from ncd.ir.axes import Axis, Segment, Type, TypeLike, as_type
from ncd.ir.diagram import Box, Diagram
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import BACKWARD, COST, DRAWING, IMPORT, LOWERING, NOT_TRACED
from ncd.ir.size import Size, is_zero, same_size, size_ge, size_gt, size_lt, size_sum, size_text, whole
from ncd.prims.kinds import transpose

if TYPE_CHECKING:
    from ncd.analysis.backward import BoxBackward
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.render.layout import Frag, Layout
    from ncd.torch.rules import RuleContext

__all__ = ["RollOp", "FlipOp", "PadOp", "PadTransposeOp", "Roll", "Flip", "Pad", "PAD_MODES"]

#: padding modes and ``F.pad``'s name for them
PAD_MODES = ("constant", "reflect", "replicate", "circular")


def _ints(values: object, n: int, what: str) -> tuple[int, ...]:
    if isinstance(values, int) and not isinstance(values, bool):
        return (values,) * n
    if not isinstance(values, (tuple, list)) or any(isinstance(v, bool) or not isinstance(v, int) for v in values):
        raise ParseError(f"{what}: {values!r} is not a whole number or a tuple of whole numbers")
    out = tuple(values)
    if len(out) == 1:
        return out * n
    if len(out) != n:
        raise ParseError(f"{what}: {len(out)} amounts for {n} axes")
    return out


def _signed(v: int) -> str:
    return f"−{-v}" if v < 0 else str(v)


@dataclass(frozen=True)
class RollOp(Primitive):
    """Entries of ``axes`` shifted cyclically by ``shifts`` (one per axis): ``torch.roll``."""

    axes: Segment
    shifts: tuple[int, ...]

    op: ClassVar[str] = "roll"
    family: ClassVar[str] = "padding"
    kind: ClassVar[Kind] = "linear"
    weave_policy = weaving.same_inputs_and_output

    def __post_init__(self) -> None:
        if not self.axes.axes or self.axes.repeated:
            raise ParseError(f"roll takes distinct axes, not '{self.axes}'")
        if len(self.shifts) != len(self.axes) or any(isinstance(s, bool) or not isinstance(s, int) for s in self.shifts):
            raise ParseError(f"roll of '{self.axes}': needs one whole-number shift per axis, not {self.shifts!r}")

    def signature(self) -> tuple[Type, Type]:
        return Type((self.axes,)), Type((self.axes,))

    def label(self) -> str:
        return "roll " + ", ".join(_signed(s) for s in self.shifts)


@dataclass(frozen=True)
class FlipOp(Primitive):
    """Entries of ``axes`` in reverse order: ``torch.flip``."""

    axes: Segment

    op: ClassVar[str] = "flip"
    family: ClassVar[str] = "padding"
    kind: ClassVar[Kind] = "linear"
    weave_policy = weaving.same_inputs_and_output

    def __post_init__(self) -> None:
        if not self.axes.axes or self.axes.repeated:
            raise ParseError(f"flip takes distinct axes, not '{self.axes}'")

    def signature(self) -> tuple[Type, Type]:
        return Type((self.axes,)), Type((self.axes,))

    def label(self) -> str:
        return "flip"


@dataclass(frozen=True)
class PadOp(Primitive):
    """``before[i]`` and ``after[i]`` entries added to axis ``i`` of ``axes`` (the result: ``output``)."""

    axes: Segment
    before: tuple[int, ...]
    after: tuple[int, ...]
    mode: str = "constant"
    value: float = 0.0
    output: Segment | None = None
    #: indices padded up to the output's sizes (``after`` is the traced amount; at other sizes the output's size less
    #: the axis' and ``before``): token ids padded to a length the model computed from theirs (Longformer's window)
    fit: bool = False

    op: ClassVar[str] = "pad"
    family: ClassVar[str] = "padding"
    kind: ClassVar[Kind] = "nonlinear"  # affine: a constant fill
    weave_policy = weaving.own_last

    def __post_init__(self) -> None:
        n, axes, mode = len(self.axes), self.axes, self.mode
        if not n or axes.repeated or axes.dtype not in ("float", "index"):
            raise ParseError(f"{self._where()}: pads distinct axes of a float or index tensor")
        if mode not in PAD_MODES:
            raise ParseError(f"{self._where()}: unknown mode {mode!r}; known: {', '.join(PAD_MODES)}")
        if len(self.before) != n or len(self.after) != n:
            raise ParseError(f"{self._where()}: needs one amount before and after each of its {n} axes")
        if isinstance(self.value, bool) or not isinstance(self.value, (int, float)) or self.value != self.value:
            raise ParseError(f"{self._where()}: the fill value {self.value!r} is not a number")
        if axes.dtype == "index":
            self._index_fill(self._where())
        if mode != "constant":
            if n > 3:
                raise ParseError(f"{self._where()}: {mode} padding takes 1 to 3 axes (torch's limit), not {n}")
            if min(self.before + self.after) < 0:
                raise SizeError(f"{self._where()}: {mode} padding needs amounts >= 0, not {self.before} and {self.after}")
        for a, b, c in zip(axes, self.before, self.after):
            if whole(a.size) is None and a.size.free_symbols:  # (whole numbers compared and added as Python ints)
                continue
            if mode == "reflect" and size_ge(max(b, c), a.size):
                raise SizeError(f"{self._where()}: reflect padding of axis {a.name} of size {size_text(a.size)} by {b}"
                                f" and {c} must be smaller than the axis")
            if mode == "circular" and size_gt(max(b, c), a.size):
                raise SizeError(f"{self._where()}: circular padding of axis {a.name} of size {size_text(a.size)} by {b}"
                                f" and {c} would wrap around more than once")
            if size_lt(size_sum(a.size, b, c), 1):
                raise SizeError(f"{self._where()}: axis {a.name} of size {size_text(a.size)} padded by {b} and {c}"
                                " leaves nothing")
        if self.fit:
            self._fitted(self._where())
        elif self.output is not None and (len(self.output) != n or not all(type(k) is int for k in self.before + self.after)
                                          or not all(same_size(x.size, size_sum(a.size, b, c))
                                                     for x, a, b, c in zip(self.output, axes, self.before, self.after))):
            want = self.padded()  # (amounts other than ints: their padded axes are checked, 1.5 refused)
            if len(self.output) != n or any(not is_zero(x.size - y.size) for x, y in zip(self.output, want)):
                raise derived_size(SizeError(worded_later(  # (worded when read: the symbolic pass mostly never does)
                    lambda: f"{self._where()}: the output '{self.output}' must have the padded sizes '{want}'")),
                                   *[(x.name, x.size, y.size) for x, y in zip(self.output, want) if not is_zero(x.size - y.size)])

    def _where(self) -> str:
        return f"pad of '{self.axes}'"

    def _fitted(self, where: str) -> None:
        """A pad up to the output's sizes: of indices, constant, to sizes no smaller than the axes and ``before``."""
        if self.output is None or self.axes.dtype != "index" or self.mode != "constant" or len(self.output) != len(self.axes):
            raise ParseError(f"{where}: pads indices up to the sizes of an output of as many axes, in constant mode")
        for a, b, out in zip(self.axes, self.before, self.output):
            amount = out.size - a.size - b
            if amount.is_number and amount < 0:
                raise SizeError(f"{where}: axis {a.name} of size {size_text(a.size)} is longer than the"
                                f" {size_text(out.size)} entries it is padded up to (after {b} before it)")

    def amounts_after(self) -> tuple[Size, ...]:
        """What is padded after each axis: ``after``, or up to the output's sizes (``fit``)."""
        if not self.fit or self.output is None:
            return tuple(sympy.Integer(c) for c in self.after)
        return tuple(out.size - a.size - b for a, b, out in zip(self.axes, self.before, self.output))

    def fields(self) -> dict[str, Any]:
        """The fields, ``fit`` only when set (the JSON of every other pad is unchanged)."""
        fields = Primitive.fields(self)
        if not self.fit:
            del fields["fit"]
        return fields

    def _index_fill(self, where: str) -> None:
        """An index tensor (token ids) is padded with a constant index inside its range, so the result keeps it."""
        value, bound = self.value, self.axes.range
        if self.mode != "constant" or value != int(value) or value < 0:
            raise ParseError(f"{where}: an index tensor is padded with a constant whole number >= 0, not"
                             f" {self.mode} {value!r}")
        if bound is not None and not sympy.sympify(bound).free_symbols and int(value) >= bound:
            raise SizeError(f"{where}: the fill {int(value)} is outside the index range {size_text(bound)}")
        if self.output is not None and (self.output.dtype, self.output.range) != (self.axes.dtype, bound):
            raise ParseError(f"{where}: the output '{self.output}' must hold indices in the input's range")

    def padded(self) -> Segment:
        return Segment(tuple(a.resized(a.size + b + c) for a, b, c in zip(self.axes, self.before, self.after)),
                       self.axes.dtype, self.axes.range)

    def signature(self) -> tuple[Type, Type]:
        return Type((self.axes,)), Type((self.output if self.output is not None else self.padded(),))

    def label(self) -> str:
        if self.before == self.after:
            same = len(set(self.before)) == 1
            amounts = _signed(self.before[0]) if same else ", ".join(_signed(b) for b in self.before)
        else:
            amounts = ", ".join(f"{_signed(b)}|{_signed(c)}" for b, c in zip(self.before, self.after))
        if self.fit and self.output is not None:
            amounts = ", ".join(f"{_signed(b)}|→{size_text(out.size)}" for b, out in zip(self.before, self.output))
        fill = f" fill {self.value:g}" if self.mode == "constant" and self.value else ""
        return f"pad{'' if self.mode == 'constant' else ' ' + self.mode} {amounts}{fill}"


@dataclass(frozen=True)
class PadTransposeOp(Primitive):
    """The transpose of a reflected, replicated or circular :class:`PadOp`: every padded entry added back onto its
    source.

    The fields are the forward padding's; the box maps its output axes to its input axes.
    """

    axes: Segment
    before: tuple[int, ...]
    after: tuple[int, ...]
    mode: str

    op: ClassVar[str] = "pad_transpose"
    family: ClassVar[str] = "derivative"
    kind: ClassVar[Kind] = "linear"

    def __post_init__(self) -> None:
        if self.mode == "constant":
            raise ParseError("the transpose of a constant pad is a crop: Pad with negative amounts")
        PadOp(self.axes, self.before, self.after, self.mode)  # checks the amounts

    @property
    def pad(self) -> PadOp:
        return PadOp(self.axes, self.before, self.after, self.mode)

    def signature(self) -> tuple[Type, Type]:
        dom, cod = self.pad.signature()
        return cod, dom

    def label(self) -> str:
        return self.pad.label() + "ᵀ"


def _segment(axes: TypeLike, what: str) -> Segment:
    typ = as_type(axes)
    if len(typ) != 1:
        raise ParseError(f"{what} takes one segment, not '{typ}'")
    return typ[0]


def Roll(axes: TypeLike, shifts: int | tuple[int, ...]) -> Box:
    """Shift the entries of ``axes`` cyclically (``torch.roll(x, shifts, dims)``)."""
    seg = _segment(axes, "roll")
    return Box.make(RollOp(seg, _ints(shifts, len(seg), f"roll of '{seg}'")))


def Flip(axes: TypeLike) -> Box:
    """Reverse the entries of ``axes`` (``torch.flip(x, dims)``)."""
    return Box.make(FlipOp(_segment(axes, "flip")))


def Pad(axes: TypeLike, amounts: int | tuple[int, ...], after: int | tuple[int, ...] | None = None, *,
        mode: str = "constant", value: float = 0.0, out: TypeLike | None = None) -> Box:
    """Pad ``axes`` by ``amounts`` before (and ``after``, default: the same) each; ``mode``: constant, reflect,
    replicate, circular."""
    seg = _segment(axes, "pad")
    before = _ints(amounts, len(seg), f"pad of '{seg}'")
    end = before if after is None else _ints(after, len(seg), f"pad of '{seg}'")
    output = None
    if out is not None:
        names = _segment(out, "pad").names
        padded = PadOp(seg, before, end, mode, value).padded()
        output = Segment(tuple(a.renamed(n) for a, n in zip(padded, names)), padded.dtype, padded.range) \
            if len(names) == len(seg) else _segment(out, "pad")
    return Box.make(PadOp(seg, before, end, mode, float(value), output))


# -- lowering (ncd.torch.rules) -----------------------------------------------------------------
def _pads(prim: PadOp, ctx: RuleContext | None = None) -> tuple[int, ...]:
    """``F.pad``'s amounts: last axis first, before then after (up to the output's sizes: at the lowering's)."""
    after = prim.after if ctx is None or not prim.fit else \
        tuple(ctx.int(c, "pad amount") for c in prim.amounts_after())
    return tuple(v for b, a in zip(reversed(prim.before), reversed(after)) for v in (b, a))


@LOWERING.rule(RollOp)
def lower_roll(prim: RollOp, ctx: RuleContext) -> list[str]:
    dims = tuple(ctx.own_dims("dom", 0))
    return [f"torch.roll({ctx.args[0].var}, {prim.shifts}, {dims})"]


@LOWERING.rule(FlipOp)
def lower_flip(prim: FlipOp, ctx: RuleContext) -> list[str]:
    dims = tuple(ctx.own_dims("dom", 0))
    return [f"torch.flip({ctx.args[0].var}, {dims})"]


def _folded(ctx: RuleContext, x: str, axes: tuple[Axis, ...], call: str, out: tuple[Axis, ...]) -> str:
    """``call`` on ``x`` with its leading dims folded into one (torch's reflect/replicate take 1 or 2 more dims)."""
    inner = ", ".join(str(ctx.int(a.size, f"axis {a.name}")) for a in axes)
    outer = ", ".join(str(ctx.int(a.size, f"axis {a.name}")) for a in out)
    return f"{call.format(f'{x}.reshape(-1, {inner})')}.view(*{x}.shape[:-{len(axes)}], {outer})"


@LOWERING.rule(PadOp)
def lower_pad(prim: PadOp, ctx: RuleContext) -> list[str]:
    x = ctx.args[0].var
    if prim.mode == "constant":
        fill = int(prim.value) if prim.axes.dtype == "index" else prim.value
        value = "" if fill == 0 else f", value={fill!r}"
        return [f"F.pad({x}, {_pads(prim, ctx)}{value})"]
    return [_folded(ctx, x, prim.axes.axes, f"F.pad({{}}, {_pads(prim)}, mode={prim.mode!r})", prim.padded().axes)]


def _unwrapped(g: str, axes: tuple[Axis, ...], before: tuple[int, ...], after: tuple[int, ...], ctx: RuleContext) -> str:
    """The transpose of a circular pad of the last ``len(axes)`` dims of ``g``: per axis, the middle plus the entries
    padded after (from the start of the axis) and before (from its end) added back where they were copied from."""
    k = len(axes)
    for i, (a, b, c) in enumerate(zip(axes, before, after)):
        n, dim = ctx.int(a.size, f"axis {a.name}"), i - k
        zeros = (0, 0) * (k - 1 - i)
        parts = [f"{g}.narrow({dim}, {b}, {n})"]
        if c:
            parts.append(f"F.pad({g}.narrow({dim}, {b + n}, {c}), {zeros + (0, n - c)})")
        if b:
            parts.append(f"F.pad({g}.narrow({dim}, 0, {b}), {zeros + (n - b, 0)})")
        g = "(" + " + ".join(parts) + ")"
    return g


@LOWERING.rule(PadTransposeOp)
def lower_pad_transpose(prim: PadTransposeOp, ctx: RuleContext) -> list[str]:
    pad = prim.pad
    if pad.mode == "circular":
        return [_unwrapped(ctx.args[0].var, pad.axes.axes, pad.before, pad.after, ctx)]
    n = len(pad.axes)
    name = {"reflect": "reflection", "replicate": "replication"}[pad.mode]
    g = ctx.args[0].var
    shape = ", ".join(str(ctx.int(a.size, f"axis {a.name}")) for a in pad.axes)
    like = f"{{0}}.new_empty(({{0}}.shape[0], {shape}))"
    call = f"torch.ops.aten.{name}_pad{n}d_backward({{0}}, {like}, {list(_pads(pad))})"
    return [_folded(ctx, g, pad.padded().axes, call, pad.axes.axes)]


# -- costs and backward (ncd.analysis) ----------------------------------------------------------
@COST.rule(RollOp, FlipOp)
def cost_roll(prim: RollOp | FlipOp, ctx: CostContext) -> list[Tensor]:
    """``torch.roll`` and ``torch.flip`` write a new tensor and keep nothing."""
    return [ctx.like(0, ctx.inputs[0])]


@COST.rule(PadOp)
def cost_pad(prim: PadOp, ctx: CostContext) -> list[Tensor]:
    """A constant or circular pad keeps nothing (a circular pad is slices and a concatenation); reflected and
    replicated pads keep their (folded) input; padded indices carry no gradient."""
    x = ctx.inputs[0]
    if prim.axes.dtype == "index":  # padded token ids: no gradient
        return [ctx.new(ctx.out_axes[0], grad=False, dtype="index")]
    if prim.mode in ("reflect", "replicate") and x.grad:
        ctx.save(x if x.contiguous else ctx.new(x.axes, grad=x.grad))
    return [ctx.output(0)]


@COST.rule(PadTransposeOp)
def cost_pad_transpose(prim: PadTransposeOp, ctx: CostContext) -> list[Tensor]:
    """``reflection_pad*_backward`` (and the circular pad's sums of slices) keeps nothing (its own derivative is the
    pad)."""
    ctx.other(ctx.inputs[0].numel, ctx.numel() if ctx.grad else sympy.Integer(0))
    return [ctx.output(0)]


@transpose(RollOp)
def transpose_roll(prim: RollOp, box: Box) -> Diagram:
    """The transpose of a cyclic shift is the opposite shift."""

    return Box(RollOp(prim.axes, tuple(-s for s in prim.shifts)))


@transpose(FlipOp)
def transpose_flip(prim: FlipOp, box: Box) -> Diagram:
    """A reversal is its own transpose."""

    return Box(prim)


@BACKWARD.rule(PadOp)
def backward_pad(prim: PadOp, box: Box, builder: object) -> BoxBackward:
    """Constant: crop the cotangent by the same amounts; reflect/replicate/circular: :class:`PadTransposeOp`; indices:
    nothing."""
    from ncd.analysis.backward import BoxBackward

    if prim.axes.dtype == "index":  # padded token ids: no gradient flows
        from ncd.ir.diagram import Identity

        return BoxBackward((), Identity(Type(())))
    if prim.mode != "constant":
        back: Diagram = Box(PadTransposeOp(prim.axes, prim.before, prim.after, prim.mode))
        if prim.output is not None and prim.output != prim.padded():  # (its output's wires named apart: named back)
            from ncd.prims.opaque import ViewOp

            back = Box(ViewOp(prim.output, prim.padded())) >> back
        return BoxBackward((), back)
    padded = prim.output if prim.output is not None else prim.padded()
    crop = PadOp(padded, tuple(-b for b in prim.before), tuple(-a for a in prim.after), output=prim.axes)
    return BoxBackward((), Box(crop))


@transpose(PadTransposeOp)
def transpose_pad_transpose(prim: PadTransposeOp, box: Box) -> Diagram:
    """Linear, so its transpose is the pad itself."""

    return Box(prim.pad)


# -- drawing (ncd.render) -----------------------------------------------------------------------
@DRAWING.rule(RollOp, FlipOp, PadOp, PadTransposeOp)
def draw_boundary(prim: RollOp | FlipOp | PadOp | PadTransposeOp, ctx: Layout, box: Box) -> Frag:
    """A tag on the wires it acts on, like a slice: ``roll −3, −3``, ``flip``, ``pad 1|1``."""
    from ncd.render.pictograms import generic_box
    from ncd.render.typeset import typeset_text

    return generic_box(ctx, box.dom, box.cod, typeset_text(box.prim.label()), fill="#fdf3d0", name=box.prim.op, min_w=16.0)


# -- import recognition: the recognisers of ncd.trace.boxes (ncd.ir.rules' import cell) ----------

IMPORT.known(PadOp, RollOp, FlipOp, by="ncd.trace.boxes")
IMPORT.unsupported(PadTransposeOp, NOT_TRACED)
