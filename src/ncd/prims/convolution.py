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
from dataclasses import dataclass
from typing import ClassVar, Union

import sympy

from ncd.errors import ParseError, SizeError
from ncd.ir.axes import Axis, Segment, Type, TypeLike, as_type, parse_type
from ncd.ir.diagram import Box
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import IMPORT
from ncd.ir.size import Size, SizeLike, size, size_text, sizes_equal, substitute
from ncd.prims.linear import split_spec

__all__ = [
    "ConvolutionTensorOp",
    "ConvolutionTensorTOp",
    "ConvOp",
    "ConvTransposeOp",
    "MaxPoolOp",
    "AvgPoolOp",
    "AdaptiveAvgPoolOp",
    "ConvolutionTensor",
    "ConvolutionTensorT",
    "Conv",
    "ConvTranspose",
    "MaxPool",
    "AvgPool",
    "AdaptiveAvgPool",
    "window_size",
    "transposed_size",
]

Ints = tuple[int, ...]
IntOrInts = Union[int, Sequence[int]]


# -- size arithmetic ----------------------------------------------------------------------
def _is_number(value: Size) -> bool:
    return not value.free_symbols


def _whole(value: Size, what: str) -> int:
    if not value.is_integer:
        raise SizeError(f"{what} has size {size_text(value)}, which is not a whole number")
    return int(value)


def window_size(x: Size, kernel: int, stride: int, padding: int, dilation: int, what: str = "axis") -> Size:
    """Number of kernel windows along an axis of size ``x`` (see the module's size rule).

    >>> from ncd.ir.size import size
    >>> window_size(size("x"), 3, 2, 1, 1), window_size(size(7), 3, 2, 1, 1), window_size(size("x"), 3, 1, 0, 1)
    (x/2, 4, x - 2)
    """
    e = 2 * padding - dilation * (kernel - 1) - 1
    if _is_number(x):
        out = (_whole(x, what) + e) // stride + 1
        if out < 1:
            raise SizeError(
                f"{what} of size {size_text(x)} (padding {padding} on each side) is shorter than the kernel's span"
                f" {dilation * (kernel - 1) + 1} (kernel {kernel}, dilation {dilation})"
            )
        return sympy.Integer(out)
    if stride == 1:
        return x + e + 1
    return x / stride + e // stride + 1


def transposed_size(x: Size, kernel: int, stride: int, padding: int, dilation: int, output_padding: int = 0,
                    what: str = "axis") -> Size:
    """Output size of a transposed convolution: ``(x − 1)s − 2p + d(k−1) + output_padding + 1``.

    >>> from ncd.ir.size import size
    >>> transposed_size(size("x"), 4, 2, 1, 1)
    2*x
    """
    out = (x - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1
    if _is_number(out) and _whole(out, what) < 1:
        raise SizeError(f"{what} of size {size_text(x)} gives a transposed-convolution output of {size_text(out)} positions")
    return out


def _check_sizes(what: str, inputs: Sequence[Axis], outputs: Sequence[Axis], expected: Sequence[Size],
                 strides: Sequence[int]) -> None:
    """Every stored output size must equal what the size rule gives for its input axis."""
    for a, b, want, s in zip(inputs, outputs, expected, strides):
        if sizes_equal(b.size, want):
            continue
        if _is_number(b.size) and not b.size.is_integer:
            raise _not_divisible(what, a.name, a.size, b.size, s)
        raise SizeError(
            f"{what}: output axis {b.name} has size {size_text(b.size)}, but input axis {a.name}={size_text(a.size)}"
            f" gives {size_text(want)}"
        )


def _not_divisible(what: str, name: str, value: Size, out: Size, stride: int) -> SizeError:
    return SizeError(
        f"{what}: stride {stride} does not divide axis {name}={size_text(value)}: the output size, written"
        f" symbolically before {name} was bound, would be {size_text(out)}; bind {name} before building"
        f" the box to use PyTorch's floor rule, or choose a multiple of {stride}"
    )


def _subs_checked(prim: Primitive, mapping: Mapping[sympy.Symbol, sympy.Expr], inputs: Sequence[Axis],
                  outputs: Sequence[Axis], strides: Sequence[int]) -> Primitive:
    """``Primitive.subs`` that explains a binding breaking the symbolic size rule's divisibility."""
    for a, b, s in zip(inputs, outputs, strides):
        out = substitute(b.size, mapping)
        if _is_number(out) and not out.is_integer:
            raise _not_divisible(prim.label(), a.name, substitute(a.size, mapping), out, s)
    return Primitive.subs(prim, mapping)


def _per_axis(value: object, n: int, what: str, where: str, minimum: int) -> Ints:
    if isinstance(value, bool):
        raise ParseError(f"{where}: {what} must be a whole number or one per spatial axis, not {value!r}")
    if isinstance(value, int):
        values: Ints = (value,) * n
    elif isinstance(value, (tuple, list)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        values = tuple(value)
        if len(values) != n:
            raise ParseError(f"{where}: {what} {values} has {len(values)} entries but there are {n} spatial axes")
    else:
        raise ParseError(f"{where}: {what} must be a whole number or one per spatial axis, not {value!r}")
    if any(v < minimum for v in values):
        raise SizeError(f"{where}: {what} must be at least {minimum}, not {value!r}")
    return values


def _check_tuples(where: str, n: int, **tuples: Ints) -> None:
    """Validate stored tuples (they may come from JSON, not only from the constructors)."""
    minimum = {"kernel": 1, "stride": 1, "dilation": 1, "padding": 0, "output_padding": 0}
    for what, values in tuples.items():
        if not isinstance(values, tuple) or len(values) != n or not all(isinstance(v, int) for v in values):
            raise ParseError(f"{where}: {what} must be {n} whole number(s), one per spatial axis, not {values!r}")
        if any(v < minimum[what] for v in values):
            raise SizeError(f"{where}: {what} must be at least {minimum[what]}, not {values}")


def _spatial(text: TypeLike, where: str, dims: tuple[int, ...] = (1, 2, 3)) -> Segment:
    t = as_type(text)
    if len(t) != 1 or len(t[0]) not in dims or t[0].dtype != "float":
        allowed = " or ".join(str(d) for d in dims)
        raise ParseError(f"{where}: give {allowed} spatial axes as one segment, e.g. 'x y', not '{t}'")
    if len(set(t[0].names)) != len(t[0]):
        raise ParseError(f"{where}: spatial axes '{t}' repeat a name")
    return t[0]


def _fmt(values: Ints) -> str:
    return str(values[0]) if len(set(values)) == 1 else "×".join(map(str, values))


def _windows(axes: Segment, kernel: Ints, stride: Ints, padding: Ints, dilation: Ints, where: str) -> Segment:
    return axes.with_axes(
        Axis(a.name, window_size(a.size, k, s, p, d, what=f"{where}: axis {a.name}"), a.role)
        for a, k, s, p, d in zip(axes, kernel, stride, padding, dilation)
    )


def _resized(axes: Segment, sizes: Sequence[Size]) -> Segment:
    return axes.with_axes(Axis(a.name, sz, a.role) for a, sz in zip(axes, sizes))


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


# -- pooling ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MaxPoolOp(Primitive):
    """Max pooling: ``★`` (padding −∞) then ``Max`` over the kernel axes, fused."""

    axes: Segment
    positions: Segment
    kernel: Ints
    stride: Ints
    padding: Ints
    dilation: Ints

    op: ClassVar[str] = "maxpool"
    family: ClassVar[str] = "convolution"
    kind: ClassVar[Kind] = "nonlinear"

    def __post_init__(self) -> None:
        _check_pool(self, self.dilation)

    def subs(self, mapping: Mapping[sympy.Symbol, sympy.Expr]) -> Primitive:
        return _subs_checked(self, mapping, self.axes.axes, self.positions.axes, self.stride)

    def signature(self) -> tuple[Type, Type]:
        return Type((self.axes,)), Type((self.positions,))

    def label(self) -> str:
        return f"★{_fmt(self.kernel)}→Max"

    def hint(self) -> str:
        return "pooled"


@dataclass(frozen=True)
class AvgPoolOp(Primitive):
    """Average pooling: ``★`` then the mean ``𝔼`` over the kernel axes, fused."""

    axes: Segment
    positions: Segment
    kernel: Ints
    stride: Ints
    padding: Ints
    count_include_pad: bool = True

    op: ClassVar[str] = "avgpool"
    family: ClassVar[str] = "convolution"
    kind: ClassVar[Kind] = "linear"

    def __post_init__(self) -> None:
        _check_pool(self, (1,) * len(self.kernel))

    def subs(self, mapping: Mapping[sympy.Symbol, sympy.Expr]) -> Primitive:
        return _subs_checked(self, mapping, self.axes.axes, self.positions.axes, self.stride)

    def signature(self) -> tuple[Type, Type]:
        return Type((self.axes,)), Type((self.positions,))

    def label(self) -> str:
        return f"★{_fmt(self.kernel)}→𝔼"

    def hint(self) -> str:
        return "pooled"


def _check_pool(prim: MaxPoolOp | AvgPoolOp, dilation: Ints) -> None:
    where, n = prim.label(), len(prim.axes)
    if n not in (1, 2, 3) or prim.positions.names != prim.axes.names:
        raise ParseError(f"{where}: positions '{prim.positions}' must name the 1 to 3 spatial axes '{prim.axes}'")
    _check_tuples(where, n, kernel=prim.kernel, stride=prim.stride, padding=prim.padding, dilation=dilation)
    for a, k, p, d in zip(prim.axes, prim.kernel, prim.padding, dilation):
        if 2 * p > d * (k - 1) + 1:
            raise SizeError(f"{where}: padding {p} along axis {a.name} is more than half the kernel's span"
                            f" {d * (k - 1) + 1} (kernel {k}, dilation {d})")
    expected = [window_size(a.size, k, s, p, d, what=f"{where}: axis {a.name}")
                for a, k, s, p, d in zip(prim.axes, prim.kernel, prim.stride, prim.padding, dilation)]
    _check_sizes(where, prim.axes.axes, prim.positions.axes, expected, prim.stride)


def _pool_args(axes: TypeLike, kernel: IntOrInts, stride: IntOrInts | None, padding: IntOrInts, dilation: IntOrInts,
               where: str) -> tuple[Segment, Segment, Ints, Ints, Ints, Ints]:
    spatial = _spatial(axes, where)
    n = len(spatial)
    k = _per_axis(kernel, n, "kernel", where, 1)
    s = k if stride is None else _per_axis(stride, n, "stride", where, 1)
    p = _per_axis(padding, n, "padding", where, 0)
    d = _per_axis(dilation, n, "dilation", where, 1)
    return spatial, _windows(spatial, k, s, p, d, where), k, s, p, d


def MaxPool(axes: TypeLike, kernel: IntOrInts, stride: IntOrInts | None = None, padding: IntOrInts = 0,
            dilation: IntOrInts = 1) -> Box:
    """Max pooling over 1 to 3 spatial axes, e.g. ``MaxPool("x y", 2)`` (``stride`` defaults to ``kernel``)."""
    return Box.make(MaxPoolOp(*_pool_args(axes, kernel, stride, padding, dilation, "maxpool")))


def AvgPool(axes: TypeLike, kernel: IntOrInts, stride: IntOrInts | None = None, padding: IntOrInts = 0,
            count_include_pad: bool = True) -> Box:
    """Average pooling over 1 to 3 spatial axes, e.g. ``AvgPool("x y", 2)`` (``stride`` defaults to ``kernel``)."""
    spatial, positions, k, s, p, _ = _pool_args(axes, kernel, stride, padding, 1, "avgpool")
    return Box.make(AvgPoolOp(spatial, positions, k, s, p, bool(count_include_pad)))


@dataclass(frozen=True)
class AdaptiveAvgPoolOp(Primitive):
    """Adaptive average pooling to fixed output sizes (``F.adaptive_avg_pool*``'s windows)."""

    axes: Segment
    positions: Segment

    op: ClassVar[str] = "adaptive_avgpool"
    family: ClassVar[str] = "convolution"
    kind: ClassVar[Kind] = "linear"

    def __post_init__(self) -> None:
        if len(self.axes) not in (1, 2, 3) or self.positions.names != self.axes.names:
            raise ParseError(f"{self.label()}: positions '{self.positions}' must name the 1 to 3 spatial axes '{self.axes}'")
        for a in self.positions:
            if _is_number(a.size) and (not a.size.is_integer or a.size < 1):
                raise SizeError(f"{self.label()}: output size of axis {a.name} must be a positive whole number, not"
                                f" {size_text(a.size)}")

    def signature(self) -> tuple[Type, Type]:
        return Type((self.axes,)), Type((self.positions,))

    def label(self) -> str:
        return "𝔼→" + " ".join(size_text(a.size) for a in self.positions)

    def hint(self) -> str:
        return "pooled"


def AdaptiveAvgPool(axes: TypeLike, output: SizeLike | Sequence[SizeLike]) -> Box:
    """Adaptive average pooling of 1 to 3 spatial axes to ``output`` sizes, e.g. ``AdaptiveAvgPool("x y", 1)``."""
    where = "adaptive_avgpool"
    spatial = _spatial(axes, where)
    sizes = list(output) if isinstance(output, (tuple, list)) else [output] * len(spatial)
    if len(sizes) != len(spatial):
        raise ParseError(f"{where}: output {tuple(sizes)} has {len(sizes)} entries but there are {len(spatial)} spatial axes")
    return Box.make(AdaptiveAvgPoolOp(spatial, _resized(spatial, [size(v) for v in sizes])))


# -- import recognition (ncd.trace) ------------------------------------------------------------
IMPORT.known(ConvOp, ConvTransposeOp, aten=("aten.conv1d", "aten.conv2d", "aten.conv3d", "aten.conv_transpose1d",
                                          "aten.conv_transpose2d", "aten.conv_transpose3d"))
IMPORT.known(MaxPoolOp, aten=("aten.max_pool1d", "aten.max_pool2d", "aten.max_pool3d"))
IMPORT.known(AvgPoolOp, aten=("aten.avg_pool1d", "aten.avg_pool2d", "aten.avg_pool3d"))
IMPORT.unsupported(AdaptiveAvgPoolOp, "not recognised yet: a traced adaptive pooling becomes an opaque box")
for _cls in (ConvolutionTensorOp, ConvolutionTensorTOp):
    IMPORT.unsupported(_cls, "the paper's convolution tensor; traced convolutions import as ConvOp")
