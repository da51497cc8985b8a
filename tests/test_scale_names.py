"""Generated source prints a constant written as a size expression by name (``sizes.k ** -0.5``), not as a number.

Sizes are bound before lowering rules run; lowering keeps what each bound constant was written as
(``ncd.torch.codegen.NamedSizes``) and prints it reading the sizes from a ``sizes`` namespace the module defines.
Checked against torch's own default scale (``1/sqrt(E)``) and against the numbers it stands for.
"""

from __future__ import annotations

import sympy
import torch
import torch.nn.functional as F

import ncd
from ncd.ir.program import size_code
from ncd.ir.size import symbol
from ncd.torch import fusion
from ncd.torch.codegen import to_program


def _attention(scale: ncd.Diagram) -> ncd.Diagram:
    scores = ncd.Einsum("y k, x k -> y x") >> scale >> ncd.Softmax("x")
    return (scores @ ncd.Identity.of("x k")) >> ncd.Einsum("y x, x k -> y k")


def test_the_attention_scale_prints_by_name_fused_or_not_and_runs_as_sdpa_default_scale() -> None:
    d = _attention(ncd.Scale("k**-0.5"))
    sizes = {"y": 3, "x": 5, "k": 8}
    source = d.to_source(**sizes)
    assert "scale=sizes.k ** -0.5)" in source and "class sizes:" in source and "    k = 8\n" in source
    assert "0.35355" not in source
    with fusion.disabled():
        plain = d.to_torch(**sizes)
    assert "scale = einsum * sizes.k ** -0.5" in plain.ncd_source
    module = d.to_torch(**sizes)
    assert module.ncd_source == source
    q, k, v = d.example_inputs(2, **sizes)
    want = F.scaled_dot_product_attention(q, k, v)  # torch's default scale: 1/sqrt(E)
    torch.testing.assert_close(module(q, k, v), want, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(plain(q, k, v), want, atol=1e-6, rtol=1e-5)
    report = ncd.cost(d, **sizes)  # the costed program prints it as the source does
    assert [c for b in report.boxes for c in b.code if "scaled_dot_product" in c][0] in source


def test_a_number_also_written_literally_stays_a_number() -> None:
    """``Scale(0.125)`` and ``Scale("k**-0.5")`` bind to the same constant at k = 64: which one a box was is not
    known after binding, so both print the number (never a size the box was not written with)."""
    d = ncd.Identity.of("y x") >> ncd.Scale("k**-0.5") >> ncd.Scale(0.125)
    source = d.to_source(y=2, x=3, k=64)
    assert "sizes" not in source and source.count("* 0.125") == 2
    alone = (ncd.Identity.of("y x") >> ncd.Scale("2 * k")).to_source(y=2, x=3, k=64)
    assert "* 2 * sizes.k" in alone


def test_no_local_shadows_the_sizes_namespace() -> None:
    d = ncd.Identity.of("b m") >> ncd.Linear("m -> m", name="sizes") >> ncd.Scale("m**-1")
    module = d.to_torch(b=2, m=4)
    assert "sizes_1 = " in module.ncd_source and "sizes.m ** -1" in module.ncd_source
    x = torch.randn(2, 4)
    linear = next(m for m in module.modules() if isinstance(m, torch.nn.Linear))
    torch.testing.assert_close(module(x), linear(x) / 4)


def test_size_code_is_python_of_the_same_value() -> None:
    k, h = symbol("k"), symbol("h")
    for expr in (1 / sympy.sqrt(k), 2 * k * h, (k + 1) / h, k ** -2, -3 * k):
        text = size_code(expr)
        assert text is not None
        value = eval(text, {"sizes": type("sizes", (), {"k": 64, "h": 3})})  # noqa: S307 - our own printed text
        assert abs(value - float(expr.subs({k: 64, h: 3}))) <= 1e-12 * abs(value)
    assert to_program(ncd.Identity.of("y") >> ncd.Scale("k**-0.5"), y=2, k=4).sizes == {"k": 4}


def test_a_size_python_cannot_name_prints_as_a_number() -> None:
    for name in ("lambda", "None"):  # sizes.lambda would not compile: the number, and the module runs
        d = ncd.Identity.of("y") >> ncd.Scale(f"{name}**-0.5")
        module = d.to_torch(y=2, **{name: 4})
        assert "sizes" not in module.ncd_source and "* 0.5" in module.ncd_source
        torch.testing.assert_close(module(torch.ones(2)), torch.full((2,), 0.5))
