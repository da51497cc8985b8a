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
from typing import TYPE_CHECKING, ClassVar

import sympy

from ncd.errors import ParseError, SizeError
from ncd.ir.axes import Axis, Segment, Type, parse_type
from ncd.ir.diagram import Box, Diagram, Identity, Par, Seq, Weave
from ncd.ir.primitive import Kind, Primitive
from ncd.ir.rules import BACKWARD, BATCHED_BACKWARD, COST, IMPORT, LOWERING, BoxBackward
from ncd.ir.size import Size, SizeLike, size, size_text, sizes_equal
from ncd.prims.convolution_derivative import _weight_products, conv_weight_segment
from ncd.prims.convolution_tensor import ConvolutionTensor, ConvolutionTensorOp, ConvolutionTensorT, ConvolutionTensorTOp
from ncd.prims.derivative import LinearTransposeOp, LinearWeightGradOp
from ncd.prims.linear import EinsumOp, split_spec
from ncd.prims.structure import route
from ncd.prims.windows import (
    _CONV,
    _CONV_T,
    IntOrInts,
    Ints,
    _arg,
    _batched,
    _check_sizes,
    _check_tuples,
    _convolution,
    _fmt,
    _folded,
    _is_number,
    _options,
    _per_axis,
    _shape,
    _sizes,
    _subs_checked,
    transposed_size,
    window_size,
)

if TYPE_CHECKING:
    from ncd.analysis.backward import Builder
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.ir.program import Expr
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


# -- learned convolution and transposed convolution ------------------------------------------------
class _LearnedConvolution(Primitive):
    """What a learned convolution and a transposed one share: a channel and 1 to 3 spatial axes on both sides,
    ``groups``, a weight over (channels, kernel) and a bias over the output channel."""

    dom_axes: Segment
    cod_axes: Segment
    kernel: Ints
    groups: Size
    bias: bool

    family: ClassVar[str] = "convolution"
    kind: ClassVar[Kind] = "linear"
    learned: ClassVar[bool] = True
    #: whether the weight's first axis is the input channel (torch's transposed convolutions), else the output channel
    input_channel_first: ClassVar[bool] = False

    def _check(self, **tuples: Ints) -> tuple[str, int]:
        """``groups`` as a size, the channel and spatial axes, one entry of each of ``tuples`` per spatial axis: the
        label that errors name and the number of spatial axes."""
        where = self.label()
        if isinstance(self.groups, int) and not isinstance(self.groups, bool):
            object.__setattr__(self, "groups", sympy.Integer(self.groups))
        n = _check_channels(where, self.dom_axes, self.cod_axes, self.groups)
        _check_tuples(where, n, **tuples)
        return where, n

    @property
    def ndim(self) -> int:
        return len(self.kernel)

    def signature(self) -> tuple[Type, Type]:
        return Type((self.dom_axes,)), Type((self.cod_axes,))

    def params(self) -> dict[str, tuple[Size, ...]]:
        c, d = self.dom_axes.axes[0].size, self.cod_axes.axes[0].size
        first, second = (c, d) if self.input_channel_first else (d, c)
        kernel = tuple(sympy.Integer(k) for k in self.kernel)
        shapes: dict[str, tuple[Size, ...]] = {"weight": (first, second / self.groups) + kernel}
        if self.bias:
            shapes["bias"] = (d,)
        return shapes


@dataclass(frozen=True)
class ConvOp(_LearnedConvolution):
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

    def __post_init__(self) -> None:
        where, _ = self._check(kernel=self.kernel, stride=self.stride, padding=self.padding, dilation=self.dilation)
        expected = [window_size(a.size, k, s, p, d, what=f"{where}: axis {a.name}")
                    for a, k, s, p, d in zip(self.dom_axes.axes[1:], self.kernel, self.stride, self.padding, self.dilation)]
        _check_sizes(where, self.dom_axes.axes[1:], self.cod_axes.axes[1:], expected, self.stride)

    def subs(self, mapping: Mapping[sympy.Symbol, sympy.Expr]) -> Primitive:
        return _subs_checked(self, mapping, self.dom_axes.axes[1:], self.cod_axes.axes[1:], self.stride)

    def label(self) -> str:
        return "★" + _fmt(self.kernel)

    def hint(self) -> str:
        return "conv"


@dataclass(frozen=True)
class ConvTransposeOp(_LearnedConvolution):
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
    input_channel_first: ClassVar[bool] = True

    def __post_init__(self) -> None:
        where, n = self._check(kernel=self.kernel, stride=self.stride, padding=self.padding,
                               output_padding=self.output_padding, dilation=self.dilation)
        for a, op, s, d in zip(self.dom_axes.axes[1:], self.output_padding, self.stride, self.dilation):
            if op >= max(s, d):
                raise SizeError(f"{where}: output_padding {op} along axis {a.name} must be smaller than the stride {s}"
                                f" or the dilation {d}")
        expected = [transposed_size(a.size, k, s, p, d, op, what=f"{where}: axis {a.name}") for a, k, s, p, op, d in
                    zip(self.dom_axes.axes[1:], self.kernel, self.stride, self.padding, self.output_padding, self.dilation)]
        _check_sizes(where, self.dom_axes.axes[1:], self.cod_axes.axes[1:], expected, (1,) * n)

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
    if isinstance(groups, sympy.Integer) and groups.p >= 1 and all(  # whole numbers: the checks below, in Python ints
            isinstance(a.size, sympy.Integer) and a.size.p % groups.p == 0 for a in (dom.axes[0], cod.axes[0])):
        return n
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


# -- import recognition (ncd.trace) ----------------------------------------------------------------
IMPORT.known(ConvOp, ConvTransposeOp, aten=("aten.conv1d", "aten.conv2d", "aten.conv3d", "aten.conv_transpose1d",
                                          "aten.conv_transpose2d", "aten.conv_transpose3d"))


# -- lowering --------------------------------------------------------------------------------------
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


# -- costs -----------------------------------------------------------------------------------------
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


# -- backward --------------------------------------------------------------------------------------
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
