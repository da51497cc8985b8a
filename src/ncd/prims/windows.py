"""Window arithmetic shared by convolution and pooling: output sizes, argument checks, lowering helpers.

>>> import sympy
>>> from ncd.prims.windows import window_size
>>> window_size(sympy.Integer(32), kernel=3, stride=2, padding=1, dilation=1)
16
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Union

import sympy

from ncd.errors import ParseError, SizeError, derived_size, worded_later
from ncd.ir.axes import Axis, Segment, TypeLike, as_type
from ncd.ir.primitive import Primitive
from ncd.ir.size import Size, size_text, sizes_equal, substitute

if TYPE_CHECKING:
    from ncd.analysis.cost import CostContext
    from ncd.analysis.layout import Tensor
    from ncd.ir.program import Expr, OpKind
    from ncd.torch.rules import RuleContext

Ints = tuple[int, ...]
IntOrInts = Union[int, Sequence[int]]


# -- size arithmetic ----------------------------------------------------------------------
def _is_number(value: Size) -> bool:
    return not value.free_symbols


def _whole(value: Size, what: str) -> int:
    if not value.is_integer:
        raise SizeError(f"{what} has size {size_text(value)}, which is not a whole number")
    return int(value)


def window_size(x: Size, kernel: int, stride: int, padding: int, dilation: int, what: str = "axis",
                ceil: bool = False) -> Size:
    """Number of kernel windows along an axis of size ``x`` (see the module's size rule).

    ``ceil`` (pooling's ``ceil_mode``): a last, partial window where the stride leaves entries over, as long as it
    starts inside the axis or its left padding (PyTorch's rule); symbolically, for an ``x`` the stride divides.

    >>> from ncd.ir.size import size
    >>> window_size(size("x"), 3, 2, 1, 1), window_size(size(7), 3, 2, 1, 1), window_size(size("x"), 3, 1, 0, 1)
    (x/2, 4, x - 2)
    >>> window_size(size(7), 2, 2, 0, 1, ceil=True), window_size(size(5), 2, 2, 1, 1, ceil=True)
    (4, 3)
    >>> window_size(size("x"), 3, 2, 0, 1, ceil=True)
    x/2
    """
    e = 2 * padding - dilation * (kernel - 1) - 1
    extra = stride - 1 if ceil else 0
    if _is_number(x):
        n = _whole(x, what)
        out = (n + e + extra) // stride + 1
        if ceil and (out - 1) * stride >= n + padding:
            out -= 1
        if out < 1:
            raise SizeError(
                f"{what} of size {size_text(x)} (padding {padding} on each side) is shorter than the kernel's span"
                f" {dilation * (kernel - 1) + 1} (kernel {kernel}, dilation {dilation})"
            )
        return sympy.Integer(out)
    if stride == 1:
        return x + e + 1
    last = 1 if ceil and stride * ((e + extra) // stride) >= padding else 0  # (out - 1)·s ≥ x + p, for x = k·s
    return x / stride + (e + extra) // stride + 1 - last


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
        raise derived_size(SizeError(worded_later(partial(_unequal, what, a, b, want))),  # (worded when read: the
                           # symbolic pass of a trace, which learns from what it derives, mostly never does)
                           *[(y.name, y.size, w) for y, w in zip(outputs, expected) if not sizes_equal(y.size, w)])


def _unequal(what: str, a: Axis, b: Axis, want: Size) -> str:
    return f"{what}: output axis {b.name} has size {size_text(b.size)}, but input axis {a.name}={size_text(a.size)}" \
           f" gives {size_text(want)}"


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
        if _is_number(out) and out < 1:  # the window is wider than the (padded) axis
            raise SizeError(f"{prim.label()}: axis {a.name}={size_text(substitute(a.size, mapping))} is narrower than its"
                            f" window: the output axis {b.name} would have size {size_text(out)}"
                            f" ({b.name} = {size_text(b.size)}); bind {a.name} larger, or pad it")
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


def _windows(axes: Segment, kernel: Ints, stride: Ints, padding: Ints, dilation: Ints, where: str,
             ceil: bool = False) -> Segment:
    return axes.with_axes(
        Axis(a.name, window_size(a.size, k, s, p, d, what=f"{where}: axis {a.name}", ceil=ceil), a.role)
        for a, k, s, p, d in zip(axes, kernel, stride, padding, dilation)
    )


def _resized(axes: Segment, sizes: Sequence[Size]) -> Segment:
    return axes.with_axes(Axis(a.name, sz, a.role) for a, sz in zip(axes, sizes))


# -- lowering and cost helpers ------------------------------------------------------------
def _arg(values: tuple[int, ...]) -> str:
    """``3`` when every spatial axis agrees, else ``(3, 5)``."""
    return str(values[0]) if len(set(values)) == 1 else str(tuple(values))


def _sizes(ctx: RuleContext, axes: tuple[Axis, ...]) -> list[int]:
    return [ctx.int(a.size, f"axis {a.name}") for a in axes]


def _batched(x: str, shape: list[int], out_shape: list[int], call: str, channel: bool = True) -> str:
    """``call`` applied to ``x`` with its leading dims folded into one batch dim, then restored.

    Without a ``channel`` axis, a unit channel axis is added for torch's ``(N, C, ...)`` layout.
    """
    inner = ", ".join(map(str, shape if channel else [1, *shape]))
    outer = ", ".join(map(str, out_shape))
    folded = f"{call.format(f'{x}.reshape(-1, {inner})')}.view(*{x}.shape[:-{len(shape)}], {outer})"
    # torch takes (N, C, ...) as it is: call it directly in that common case, fold other batch layouts
    rank = len(shape) + (1 if channel else 2)
    return f"({call.format(x)} if {x}.dim() == {rank} else {folded})"


def _options(**values: tuple[int, ...]) -> str:
    defaults = {"stride": 1, "padding": 0, "dilation": 1, "output_padding": 0, "groups": 1}
    parts = [f"{k}={_arg(v)}" for k, v in values.items() if set(v) != {defaults[k]}]
    return "".join(", " + p for p in parts)


def _folded(ctx: CostContext, direct: int = 1) -> Tensor:
    """The input as :func:`_batched` hands it on: itself when it has ``direct`` leading dims (the call takes it as it
    is: 1 beside a channel axis, 2 without) or when its leading dims merge in memory, else a copy.  Only the leading
    dims are merged: torch's ``reshape`` is then a view whatever the order of the box's own dims, and the call (a
    convolution, a pooling) keeps that view for backward as it receives it."""
    x, own = ctx.inputs[0], len(ctx.box.dom[0].axes)
    return x if len(x.names) - own == direct else _reshaped(ctx, x, own)


def _reshaped(ctx: CostContext, x: Tensor, own: int) -> Tensor:
    """``x.reshape(-1, *own dims)``: ``x`` itself (a view) when the dims before its last ``own`` merge, else a copy."""
    return x if x.merges([x.names[:len(x.names) - own]]) else ctx.new(x.axes, grad=x.grad)


def _prod(values: object) -> sympy.Expr:
    result = sympy.Integer(1)
    for v in values:  # type: ignore[attr-defined]
        result = result * v
    return result


def _ints(ctx: RuleContext, axes: Iterable[Axis]) -> list[int]:
    return [ctx.int(a.size, f"axis {a.name}") for a in axes]


def _tuple(values: Iterable[object]) -> str:
    return str(tuple(values))


def _product(values: object) -> sympy.Expr:
    result = sympy.Integer(1)
    for v in values:  # type: ignore[attr-defined]
        result = result * v
    return result


# -- the typed op of a convolution (lowering) and the calls it costs by ----------------------------
def _convolution(ctx: RuleContext, text: str, kind: OpKind, target: str, function: str, weight: tuple[Size, ...],
                 prim: Primitive, groups: Size) -> Expr:
    """The typed op of a convolution: what it reads, and the ``torch.nn.functional`` convolution it runs with its
    weight's shape, stride, padding, dilation and groups (what ``ncd.analysis.targets`` costs it by)."""
    from ncd.ir.program import Expr

    reads = tuple(ctx.em.values.get(v.var, v) for v in ctx.args)
    geometry = tuple((name, tuple(getattr(prim, name))) for name in ("stride", "padding", "dilation"))
    return Expr(text, kind, target, reads, options=(("function", function), ("weight", tuple(weight)), *geometry,
                                                     ("groups", groups)))


_CONV = tuple(f"conv{n}d" for n in (1, 2, 3))
_CONV_T = tuple(f"conv_transpose{n}d" for n in (1, 2, 3))


def _shape(t: Tensor) -> tuple[sympy.Expr, ...]:
    return tuple(a.size for a in t.axes)
