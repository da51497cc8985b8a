"""Einsums of three or more operands run as explicit pairwise contractions, in an order chosen at the sizes.

The plan (:meth:`ncd.prims.linear.EinsumOp.pairs`) is the cheapest at the bound sizes (by axis names when
no size is known); lowering writes exactly its pairs and the cost analysis costs exactly them, so the bound
cost, the formula planned at those sizes, ``torch.utils.flop_counter`` and autograd's saved tensors agree.
"""

from __future__ import annotations

import re

import pytest
import sympy
import torch

import ncd
from ncd.prims.contraction import contraction_plan, kept_axes
from ncd.torch.codegen import symbolic_program, to_program
from ncd.torch.measure import measure


def _calls(source: str) -> list[tuple[str, str]]:
    return re.findall(r"torch\.einsum\('([^']*)', ([^)]*)\)", source)


def test_a_chain_of_four_is_three_pairwise_einsums_that_compute_the_product() -> None:
    chain = ncd.Einsum("a b, b c, c d, d e -> a e")
    calls = _calls(chain.to_source(a=2, b=3, c=4, d=5, e=6))
    assert len(calls) == 3 and all(spec.count(",") == 1 for spec, _ in calls)
    module = chain.to_torch(a=2, b=3, c=4, d=5, e=6).double()
    xs = [torch.randn(2, 3), torch.randn(3, 4), torch.randn(4, 5), torch.randn(5, 6)]
    xs = [x.double() for x in xs]
    torch.testing.assert_close(module(*xs), xs[0] @ xs[1] @ xs[2] @ xs[3])


def test_the_plan_is_chosen_at_the_bound_sizes() -> None:
    chain = ncd.Einsum("a b, b c, c d -> a d")
    narrow_b, wide_b = dict(a=50, b=2, c=50, d=50), dict(a=2, b=50, c=2, d=2)
    assert _calls(chain.to_source(**narrow_b)) == [("...bc,...cd->...bd", "x1, x2"), ("...ab,...bd->...ad", "x0, contracted")]
    assert [spec for spec, _ in _calls(chain.to_source(**wide_b))] == ["...ab,...bc->...ac", "...cd,...ac->...ad"]
    # no sizes: read from names, an outer product is never a step when a contraction is possible
    assert contraction_plan([["a", "b"], ["c", "d"], ["b", "c"]], ["a", "d"]) == ((0, 2), (0, 1))
    assert kept_axes([["a", "b"], ["c", "d"], ["b", "c"]], 0, 2, ["a", "d"]) == ("a", "c")
    assert contraction_plan([["a", "b"], ["b", "c"]], ["a", "c"]) == ()


def test_the_cheap_plan_is_the_one_costed_and_run() -> None:
    """At a=c=d=50, b=2 contracting b c d first costs 20,000 FLOPs; (a b)(b c) first would cost 260,000."""
    chain = ncd.Einsum("a b, b c, c d -> a d")
    sizes = dict(a=50, b=2, c=50, d=50)
    bound, measured = ncd.cost(chain, **sizes), measure(chain, **sizes)
    assert bound.forward_matmul == measured.forward_flops == 2 * (2 * 50 * 50 + 50 * 2 * 50) == 20_000
    assert bound.backward_matmul == measured.backward_flops and bound.activation_bytes == measured.activation_bytes
    names_only = ncd.cost(chain).formulas.forward_matmul  # no sizes: the plan read from names, (a b)(b c) first
    assert names_only.subs({sympy.Symbol(k, positive=True): v for k, v in sizes.items()}) == 260_000
    # formulas are those of the plan at the report's sizes; the symbolic program is planned there too
    at = {s: sizes[str(s)] for s in bound.formulas.forward_matmul.free_symbols}
    assert bound.formulas.forward_matmul.subs(at) == 20_000
    defaults = chain.block("Chain", defaults=tuple(sizes.items()))
    assert ncd.cost(defaults).forward_matmul == 20_000
    assert [op.code for op in symbolic_program(defaults).inlined()] == [op.code for op in to_program(defaults).inlined()]


@pytest.mark.parametrize("spec, sizes", [
    ("a b, b c, c d -> a d", dict(a=50, b=2, c=50, d=3)),
    ("a b, c d, b c -> a d", dict(a=5, b=2, c=6, d=3)),
    ("y k h, x k h, x v h -> y v h", dict(y=4, k=3, h=2, x=5, v=3)),
    ("a, a b, b c, c -> ", dict(a=4, b=3, c=5)),
])
def test_formula_number_and_measurement_agree(spec: str, sizes: dict[str, int]) -> None:
    d = ncd.Einsum(spec)
    bound, measured = ncd.cost(d, **sizes), measure(d, **sizes)
    formulas = bound  # its formulas are planned at the bound sizes
    at = {s: sizes[str(s)] for s in formulas.formulas.forward_matmul.free_symbols}
    assert formulas.formulas.forward_matmul.subs(at) == bound.forward_matmul == measured.forward_flops
    assert formulas.formulas.backward_matmul.subs(at) == bound.backward_matmul == measured.backward_flops
    assert sympy.sympify(formulas.formulas.activation_bytes).subs(at) == bound.activation_bytes == measured.activation_bytes


def test_woven_and_shared_operands() -> None:
    sizes = dict(t=3, a=4, b=2, c=5, d=3)
    woven = ncd.Einsum("a b, b c, c d -> a d").weave("t")
    shared = ((ncd.Identity.of("t a b") @ ncd.Identity.of("b c") @ ncd.Identity.of("t c d"))
              >> ncd.Einsum("t a b, b c, t c d -> t a d"))
    for d in (woven, shared):
        bound, measured = ncd.cost(d, **sizes), measure(d, **sizes)
        assert (bound.forward_matmul, bound.backward_matmul, bound.activation_bytes) == \
            (measured.forward_flops, measured.backward_flops, measured.activation_bytes)
