"""Matrix-product costs keyed by what an op of the lowered program calls: its target, argument shapes and options.

One row per function PyTorch runs: ``conv1d`` … ``conv3d`` and their transposes (a ``nn.Conv*d`` module call
or ``F.conv*``; groups, stride, dilation and padding read off the op's typed options),
``F.scaled_dot_product_attention`` (masks and causality cost no products; grouped-query keys and values of fewer
heads than the queries are shared), ``linear`` (an ``nn.Linear`` call, its weight's shape an option) and
``torch.einsum`` of two operands.  Each gives the FLOPs ``torch.utils.flop_counter`` counts for the
call, computed from the shapes the call receives: forward, and for each differentiable argument the products its
gradient costs backward, with the counter's excess beyond them (its grouped-convolution weight gradient counts
every group's products ``groups`` times).  ``ncd.cost`` charges a box or a fused pattern the rows of the ops its
step ran (``CostContext.charge``), so the products it counts are those of the program that runs.

>>> from ncd.ir.axes import Axis
>>> from ncd.ir.program import Op, Value
>>> from ncd.ir.size import size
>>> c, d, h, w = (Axis(n, size(n)) for n in "cdhw")
>>> conv = Op("module", "self.conv", (Value("x", (c, h, w)),), (Value("y", (d, h, w)),), "self.conv(x)",
...           options=(("function", "conv2d"), ("weight", (d.size, c.size / 2, 3, 3)), ("groups", 2)))
>>> rows = products(conv, [(size("b"), c.size, h.size, w.size)])
>>> rows.forward, rows.backward, rows.excess
(9*b*c*d*h*w, (9*b*c*d*h*w, 9*b*c*d*h*w), (0, 9*b*c*d*h*w))
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sympy

from ncd.ir.program import Op

__all__ = ["Products", "products", "target_of", "TARGETS"]

Shape = tuple[sympy.Expr, ...]
ZERO = sympy.Integer(0)


@dataclass(frozen=True)
class Products:
    """The matrix-product FLOPs of one call: ``forward``; per argument (in the op's order), the ``backward``
    products its gradient costs and the FLOP counter's ``excess`` over them."""

    forward: sympy.Expr
    backward: tuple[sympy.Expr, ...]
    excess: tuple[sympy.Expr, ...] = ()


def _prod(values: Sequence[sympy.Expr]) -> sympy.Expr:
    result: sympy.Expr = sympy.Integer(1)
    for v in values:
        result = result * sympy.sympify(v)
    return result


def _convolution(op: Op, shapes: Sequence[Shape]) -> Products:
    """``conv{n}d`` / ``conv_transpose{n}d`` (``flop_counter.conv_flop_count``): ``2·N·C_out·C_in/groups·∏kernel``
    per output position (per *input* position when transposed); backward, the input's gradient is the other
    convolution (as many products), the weight's gradient as many again, which the counter counts ``groups`` times."""
    function = op.option("function", "")
    weight = tuple(sympy.sympify(s) for s in op.option("weight"))
    n = len(weight) - 2
    x = shapes[0]
    batch = _prod(x[: len(x) - n - 1])
    positions = x[len(x) - n:] if function.startswith("conv_transpose") else \
        tuple(a.size for a in op.outputs[0].axes[len(op.outputs[0].axes) - n:])
    flops = 2 * batch * _prod(positions) * _prod(weight)
    groups = sympy.sympify(op.option("groups", 1))
    return Products(flops, (flops, flops), (ZERO, flops * (groups - 1)))


def _attention(op: Op, shapes: Sequence[Shape]) -> Products:
    """``scaled_dot_product_attention`` (``flop_counter.sdpa_flop_count``; PyTorch's math kernel, the one the counter
    sees on CPU): the scores ``2·B·H·L·S·E`` and the weighted values ``2·B·H·L·S·Ev``, over the queries' heads
    (keys and values of fewer heads are shared, grouped-query attention); backward two products per forward one,
    charged to the queries' gradient (the call's one backward)."""
    q, k, v = shapes[0], shapes[1], shapes[2]
    flops = 2 * _prod(q[:-1]) * k[-2] * (q[-1] + v[-1])
    return Products(flops, (2 * flops, ZERO, ZERO))


def _einsum(op: Op, shapes: Sequence[Shape]) -> Products:
    """``torch.einsum`` of two operands (:func:`ncd.analysis.program.einsum_flops`): one ``bmm`` forward, one per
    operand's gradient backward."""
    from ncd.analysis.program import einsum_flops

    flops = einsum_flops(op)
    return Products(flops, tuple(flops for _ in op.args))


def _linear(op: Op, shapes: Sequence[Shape]) -> Products:
    """``F.linear`` (an ``nn.Linear`` call; ``flop_counter``'s ``addmm``/``mm``): ``2·(input elements)·out_features``;
    backward one product for the input's gradient, one for the weight's."""
    flops = 2 * _prod(shapes[0]) * sympy.sympify(op.option("weight")[0])
    return Products(flops, (flops, flops))


#: the rows, by what the op calls (a module call by its ``function`` option)
TARGETS: dict[str, Callable[[Op, Sequence[Shape]], Products]] = {
    **{f"{kind}{n}d": _convolution for kind in ("conv", "conv_transpose") for n in (1, 2, 3)},
    "scaled_dot_product_attention": _attention,
    "einsum": _einsum,
    "linear": _linear,
}


def target_of(op: Op) -> str:
    """The function ``op`` calls, as :data:`TARGETS` keys it (``""`` for none of them): a module call's
    ``function`` option, else its target without its namespace (``F.conv2d`` -> ``conv2d``)."""
    function = op.option("function")
    if isinstance(function, str):
        return function if function in TARGETS else ""
    name = re.sub(r"^(torch\.nn\.functional|torch|F)\.", "", op.target)
    return name if op.kind in ("call", "einsum") and name in TARGETS else ""


def products(op: Op, shapes: Sequence[Shape]) -> Products:
    """The row of ``op`` (:data:`TARGETS`), given the full shapes of the arguments it reads (leading batch
    dimensions included).  Raises ``KeyError`` for an op calling none of them."""
    return TARGETS[target_of(op)](op, shapes)
