"""The cost table keyed by what an op calls (``ncd.analysis.targets``) against ``torch.utils.flop_counter``.

Each row is checked on the call itself: a convolution op of a lowered program (its module run forward and backward
under the counter), and SDPA calls built by hand for the cases the table reads (masks, causality, grouped-query
keys and values), run under PyTorch's math kernel as ``ncd.torch.measure`` runs them.
"""

from __future__ import annotations

import pytest
import sympy
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import ncd
from ncd.analysis.targets import products, target_of
from ncd.ir.axes import Axis
from ncd.ir.program import Op, Value
from ncd.torch.codegen import to_program


def _counted(run: object) -> int:
    with FlopCounterMode(display=False) as counter:
        run()  # type: ignore[operator]
    return int(counter.get_total_flops())


@pytest.mark.parametrize("make, sizes", [
    (lambda: ncd.Conv("c x -> d x", kernel=3, padding=1), dict(c=4, d=6, x=9)),
    (lambda: ncd.Conv("c x y -> d x y", kernel=3, stride=2, padding=1, groups=2), dict(c=4, d=6, x=8, y=6)),
    (lambda: ncd.Conv("c x y -> d x y", kernel=(3, 2), dilation=2, bias=False), dict(c=3, d=5, x=9, y=8)),
    (lambda: ncd.Conv("c x y z -> d x y z", kernel=2, stride=(1, 2, 1), groups=3), dict(c=3, d=6, x=4, y=6, z=5)),
    (lambda: ncd.ConvTranspose("c x y -> d x y", kernel=2, stride=2), dict(c=4, d=3, x=4, y=5)),
    (lambda: ncd.ConvTranspose("c x -> d x", kernel=3, stride=2, padding=1, output_padding=1, groups=2),
     dict(c=4, d=6, x=5)),
])
def test_convolution_rows_are_what_flop_counter_counts(make: object, sizes: dict[str, int]) -> None:
    box = make()  # type: ignore[operator]
    d = ncd.Identity.of(" ".join(["b"] + [a.name for a in box.dom[0]])) >> box
    sizes = {"b": 3, **sizes}
    calls = [op for _, op in to_program(d, **sizes).ops() if target_of(op)]
    assert len(calls) == 1 and target_of(calls[0]).startswith("conv")
    x = torch.randn(3, *(sizes[a.name] for a in box.dom[0]), requires_grad=True)
    rows = products(calls[0], [tuple(sympy.Integer(n) for n in x.shape)])
    module = d.to_torch(**sizes)
    y = module(x)
    assert rows.forward == _counted(lambda: module(x))
    assert sum(rows.backward) + sum(rows.excess) == _counted(lambda: y.sum().backward())


def _value(name: str, shape: tuple[int, ...]) -> Value:
    return Value(name, tuple(Axis(f"{name}{i}", sympy.Integer(n)) for i, n in enumerate(shape)))


@pytest.mark.parametrize("q, k, v, options", [
    ((2, 4, 5, 8), (2, 4, 6, 8), (2, 4, 6, 3), {}),
    ((2, 4, 5, 8), (2, 4, 5, 8), (2, 4, 5, 8), {"is_causal": True}),
    ((3, 5, 8), (3, 7, 8), (3, 7, 2), {"attn_mask": True}),
    ((2, 6, 5, 8), (2, 2, 7, 8), (2, 2, 7, 4), {"enable_gqa": True}),  # grouped-query: 3 query heads per key head
])
def test_attention_rows_are_what_flop_counter_counts(q: tuple[int, ...], k: tuple[int, ...], v: tuple[int, ...],
                                                     options: dict[str, bool]) -> None:
    args = tuple(_value(n, s) for n, s in zip("qkv", (q, k, v)))
    op = Op("call", "F.scaled_dot_product_attention", args, (_value("o", q[:-1] + v[-1:]),), "...",
            options=tuple(options.items()))
    rows = products(op, [tuple(a.size for a in value.axes) for value in args])
    tensors = [torch.randn(*s, requires_grad=True) for s in (q, k, v)]
    kwargs: dict[str, object] = {k: val for k, val in options.items() if k != "attn_mask"}
    if options.get("attn_mask"):
        kwargs["attn_mask"] = torch.rand(q[-2], k[-2]) > 0.3
    with sdpa_kernel(SDPBackend.MATH):
        out = F.scaled_dot_product_attention(*tensors, **kwargs)  # type: ignore[arg-type]
        assert rows.forward == _counted(lambda: F.scaled_dot_product_attention(*tensors, **kwargs))  # type: ignore[arg-type]
        assert sum(rows.backward) == _counted(lambda: out.sum().backward())


def test_an_op_calling_nothing_the_table_knows_has_no_row() -> None:
    program = to_program(ncd.Identity.of("b m") >> ncd.ReLU(), b=2, m=3)
    assert target_of(program.top.ops[0]) == ""
    with pytest.raises(KeyError):
        products(program.top.ops[0], [(sympy.Integer(2), sympy.Integer(3))])
