"""Einsums of three or more operands run as explicit pairwise contractions, in an order read from axis names.

The plan (:meth:`ncd.prims.linear.EinsumOp.pairs`) never reads sizes, so the lowered program is the
same at every size and the cost formula in the sizes equals, at any sizes, both the bound cost and what
``torch.utils.flop_counter`` and autograd's saved tensors measure (before, torch picked the order with
opt_einsum from the sizes while the formula assumed left to right: they disagreed).
"""

from __future__ import annotations

import re

import pytest
import sympy
import torch

import ncd
from ncd.prims.linear import contraction_plan, kept_axes
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


def test_the_plan_reads_names_never_sizes() -> None:
    chain = ncd.Einsum("a b, c d, b c -> a d")
    small, large = (chain.to_source(**sizes) for sizes in (dict(a=50, b=2, c=50, d=50), dict(a=2, b=50, c=2, d=2)))
    assert _calls(small) == _calls(large)
    # an outer product is never a step when a contraction is possible: (a b)(b c) first, then with (c d)
    assert contraction_plan([["a", "b"], ["c", "d"], ["b", "c"]], ["a", "d"]) == ((0, 2), (0, 1))
    assert kept_axes([["a", "b"], ["c", "d"], ["b", "c"]], 0, 2, ["a", "d"]) == ("a", "c")
    assert contraction_plan([["a", "b"], ["b", "c"]], ["a", "c"]) == ()


@pytest.mark.parametrize("spec, sizes", [
    ("a b, b c, c d -> a d", dict(a=50, b=2, c=50, d=3)),
    ("a b, c d, b c -> a d", dict(a=5, b=2, c=6, d=3)),
    ("y k h, x k h, x v h -> y v h", dict(y=4, k=3, h=2, x=5, v=3)),
    ("a, a b, b c, c -> ", dict(a=4, b=3, c=5)),
])
def test_formula_number_and_measurement_agree(spec: str, sizes: dict[str, int]) -> None:
    d = ncd.Einsum(spec)
    bound, formulas, measured = ncd.cost(d, **sizes), ncd.cost(d), measure(d, **sizes)
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
