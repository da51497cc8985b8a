"""The convolution family: the convolution tensor ★, learned convolution, ★ᵀ, pooling.

**The convolution tensor** ``★`` is a *linear* map (no parameters): spatial axes in,
output-position axes and kernel-window axes out.  Its index relation is
``★[o, j; i] = 1`` iff ``i = o·stride + j·dilation − padding``; positions outside the input
read the zero padding.  Output-position axes keep the spatial axes' names; kernel axes are
called ``k<name>`` unless named (``kernel_axes="k l"``).

* ``ConvolutionTensor("x y", 3, stride=2)`` : ``x y -> x:x/2 y:y/2 kx:3 ky:3``.
* ``ConvolutionTensorT`` takes the *same* arguments and is its transpose (cod and dom swapped).
* ``Conv`` (``★3`` in the paper) is ``★`` followed by a learned linear map **L₊** over
  (channels, kernel axes); it lowers to ``nn.Conv1d/2d/3d``.
* ``ConvTranspose`` is **L₊** (channels -> channels, kernel axes) followed by ``★ᵀ``; it
  lowers to ``nn.ConvTranspose1d/2d/3d``.
* ``MaxPool`` / ``AvgPool`` are ``★`` followed by a reduction (``Max➤`` / ``𝔼``) over the
  kernel axes, fused into one box (``F.max_pool*`` / ``F.avg_pool*``; max pooling pads with
  −∞ rather than ★'s zeros, average pooling counts the zero padding like ``★ >> 𝔼``).
  ``AdaptiveAvgPool`` averages over ``F.adaptive_avg_pool*``'s windows.

**Layout.**  Channel-first, as in PyTorch: ``Conv("c x y -> d x y")`` (first axis of each side
is the channel, the rest spatial).  Pooling and ``★`` name only their spatial axes; channels
and batch axes are woven past them.

**The size rule.**  Along a spatial axis of size ``x`` with kernel ``k``, stride ``s``,
padding ``p`` and dilation ``d``, the output has ``floor((x + 2p − d(k−1) − 1)/s) + 1``
positions (PyTorch's rule).  Let ``e = 2p − d(k−1) − 1``:

* a whole-number ``x`` gives exactly PyTorch's number;
* a symbolic ``x`` with ``s = 1`` gives ``x + e + 1`` (exact);
* a symbolic ``x`` with ``s > 1`` gives ``x/s + floor(e/s) + 1``, which equals PyTorch's
  number whenever ``s`` divides ``x`` (so ``k=3, s=2, p=1`` gives ``x/2``).  Binding ``x`` later
  to a size the stride does not divide raises :class:`~ncd.errors.SizeError` (never a silent
  floor); bind the size *before* building the box to get PyTorch's floor.

Transposed convolution: ``(x − 1)s − 2p + d(k−1) + output_padding + 1``, exact for every ``x``.

>>> import ncd
>>> str(ncd.ConvolutionTensor("x y", 3, stride=2, padding=1).cod)
'x:x/2 y:y/2 kx:3 ky:3'
>>> c = ncd.Conv("c x -> d x", kernel=3, stride=2, padding=1)
>>> str(c.cod), str(c.bind(x=8, c=3, d=4).cod)
('d x:x/2', 'd:4 x:4')
>>> str(ncd.ConvTranspose("c x y -> d x y", kernel=2, stride=2).cod)
'd x:2*x y:2*y'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar

import sympy

from ncd.errors import ParseError, SizeError
from ncd.ir.axes import Axis, Segment, Type, TypeLike, parse_type
from ncd.ir.diagram import Box, Diagram, Identity, Par, Seq, Weave
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import BACKWARD, BATCHED_BACKWARD, COST, IMPORT, LOWERING, NOT_TRACED, SECOND_ORDER, BoxBackward
from ncd.ir.size import Size, SizeLike, size, size_text, sizes_equal
from ncd.ir.weaving import einsum_letters
from ncd.prims.derivative import LinearTransposeOp, LinearWeightGradOp
from ncd.prims.kinds import partials, transpose
from ncd.prims.linear import EinsumOp, split_spec
from ncd.prims.structure import route
from ncd.prims.windows import (
    IntOrInts,
    Ints,
    _arg,
    _batched,
    _check_sizes,
    _check_tuples,
    _fmt,
    _folded,
    _ints,
    _is_number,
    _options,
    _per_axis,
    _sizes,
    _spatial,
    _subs_checked,
    _tuple,
    _windows,
    transposed_size,
    window_size,
)

if TYPE_CHECKING:
    from ncd.analysis.backward import Builder
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.ir.program import Expr, OpKind
    from ncd.torch.rules import RuleContext


__all__ = [
    "ConvolutionTensorOp",
    "ConvolutionTensorTOp",
    "ConvOp",
    "ConvTransposeOp",
    "ConvolutionTensor",
    "ConvolutionTensorT",
    "Conv",
    "ConvTranspose",
    "window_size",
    "transposed_size",
]





# -- the convolution tensor ★ and its transpose ---------------------------------------------
@dataclass(frozen=True)
class ConvolutionTensorOp(Primitive):
    """``★``: spatial ``axes`` -> output ``positions`` (same names) and kernel-window axes."""

    axes: Segment
    positions: Segment
    kernel_names: tuple[str, ...]
    kernel: Ints
    stride: Ints
    padding: Ints
    dilation: Ints

    op: ClassVar[str] = "conv_tensor"
    family: ClassVar[str] = "convolution"
    kind: ClassVar[Kind] = "linear"

    def __post_init__(self) -> None:
        where, n = self.label(), len(self.axes)
        if n not in (1, 2) or len(self.positions) != n or self.positions.names != self.axes.names:
            raise ParseError(f"{where}: positions '{self.positions}' must name the spatial axes '{self.axes}' (1 or 2 of them)")
        _check_tuples(where, n, kernel=self.kernel, stride=self.stride, padding=self.padding, dilation=self.dilation)
        if len(self.kernel_names) != n or len(set(self.kernel_names) | set(self.axes.names)) != 2 * n:
            raise ParseError(
                f"{where}: kernel axes {' '.join(self.kernel_names)} must be {n} new name(s), distinct from '{self.axes}'"
            )
        expected = [window_size(a.size, k, s, p, d, what=f"{where}: axis {a.name}")
                    for a, k, s, p, d in zip(self.axes, self.kernel, self.stride, self.padding, self.dilation)]
        _check_sizes(where, self.axes.axes, self.positions.axes, expected, self.stride)

    def subs(self, mapping: Mapping[sympy.Symbol, sympy.Expr]) -> Primitive:
        return _subs_checked(self, mapping, self.axes.axes, self.positions.axes, self.stride)

    def kernel_axes(self) -> tuple[Axis, ...]:
        return tuple(Axis(name, sympy.Integer(k)) for name, k in zip(self.kernel_names, self.kernel))

    def windowed(self) -> Segment:
        """Output positions followed by the kernel-window axes."""
        return Segment(self.positions.axes + self.kernel_axes())

    def signature(self) -> tuple[Type, Type]:
        return Type((self.axes,)), Type((self.windowed(),))

    def label(self) -> str:
        return "★" + ("" if set(self.stride) == {1} else _fmt(self.stride))

    def hint(self) -> str:
        return "windows"


@dataclass(frozen=True)
class ConvolutionTensorTOp(ConvolutionTensorOp):
    """``★ᵀ``: the transpose of ``★`` with the same fields (overlapping windows are summed)."""

    op: ClassVar[str] = "conv_tensor_t"

    def signature(self) -> tuple[Type, Type]:
        return Type((self.windowed(),)), Type((self.axes,))

    def label(self) -> str:
        return "★ᵀ" + ("" if set(self.stride) == {1} else _fmt(self.stride))

    def hint(self) -> str:
        return "folded"


def _tensor_args(axes: TypeLike, kernel: IntOrInts, stride: IntOrInts, padding: IntOrInts, dilation: IntOrInts,
                 kernel_axes: str | None, where: str) -> dict[str, object]:
    spatial = _spatial(axes, where, (1, 2))
    n = len(spatial)
    k = _per_axis(kernel, n, "kernel", where, 1)
    s = _per_axis(stride, n, "stride", where, 1)
    p = _per_axis(padding, n, "padding", where, 0)
    d = _per_axis(dilation, n, "dilation", where, 1)
    names = tuple(kernel_axes.split()) if kernel_axes is not None else tuple("k" + a.name for a in spatial)
    return {"axes": spatial, "positions": _windows(spatial, k, s, p, d, where), "kernel_names": names,
            "kernel": k, "stride": s, "padding": p, "dilation": d}


def ConvolutionTensor(axes: TypeLike, kernel: IntOrInts, stride: IntOrInts = 1, padding: IntOrInts = 0,
                      dilation: IntOrInts = 1, *, kernel_axes: str | None = None) -> Box:
    """The convolution tensor ``★`` over 1 or 2 spatial axes, e.g. ``ConvolutionTensor("x y", 3, stride=2)``.

    ``x y -> x y kx ky``: output positions keep the spatial names (sizes by the size rule),
    kernel axes are ``k<name>`` or ``kernel_axes``.  Composed after ``c x y`` it is woven over ``c``.
    """
    return Box.make(ConvolutionTensorOp(**_tensor_args(axes, kernel, stride, padding, dilation, kernel_axes, "★")))  # type: ignore[arg-type]


def ConvolutionTensorT(axes: TypeLike, kernel: IntOrInts, stride: IntOrInts = 1, padding: IntOrInts = 0,
                       dilation: IntOrInts = 1, *, kernel_axes: str | None = None) -> Box:
    """``★ᵀ``, the transpose of ``ConvolutionTensor`` with the same arguments: ``x y kx ky -> x y``.

    ``axes`` are the full-resolution (output) axes, e.g. ``ConvolutionTensorT("x:2*n", 2, stride=2)``
    takes ``x:n kx:2`` to ``x:2*n``; overlapping windows are summed.
    """
    return Box.make(ConvolutionTensorTOp(**_tensor_args(axes, kernel, stride, padding, dilation, kernel_axes, "★ᵀ")))  # type: ignore[arg-type]


# -- learned convolution and transposed convolution ------------------------------------------
@dataclass(frozen=True)
class ConvOp(Primitive):
    """Learned convolution ``★k`` = ``★`` then **L₊** over (channels, kernel): ``c x y -> d x y``."""

    dom_axes: Segment
    cod_axes: Segment
    kernel: Ints
    stride: Ints
    padding: Ints
    dilation: Ints
    groups: Size = sympy.Integer(1)
    bias: bool = True

    op: ClassVar[str] = "conv"
    family: ClassVar[str] = "convolution"
    kind: ClassVar[Kind] = "linear"
    learned: ClassVar[bool] = True

    def __post_init__(self) -> None:
        where = self.label()
        if isinstance(self.groups, int) and not isinstance(self.groups, bool):
            object.__setattr__(self, "groups", sympy.Integer(self.groups))
        n = _check_channels(where, self.dom_axes, self.cod_axes, self.groups)
        _check_tuples(where, n, kernel=self.kernel, stride=self.stride, padding=self.padding, dilation=self.dilation)
        expected = [window_size(a.size, k, s, p, d, what=f"{where}: axis {a.name}")
                    for a, k, s, p, d in zip(self.dom_axes.axes[1:], self.kernel, self.stride, self.padding, self.dilation)]
        _check_sizes(where, self.dom_axes.axes[1:], self.cod_axes.axes[1:], expected, self.stride)

    @property
    def ndim(self) -> int:
        return len(self.kernel)

    def subs(self, mapping: Mapping[sympy.Symbol, sympy.Expr]) -> Primitive:
        return _subs_checked(self, mapping, self.dom_axes.axes[1:], self.cod_axes.axes[1:], self.stride)

    def signature(self) -> tuple[Type, Type]:
        return Type((self.dom_axes,)), Type((self.cod_axes,))

    def params(self) -> dict[str, tuple[Size, ...]]:
        c, d = self.dom_axes.axes[0].size, self.cod_axes.axes[0].size
        shapes: dict[str, tuple[Size, ...]] = {"weight": (d, c / self.groups) + tuple(sympy.Integer(k) for k in self.kernel)}
        if self.bias:
            shapes["bias"] = (d,)
        return shapes

    def label(self) -> str:
        return "★" + _fmt(self.kernel)

    def hint(self) -> str:
        return "conv"


@dataclass(frozen=True)
class ConvTransposeOp(Primitive):
    """Learned transposed convolution ``★ᵀk`` = **L₊** (channels -> channels, kernel) then ``★ᵀ``."""

    dom_axes: Segment
    cod_axes: Segment
    kernel: Ints
    stride: Ints
    padding: Ints
    output_padding: Ints
    dilation: Ints
    groups: Size = sympy.Integer(1)
    bias: bool = True

    op: ClassVar[str] = "conv_transpose"
    family: ClassVar[str] = "convolution"
    kind: ClassVar[Kind] = "linear"
    learned: ClassVar[bool] = True

    def __post_init__(self) -> None:
        where = self.label()
        if isinstance(self.groups, int) and not isinstance(self.groups, bool):
            object.__setattr__(self, "groups", sympy.Integer(self.groups))
        n = _check_channels(where, self.dom_axes, self.cod_axes, self.groups)
        _check_tuples(where, n, kernel=self.kernel, stride=self.stride, padding=self.padding,
                      output_padding=self.output_padding, dilation=self.dilation)
        for a, op, s, d in zip(self.dom_axes.axes[1:], self.output_padding, self.stride, self.dilation):
            if op >= max(s, d):
                raise SizeError(f"{where}: output_padding {op} along axis {a.name} must be smaller than the stride {s}"
                                f" or the dilation {d}")
        expected = [transposed_size(a.size, k, s, p, d, op, what=f"{where}: axis {a.name}") for a, k, s, p, op, d in
                    zip(self.dom_axes.axes[1:], self.kernel, self.stride, self.padding, self.output_padding, self.dilation)]
        _check_sizes(where, self.dom_axes.axes[1:], self.cod_axes.axes[1:], expected, (1,) * n)

    @property
    def ndim(self) -> int:
        return len(self.kernel)

    def signature(self) -> tuple[Type, Type]:
        return Type((self.dom_axes,)), Type((self.cod_axes,))

    def params(self) -> dict[str, tuple[Size, ...]]:
        c, d = self.dom_axes.axes[0].size, self.cod_axes.axes[0].size
        shapes: dict[str, tuple[Size, ...]] = {"weight": (c, d / self.groups) + tuple(sympy.Integer(k) for k in self.kernel)}
        if self.bias:
            shapes["bias"] = (d,)
        return shapes

    def label(self) -> str:
        return "★ᵀ" + _fmt(self.kernel)

    def hint(self) -> str:
        return "conv_t"


def _check_channels(where: str, dom: Segment, cod: Segment, groups: Size) -> int:
    n = len(dom) - 1
    if n not in (1, 2, 3) or len(cod) != len(dom):
        raise ParseError(f"{where}: '{dom} -> {cod}' must be 'channel + 1 to 3 spatial axes' on both sides, e.g. 'c x y -> d x y'")
    if dom.names[1:] != cod.names[1:]:
        raise ParseError(f"{where}: the output spatial axes ({' '.join(cod.names[1:])}) must keep the input's names"
                         f" ({' '.join(dom.names[1:])})")
    for seg in (dom, cod):
        if len(set(seg.names)) != len(seg):
            raise ParseError(f"{where}: the axes of '{seg}' must have distinct names")
    if dom.dtype != "float" or cod.dtype != "float":
        raise ParseError(f"{where}: convolution takes float tensors, not '{dom}' -> '{cod}'")
    if not isinstance(groups, sympy.Expr) or (_is_number(groups) and (not groups.is_integer or groups < 1)):
        raise SizeError(f"{where}: groups must be a positive whole number or a size expression, not {groups!r}")
    for axis in (dom.axes[0], cod.axes[0]):
        ratio = axis.size / groups
        if _is_number(ratio) and not ratio.is_integer:
            raise SizeError(f"{where}: groups={size_text(groups)} must divide the channel axis {axis.name}={size_text(axis.size)}")
    return n


def _conv_spec(spec: str, where: str) -> tuple[Segment, Segment]:
    left, right = split_spec(spec, where)
    dom, cod = parse_type(left), parse_type(right)
    if len(dom) != 1 or len(cod) != 1 or len(dom[0]) < 2 or len(cod[0]) < 2:
        raise ParseError(f"{where} spec {spec!r} must map one segment 'channel spatial...' to another, e.g. 'c x y -> d x y'")
    return dom[0], cod[0]


def _explicit(axis: Axis) -> bool:
    """Whether a spec token gave a size (``x:8``) rather than the bare name."""
    try:
        return not sizes_equal(axis.size, size(axis.name))
    except Exception:
        return True


def _with_sizes(where: str, dom: Segment, cod: Segment, sizes: Sequence[Size]) -> Segment:
    """The codomain with computed spatial sizes; sizes written in the spec must agree."""
    axes = [cod.axes[0]]
    for a, given, want in zip(dom.axes[1:], cod.axes[1:], sizes):
        if _explicit(given) and not sizes_equal(given.size, want):
            raise SizeError(f"{where}: output axis {given.name} is written with size {size_text(given.size)}, but input"
                            f" {a.name}={size_text(a.size)} gives {size_text(want)}")
        axes.append(Axis(given.name, want, a.role))
    return cod.with_axes(axes)


def _groups(groups: SizeLike) -> Size:
    if isinstance(groups, bool) or (isinstance(groups, int) and groups < 1):
        raise SizeError(f"conv: groups must be a positive whole number or a size expression, not {groups!r}")
    return size(groups)


def Conv(spec: str, kernel: IntOrInts = 3, stride: IntOrInts = 1, padding: IntOrInts | str = 0, dilation: IntOrInts = 1,
         groups: SizeLike = 1, bias: bool = True, name: str | None = None) -> Box:
    """Learned convolution ``★k``, e.g. ``Conv("c x y -> d x y", kernel=3, padding=1)`` (lowers to ``nn.Conv2d``).

    The first axis of each side is the channel axis, the rest (1 to 3) are spatial and keep
    their names; output sizes follow the module's size rule.  ``padding="same"`` pads
    ``dilation·(kernel−1)/2`` on each side (an odd effective kernel), ``"valid"`` is 0.  ``groups`` may be a
    size expression: ``groups="c"`` is a depthwise convolution.
    """
    dom, cod = _conv_spec(spec, "conv")
    n = len(dom) - 1
    where = f"conv {spec!r}"
    k = _per_axis(kernel, n, "kernel", where, 1)
    s = _per_axis(stride, n, "stride", where, 1)
    d = _per_axis(dilation, n, "dilation", where, 1)
    if padding == "same":
        if any(di * (ki - 1) % 2 for ki, di in zip(k, d)):
            raise SizeError(f"{where}: padding='same' needs an odd effective kernel, not kernel {k} with dilation {d}")
        p = tuple(di * (ki - 1) // 2 for ki, di in zip(k, d))
    elif padding == "valid":
        p = (0,) * n
    else:
        p = _per_axis(padding, n, "padding", where, 0)
    sizes = [window_size(a.size, ki, si, pi, di, what=f"{where}: axis {a.name}")
             for a, ki, si, pi, di in zip(dom.axes[1:], k, s, p, d)]
    return Box.make(ConvOp(dom, _with_sizes(where, dom, cod, sizes), k, s, p, d, _groups(groups), bool(bias)), name)


def ConvTranspose(spec: str, kernel: IntOrInts = 3, stride: IntOrInts = 1, padding: IntOrInts = 0,
                  output_padding: IntOrInts = 0, dilation: IntOrInts = 1, groups: SizeLike = 1, bias: bool = True,
                  name: str | None = None) -> Box:
    """Learned transposed convolution ``★ᵀk``, e.g. ``ConvTranspose("c x y -> d x y", kernel=2, stride=2)``
    (``x -> 2*x``; lowers to ``nn.ConvTranspose2d``, same arguments)."""
    dom, cod = _conv_spec(spec, "conv_transpose")
    n = len(dom) - 1
    where = f"conv_transpose {spec!r}"
    k = _per_axis(kernel, n, "kernel", where, 1)
    s = _per_axis(stride, n, "stride", where, 1)
    p = _per_axis(padding, n, "padding", where, 0)
    op = _per_axis(output_padding, n, "output_padding", where, 0)
    d = _per_axis(dilation, n, "dilation", where, 1)
    sizes = [transposed_size(a.size, ki, si, pi, di, oi, what=f"{where}: axis {a.name}")
             for a, ki, si, pi, di, oi in zip(dom.axes[1:], k, s, p, d, op)]
    return Box.make(ConvTransposeOp(dom, _with_sizes(where, dom, cod, sizes), k, s, p, op, d, _groups(groups), bool(bias)),
                    name)



# -- import recognition (ncd.trace) ------------------------------------------------------------
IMPORT.known(ConvOp, ConvTransposeOp, aten=("aten.conv1d", "aten.conv2d", "aten.conv3d", "aten.conv_transpose1d",
                                          "aten.conv_transpose2d", "aten.conv_transpose3d"))
for _cls in (ConvolutionTensorOp, ConvolutionTensorTOp):
    IMPORT.unsupported(_cls, "the paper's convolution tensor; traced convolutions import as ConvOp")


# -- derivative primitives of convolutions (backward diagrams) ---------------------------------
def conv_weight_segment(dom_axes: Segment, cod_axes: Segment, kernel: tuple[int, ...], groups: Size,
                        transposed: bool) -> Segment:
    """The weight of a convolution ``dom -> cod`` (``transposed``: of a transposed one) as one segment, torch's layout.

    Convolution: ``d c/groups κ…``; transposed convolution: ``c d/groups κ…`` (``κ1, κ2, …`` the kernel axes).
    """
    first, second = (dom_axes.axes[0], cod_axes.axes[0]) if transposed else (cod_axes.axes[0], dom_axes.axes[0])
    taken = set(dom_axes.names) | set(cod_axes.names)
    name = second.name if second.name != first.name and groups == 1 else second.name + "′"
    kernel_axes = tuple(Axis(next(f"κ{i}{s}" for s in ("", "′", "″") if f"κ{i}{s}" not in taken), size(k))
                        for i, k in enumerate(kernel, 1))
    return Segment((first, Axis(name, second.size / groups)) + kernel_axes)


@dataclass(frozen=True)
class _ConvolutionGeometry(Primitive):
    """Fields and checks shared by the convolution derivatives: both sides' axes, the weight and the window."""

    dom_axes: Segment
    cod_axes: Segment
    weight: Segment
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]

    what: ClassVar[str] = "convolution derivative"

    def __post_init__(self) -> None:
        n = len(self.kernel)
        if len(self.dom_axes) != n + 1 or len(self.cod_axes) != n + 1 or len(self.weight) != n + 2:
            raise ParseError(f"{self.what} '{self.dom_axes}' -> '{self.cod_axes}': channel + {n} spatial axes"
                             f" on each side and a weight of {n + 2} axes are needed, not '{self.weight}'")


@dataclass(frozen=True)
class ConvWithWeightOp(_ConvolutionGeometry):
    """A convolution (``transposed``: a transposed convolution) whose weight is an explicit input: ``(x, W) -> y``.

    The transposes of learned convolutions: a convolution's input gradient is the transposed
    convolution of the cotangent with the same weight (``★ᵀ`` after ``Lᵀ``), a transposed
    convolution's is the convolution (``L`` after ``★``).
    """

    output_padding: tuple[int, ...] = ()
    groups: Size = size(1)
    transposed: bool = False
    batch: Segment = Segment(())

    op: ClassVar[str] = "conv_with_weight"
    family: ClassVar[str] = "derivative"
    kind: ClassVar[Kind] = "multilinear"
    what: ClassVar[str] = "convolution with weight"

    def signature(self) -> tuple[Type, Type]:
        b = self.batch.axes
        return Type((Segment(b + self.dom_axes.axes), self.weight)), Type((Segment(b + self.cod_axes.axes),))

    def label(self) -> str:
        return ("★ᵀ" if self.transposed else "★") + "·W"


@dataclass(frozen=True)
class ConvWeightGradOp(_ConvolutionGeometry):
    """``(x, g) ↦ ∂W``: a learned convolution's weight gradient, the contraction of its windows with the cotangent.

    Sums over the output positions and the leading ``batch`` axes in one einsum.
    ``transposed``: of a transposed convolution (the windows are taken of the cotangent).
    """

    groups: Size = size(1)
    transposed: bool = False
    batch: Segment = Segment(())

    op: ClassVar[str] = "conv_weight_grad"
    family: ClassVar[str] = "derivative"
    kind: ClassVar[Kind] = "multilinear"
    what: ClassVar[str] = "convolution weight gradient"

    def signature(self) -> tuple[Type, Type]:
        b = self.batch.axes
        return Type((Segment(b + self.dom_axes.axes), Segment(b + self.cod_axes.axes))), Type((self.weight,))

    def label(self) -> str:
        return "∂★"


# -- lowering ----------------------------------------------------------------------------------


@LOWERING.rule(ConvolutionTensorOp)
def lower_conv_tensor(prim: ConvolutionTensorOp, ctx: RuleContext) -> list[str]:
    assert isinstance(prim, ConvolutionTensorOp) and not isinstance(prim, ConvolutionTensorTOp)
    n = len(prim.axes)
    expr = ctx.args[0].var
    if any(prim.padding):
        pads = tuple(p for p in reversed(prim.padding) for _ in (0, 1))
        expr = f"F.pad({expr}, {pads})"
    for k, s, d in zip(prim.kernel, prim.stride, prim.dilation):
        expr += f".unfold({-n}, {d * (k - 1) + 1}, {s})"
    if any(d != 1 for d in prim.dilation):
        expr += "[..., " + ", ".join(f"::{d}" if d != 1 else ":" for d in prim.dilation) + "]"
    return [expr]


@LOWERING.rule(ConvolutionTensorTOp)
def lower_conv_tensor_t(prim: ConvolutionTensorTOp, ctx: RuleContext) -> list[str]:
    n = len(prim.axes)
    full, positions = _sizes(ctx, prim.axes.axes), _sizes(ctx, prim.positions.axes)
    blocks = 1
    for p in positions:
        blocks *= p
    window = 1
    for k in prim.kernel:
        window *= k

    def two_d(values: tuple[int, ...] | list[int], pad: int) -> tuple[int, ...]:
        return tuple(values) if n == 2 else (pad, *values)

    x = ctx.args[0].var
    options = _options(dilation=two_d(prim.dilation, 1), padding=two_d(prim.padding, 0), stride=two_d(prim.stride, 1))
    kernel = _arg(two_d(prim.kernel, 1))
    fold = f"F.fold({x}.reshape(-1, {blocks}, {window}).transpose(-1, -2), {two_d(full, 1)}, {kernel}{options})"
    return [f"{fold}.view(*{x}.shape[:-{2 * n}], {', '.join(map(str, full))})"]


@LOWERING.rule(ConvOp)
def lower_conv(prim: ConvOp, ctx: RuleContext) -> list[Expr]:
    n = prim.ndim
    shape, out = _sizes(ctx, prim.dom_axes.axes), _sizes(ctx, prim.cod_axes.axes)
    groups = ctx.int(prim.groups, "groups")
    options = _options(stride=prim.stride, padding=prim.padding, dilation=prim.dilation, groups=(groups,))
    options += "" if prim.bias else ", bias=False"
    hint = "conv" + (f"_{ctx.box.label}" if ctx.box.label else "")
    module = ctx.em.attr(hint, f"nn.Conv{n}d({shape[0]}, {out[0]}, {_arg(prim.kernel)}{options})")
    return [_convolution(ctx, _batched(ctx.args[0].var, shape, out, module + "({})"), "module", module, f"conv{n}d",
                         prim.params()["weight"], prim, prim.groups)]


@LOWERING.rule(ConvTransposeOp)
def lower_conv_transpose(prim: ConvTransposeOp, ctx: RuleContext) -> list[Expr]:
    n = prim.ndim
    shape, out = _sizes(ctx, prim.dom_axes.axes), _sizes(ctx, prim.cod_axes.axes)
    groups = ctx.int(prim.groups, "groups")
    options = _options(stride=prim.stride, padding=prim.padding, output_padding=prim.output_padding, groups=(groups,),
                       dilation=prim.dilation)
    options += "" if prim.bias else ", bias=False"
    hint = "conv_t" + (f"_{ctx.box.label}" if ctx.box.label else "")
    module = ctx.em.attr(hint, f"nn.ConvTranspose{n}d({shape[0]}, {out[0]}, {_arg(prim.kernel)}{options})")
    return [_convolution(ctx, _batched(ctx.args[0].var, shape, out, module + "({})"), "module", module,
                         f"conv_transpose{n}d", prim.params()["weight"], prim, prim.groups)]


def _convolution(ctx: RuleContext, text: str, kind: OpKind, target: str, function: str, weight: tuple[Size, ...],
                 prim: Primitive, groups: Size) -> Expr:
    """The typed op of a convolution: what it reads, and the ``torch.nn.functional`` convolution it runs with its
    weight's shape, stride, padding, dilation and groups (what ``ncd.analysis.targets`` costs it by)."""
    from ncd.ir.program import Expr

    reads = tuple(ctx.em.values.get(v.var, v) for v in ctx.args)
    geometry = tuple((name, tuple(getattr(prim, name))) for name in ("stride", "padding", "dilation"))
    return Expr(text, kind, target, reads, options=(("function", function), ("weight", tuple(weight)), *geometry,
                                                     ("groups", groups)))


@LOWERING.rule(ConvWithWeightOp)
def lower_conv_with_weight(prim: ConvWithWeightOp, ctx: RuleContext) -> list[Expr]:
    n = len(prim.kernel)
    shape, out = _ints(ctx, prim.dom_axes), _ints(ctx, prim.cod_axes)
    groups = ctx.int(prim.groups, "groups")
    x, w = ctx.args[0].var, ctx.args[1].var
    arg = f"{x}.reshape(-1, {', '.join(map(str, shape))})"
    if prim.transposed:
        call = (f"F.conv_transpose{n}d({arg}, {w}, None, {_tuple(prim.stride)}, {_tuple(prim.padding)},"
                f" {_tuple(prim.output_padding)}, {groups}, {_tuple(prim.dilation)})")
    else:
        call = f"F.conv{n}d({arg}, {w}, None, {_tuple(prim.stride)}, {_tuple(prim.padding)}, {_tuple(prim.dilation)}, {groups})"
    function = f"conv_transpose{n}d" if prim.transposed else f"conv{n}d"
    return [_convolution(ctx, f"{call}.view(*{x}.shape[:-{n + 1}], {', '.join(map(str, out))})", "call", f"F.{function}",
                         function, tuple(a.size for a in prim.weight), prim, prim.groups)]


@LOWERING.rule(ConvWeightGradOp)
def lower_conv_weight_grad(prim: ConvWeightGradOp, ctx: RuleContext) -> list[Expr]:
    """Windows (``★``: pad, unfold, dilate) contracted with the other operand over positions and batch: one einsum,
    its two operands values of the program laid out as its subscripts read them."""
    from ncd.ir.program import Expr

    n, nb = len(prim.kernel), len(prim.batch)
    groups = ctx.int(prim.groups, "groups")
    x, g = ctx.args
    windowed, other = (g, x) if prim.transposed else (x, g)
    w_axes, o_axes = (prim.cod_axes, prim.dom_axes) if prim.transposed else (prim.dom_axes, prim.cod_axes)
    w_sizes, o_sizes = _ints(ctx, w_axes), _ints(ctx, o_axes)
    bsizes = _ints(ctx, prim.batch)
    expr = ctx.method(windowed, "reshape", -1, *bsizes, *w_sizes)
    if any(prim.padding):
        expr = ctx.call("F.pad", expr, tuple(p for p in reversed(prim.padding) for _ in (0, 1)))
    for k, s, d in zip(prim.kernel, prim.stride, prim.dilation):
        expr = ctx.method(expr, "unfold", -n, d * (k - 1) + 1, s)
    positions = o_sizes[1:]
    index = "[..., " + ", ".join(f":{p}" for p in positions) + ", " + ", ".join(f"::{d}" for d in prim.dilation) + "]"
    # the axes of the einsum's operands (the batch of leading dims folded into ``...``)
    batch, kernel = prim.batch.axes, prim.weight.axes[2:]
    group = Axis("γ", prim.groups)
    i_axis, j_axis = Axis("ι", w_axes.axes[0].size / prim.groups), Axis("ȷ", o_axes.axes[0].size / prim.groups)
    at = tuple(a.renamed(a.name + "_p") for a in o_axes.axes[1:])
    win = ctx.bind(Expr(f"{expr}{index}", "view", "Tensor.__getitem__", expr.args),
                   batch + (w_axes.axes[0],) + at + kernel, "windows")
    cw, co = w_sizes[0] // groups, o_sizes[0] // groups
    wv = ctx.bind(ctx.method(win, "reshape", -1, *bsizes, groups, cw, *positions, *prim.kernel),
                  batch + (group, i_axis) + at + kernel, "windows")
    ov = ctx.bind(ctx.method(other, "reshape", -1, *bsizes, groups, co, *positions), batch + (group, j_axis) + at,
                  "grads")
    letters = iter(einsum_letters(3 + nb + 2 * n, ctx.box, [a.name for a in (group, i_axis, j_axis, *batch, *at, *kernel)]))
    G, Ii, J = (next(letters) for _ in range(3))
    B = "".join(next(letters) for _ in range(nb))
    P = "".join(next(letters) for _ in range(n))
    K = "".join(next(letters) for _ in range(n))
    product = ctx.bind(ctx.einsum(f"...{B}{G}{Ii}{P}{K},...{B}{G}{J}{P}->...{G}{J}{Ii}{K}", wv, ov),
                       (group, j_axis, i_axis) + kernel, "weight_grad")
    lead = Expr(f"*{x.var}.shape[:-{nb + n + 1}]", args=(x,))
    return [ctx.method(product, "reshape", lead, *_ints(ctx, prim.weight))]


# -- costs and backward ------------------------------------------------------------------------


@COST.rule(ConvOp)
def cost_conv(prim: ConvOp, ctx: CostContext) -> list[Tensor]:
    """The ``nn.Conv*d`` call the program runs, costed by what it calls (``ncd.analysis.targets``); autograd keeps
    its input as the call receives it (folded: a copy unless contiguous)."""
    x = _folded(ctx)
    ctx.charge(ctx.call_to(*_CONV), [_shape(ctx.inputs[0])], grads=(x.grad, True))
    ctx.save(x)
    if prim.bias:
        ctx.other(ctx.numel(), ctx.numel())
    return [ctx.output(0)]


@COST.rule(ConvTransposeOp)
def cost_conv_transpose(prim: ConvTransposeOp, ctx: CostContext) -> list[Tensor]:
    """The ``nn.ConvTranspose*d`` call, as :func:`cost_conv`."""
    x = _folded(ctx)
    ctx.charge(ctx.call_to(*_CONV_T), [_shape(ctx.inputs[0])], grads=(x.grad, True))
    ctx.save(x)
    if prim.bias:
        ctx.other(ctx.numel(), ctx.numel())
    return [ctx.output(0)]


_CONV = tuple(f"conv{n}d" for n in (1, 2, 3))
_CONV_T = tuple(f"conv_transpose{n}d" for n in (1, 2, 3))


def _shape(t: Tensor) -> tuple[sympy.Expr, ...]:
    return tuple(a.size for a in t.axes)


@COST.rule(ConvolutionTensorOp)
def cost_conv_tensor(prim: ConvolutionTensorOp, ctx: CostContext) -> list[Tensor]:
    x = ctx.inputs[0]
    if any(prim.padding):
        x = ctx.new(x.axes, grad=x.grad)  # F.pad writes a new tensor
    return [replace(x, axes=ctx.out_axes[0], order=(), dense=False)]


@COST.rule(ConvolutionTensorTOp)
def cost_conv_tensor_t(prim: ConvolutionTensorTOp, ctx: CostContext) -> list[Tensor]:
    x = ctx.inputs[0]
    if not x.contiguous:
        ctx.new(x.axes, grad=x.grad)
    ctx.other(x.numel, sympy.Integer(0))
    return [ctx.output(0)]


# -- backward ------------------------------------------------------------------------------
def _swap(prim: ConvolutionTensorOp, cls: type[ConvolutionTensorOp]) -> Box:
    return Box(cls(prim.axes, prim.positions, prim.kernel_names, prim.kernel, prim.stride, prim.padding, prim.dilation))


@transpose(ConvolutionTensorOp)
def transpose_conv_tensor(prim: ConvolutionTensorOp, box: Box) -> Diagram:
    """``★`` is linear: its transpose is ``★ᵀ`` (fold: overlapping windows summed)."""
    return _swap(prim, ConvolutionTensorTOp)


@transpose(ConvolutionTensorTOp)
def transpose_conv_tensor_t(prim: ConvolutionTensorTOp, box: Box) -> Diagram:
    return _swap(prim, ConvolutionTensorOp)


def _woven(box: Box, axes: tuple[Axis, ...], dom_pos: tuple[int | None, ...], cod_pos: tuple[int, ...]) -> Diagram:
    """``box`` woven over ``axes`` (outermost first), each at the same positions."""
    result: Diagram = box
    for axis in reversed(axes):
        result = Weave(result, axis, dom_pos, cod_pos)
    return result


def _decomposed(prim: ConvOp) -> BoxBackward:
    """The paper's decomposition: a learned convolution is ``★`` then ``L₊`` over (channels, kernel).

    ``∂x = ★ᵀ(Lᵀ g)``, ``∂W = Σ_positions ∂L(★x, g)``, ``∂b = Σ_positions g`` (``groups=1``, 1 or 2 spatial axes).
    """
    channel, spatial = prim.dom_axes.axes[0], Segment(prim.dom_axes.axes[1:])
    out_channel, positions = prim.cod_axes.axes[0], Segment(prim.cod_axes.axes[1:])
    taken = set(prim.dom_axes.names) | set(prim.cod_axes.names)
    kernel_names = tuple(next(f"κ{i}{s}" for s in ("", "′", "″") if f"κ{i}{s}" not in taken) for i in range(1, len(spatial) + 1))
    star = ConvolutionTensorOp(spatial, positions, kernel_names, prim.kernel, prim.stride, prim.padding, prim.dilation)
    star_t = ConvolutionTensorTOp(spatial, positions, kernel_names, prim.kernel, prim.stride, prim.padding, prim.dilation)
    window = Segment((channel,) + star.kernel_axes())  # what L maps from, at each position
    cod = Segment((out_channel,))
    n = len(positions)
    windows = Weave(Box(star), channel, (0,), (0,))  # c x y -> c x′ y′ κ1 κ2
    weight = _woven(Box(LinearWeightGradOp(window, cod)), positions.axes, (1, 1), (0,))
    weight_sum = Box(EinsumOp(Type((weight.cod[0],)), Segment(weight.cod[0].axes[n:])))
    d_weight = Seq.of(Par.of(windows, Identity(Type((prim.cod_axes,)))), weight, weight_sum)
    d_input = Seq.of(_woven(Box(LinearTransposeOp(window, cod)), positions.axes, (1, None), (1,)),
                     Weave(Box(star_t), channel, (0,), (0,)))
    parts = [d_input, d_weight]
    picks = [2, 1, 0, 2]
    if prim.bias:
        parts.append(Box(EinsumOp(Type((prim.cod_axes,)), cod)))
        picks.append(2)
    segments = [prim.dom_axes, d_input.dom[1], prim.cod_axes]
    grads = ("weight", "bias") if prim.bias else ("weight",)
    return BoxBackward((("in", 0), ("param", "weight")), Seq.of(route(segments, picks), Par.of(*parts)), grads)


def _weight_products(dom: Segment, cod: Segment, weight: Segment, kernel: tuple[int, ...], stride: tuple[int, ...],
                     padding: tuple[int, ...], dilation: tuple[int, ...], groups: Size, transposed: bool,
                     batch: tuple[Axis, ...]) -> tuple[Box, Box]:
    """The two products of a convolution ``dom -> cod`` (``transposed``: a transposed one) with ``weight``:
    ``(g, W) -> ∂x`` (the transposed convolution of the cotangent with the same weight; for a transposed convolution the
    convolution — the transpose of ``★ᵀ`` is ``★``) and ``(x, g) -> ∂W`` (the windows contracted with the other operand
    over positions and the leading ``batch`` in one einsum, ``∂★``)."""
    if transposed:
        output_padding: tuple[int, ...] = ()
    else:
        output_padding = tuple(int(a.size - transposed_size(b.size, k, s, p, d)) if not (a.size - transposed_size(
            b.size, k, s, p, d)).free_symbols else 0 for a, b, k, s, p, d in
            zip(dom.axes[1:], cod.axes[1:], kernel, stride, padding, dilation))
    d_input = Box(ConvWithWeightOp(cod, dom, weight, kernel, stride, padding, dilation, output_padding, groups,
                                   not transposed, Segment(batch)))
    d_weight = Box(ConvWeightGradOp(dom, cod, weight, kernel, stride, padding, dilation, groups, transposed,
                                    Segment(batch)))
    return d_input, d_weight


def _with_weight(prim: ConvOp | ConvTransposeOp, batch: tuple[Axis, ...]) -> BoxBackward:
    """Any learned convolution or transposed convolution (groups, 1 to 3 spatial axes): ``∂x`` and ``∂W`` by
    :func:`_weight_products`, ``∂b = Σ g``."""
    transposed = isinstance(prim, ConvTransposeOp)
    dom, cod = prim.dom_axes, prim.cod_axes
    weight = conv_weight_segment(dom, cod, prim.kernel, prim.groups, transposed)
    d_input, d_weight = _weight_products(dom, cod, weight, prim.kernel, prim.stride, prim.padding, prim.dilation,
                                         prim.groups, transposed, batch)
    xb, gb = Segment(tuple(batch) + dom.axes), Segment(tuple(batch) + cod.axes)
    parts: list[Diagram] = [d_input, d_weight]
    picks = [2, 1, 0, 2]
    if prim.bias:
        parts.append(Box(EinsumOp(Type((gb,)), Segment((cod.axes[0],)))))
        picks.append(2)
    grads = ("weight", "bias") if prim.bias else ("weight",)
    return BoxBackward((("in", 0), ("param", "weight")), Seq.of(route([xb, weight, gb], picks), Par.of(*parts)), grads)


@partials(ConvWithWeightOp)
def partials_conv_with_weight(prim: ConvWithWeightOp, box: Box, i: int) -> Diagram:
    """A convolution whose weight is a wire (BiT's standardised weights; the transposes of learned convolutions) is
    bilinear in ``(x, W)``: ``(g, W) -> ∂x`` and ``(g, x) -> ∂W`` are the products of :func:`_weight_products`."""
    d_input, d_weight = _weight_products(prim.dom_axes, prim.cod_axes, prim.weight, prim.kernel, prim.stride,
                                         prim.padding, prim.dilation, prim.groups, prim.transposed, prim.batch.axes)
    return d_input if i == 0 else Seq.of(route([box.cod[0], box.dom[0]], [1, 0]), d_weight)


@BATCHED_BACKWARD.rule(ConvOp)
def batched_backward_conv(prim: ConvOp, box: Box, builder: Builder, batch: tuple[Axis, ...]) -> BoxBackward:
    """Ungrouped 1-d/2-d: through ``★`` (the paper's decomposition); otherwise, or woven over leading axes, ``_with_weight``."""
    if prim.groups == 1 and len(prim.kernel) in (1, 2) and not batch:
        return _decomposed(prim)
    return _with_weight(prim, batch)


@BACKWARD.rule(ConvOp)
def backward_conv(prim: ConvOp, box: Box, builder: Builder) -> BoxBackward:
    return batched_backward_conv(prim, box, builder, ())


@BATCHED_BACKWARD.rule(ConvTransposeOp)
def batched_backward_conv_transpose(prim: ConvTransposeOp, box: Box, builder: Builder, batch: tuple[Axis, ...]) -> BoxBackward:
    return _with_weight(prim, batch)


@BACKWARD.rule(ConvTransposeOp)
def backward_conv_transpose(prim: ConvTransposeOp, box: Box, builder: Builder) -> BoxBackward:
    return _with_weight(prim, ())


@COST.rule(ConvWithWeightOp)
def cost_conv_with_weight(prim: ConvWithWeightOp, ctx: CostContext) -> list[Tensor]:
    """``F.conv*`` / ``F.conv_transpose*`` with the weight an input, costed by what it calls
    (``ncd.analysis.targets``): both operands kept, a product per gradient."""
    x, w = ctx.inputs
    flat = x if x.contiguous else ctx.new(x.axes, grad=x.grad)
    ctx.charge(ctx.call_to(*_CONV, *_CONV_T), [_shape(x), _shape(w)], grads=(x.grad, w.grad))
    if x.grad or w.grad:
        ctx.save(*([flat] if w.grad else []), *([w] if x.grad else []))
    return [ctx.output(0)]


@COST.rule(ConvWeightGradOp)
def cost_conv_weight_grad(prim: ConvWeightGradOp, ctx: CostContext) -> list[Tensor]:
    """The windows (a copy when reshaped) contracted with the other operand: ``torch.einsum``'s ``bmm``."""
    x, g = ctx.inputs
    windowed, other = (g, x) if prim.transposed else (x, g)
    w_axes, o_axes = (prim.cod_axes, prim.dom_axes) if prim.transposed else (prim.dom_axes, prim.cod_axes)
    groups = Axis("γ", prim.groups)
    kernel = prim.weight.axes[2:]
    positions = tuple(a.renamed(a.name + "_p") for a in o_axes.axes[1:])
    batch = prim.batch.axes
    i_axis = Axis("ι", w_axes.axes[0].size / prim.groups)
    j_axis = Axis("ȷ", o_axes.axes[0].size / prim.groups)
    win = ctx.new(batch + (groups, i_axis) + positions + kernel, grad=windowed.grad)
    oth = other if other.contiguous else ctx.new(other.axes, grad=other.grad)
    oth = replace(oth, axes=batch + (groups, j_axis) + positions, order=(), dense=True)
    from ncd.analysis.linear import einsum_cost  # the contraction's costs as torch.einsum runs it

    result = einsum_cost(ctx, [win, oth], (groups, j_axis, i_axis) + kernel)
    return [replace(result, axes=ctx.out_axes[0], order=(), dtype="float", dense=True)]

BACKWARD.unsupported(ConvWeightGradOp, SECOND_ORDER)
IMPORT.unsupported(ConvWeightGradOp, NOT_TRACED)
IMPORT.known(ConvWithWeightOp, aten=("aten.conv2d", "aten.conv3d"), by="ncd.trace.boxes_windows")
