"""Matrix-product FLOPs read off the lowered program's ops (``ncd.analysis.program``).

Checked against ``torch.utils.flop_counter`` on the lowered module, and the cost walk of the diagram
(``ncd.cost``) checked against them box by box on every gallery model and per-primitive sample.
"""

from __future__ import annotations

import pytest
import sympy

import ncd
import ncd.zoo
from ncd.analysis.program import einsum_flops, linear_flops, matrix_products
from ncd.errors import NCDError
from ncd.torch.codegen import symbolic_program, to_program
from ncd.torch.measure import measure
from tests.opdb import SAMPLES, load

load()

READ = ("einsum", "linear", "linear_transpose", "linear_weight_grad")  # the boxes whose products are read


@pytest.mark.parametrize("spec, sizes", [
    ("a b, b c, c d -> a d", dict(a=50, b=2, c=50, d=50)),
    ("y k h, x k h -> y x h", dict(y=4, k=3, h=2, x=5)),
    ("a b, b c -> a b c", dict(a=3, b=4, c=5)),  # nothing contracted: a product, no bmm
    ("a b, c d -> a", dict(a=3, b=4, c=5, d=2)),  # b, c and d summed within their operands first
])
def test_einsum_ops_count_what_flop_counter_counts(spec: str, sizes: dict[str, int]) -> None:
    d = ncd.Einsum(spec).weave("t")
    sizes = {**sizes, "t": 2}
    flops = [f for _, f in matrix_products(to_program(d, **sizes))]
    assert None not in flops and sum(f for f in flops if f is not None) == measure(d, **sizes).forward_flops


def test_linear_calls_count_what_flop_counter_counts() -> None:
    mlp = ncd.Identity.of("b m") >> ncd.Linear("m -> n", bias=True) >> ncd.ReLU() >> ncd.Linear("n -> k h")
    sizes = dict(b=3, m=4, n=5, k=2, h=3)
    flops = [f for _, f in matrix_products(to_program(mlp, **sizes))]
    assert flops == [2 * 3 * 4 * 5, 2 * 3 * 5 * 6] and sum(flops) == measure(mlp, **sizes).forward_flops


def test_other_ops_are_refused() -> None:
    program = to_program(ncd.Identity.of("b m") >> ncd.ReLU(), b=2, m=3)
    with pytest.raises(ValueError, match="not an einsum"):
        einsum_flops(program.top.ops[0])
    with pytest.raises(ValueError, match="not the call"):
        linear_flops(program.top.ops[0])


def _per_box(program_products: list[tuple[object, sympy.Expr | None]]) -> list[sympy.Expr | None]:
    """The FLOPs of each box occurrence (consecutive ops of one box summed; ``None`` if one is unread)."""
    grouped: list[sympy.Expr | None] = []
    last: object = None
    for box, flops in program_products:
        if box is last:
            grouped[-1] = None if grouped[-1] is None or flops is None else grouped[-1] + flops
        else:
            grouped.append(flops)
        last = box
    return grouped


def test_the_cost_walk_charges_each_product_what_the_program_ops_count() -> None:
    compared = 0
    diagrams = [(n, make()) for n, make in sorted(ncd.zoo.MODELS.items())] + [(s.id, s.build()) for s in SAMPLES]
    for name, d in diagrams:
        try:
            program = symbolic_program(d)
        except NCDError:
            continue
        read = _per_box([(box, f) for box, f in matrix_products(program) if box is not None and box.prim.op in READ])
        walked = [b.metrics.forward_matmul for b in ncd.cost(d).box_formulas if b.op in READ]
        assert len(read) == len(walked), name
        for from_program, from_walk in zip(read, walked):
            if from_program is not None:
                assert sympy.expand(from_program - from_walk) == 0, (name, from_program, from_walk)
                compared += 1
    assert compared >= 57  # 57 products: 44 nn.Linear calls, 13 einsums


def test_every_einsum_is_a_typed_op_of_its_operands() -> None:
    """No lowering rule writes an einsum as text (the transposes and weight gradients of the derivative, the
    diagonal, the convolution's weight gradient and the woven learned map included): each einsum the program runs
    is an ``einsum`` op whose arguments are its operands, one value per subscript, on every gallery model and
    per-primitive sample (the one text left is a scan's body, written inside its loop)."""
    typed = 0
    ops = {"conv_weight_grad", "diagonal", "linear_transpose", "linear_weight_grad", "linear"}
    seen: set[str] = set()
    diagrams = [(make(), {}) for _, make in sorted(ncd.zoo.MODELS.items())] + [(s.build(), s.sizes) for s in SAMPLES]
    for d, sizes in diagrams:
        try:
            program = to_program(d, **sizes) if sizes else symbolic_program(d)
        except NCDError:
            continue
        for _, op in program.ops():
            if "torch.einsum(" not in op.code or op.kind == "loop":
                continue
            assert op.kind == "einsum" and op.code.startswith("torch.einsum("), op.code
            assert einsum_flops(op) is not None  # its subscripts name exactly the values it reads
            typed += 1
            seen.add(op.box.prim.op if op.box is not None else "")
    assert ops <= seen and typed >= 17


def test_the_costed_program_is_the_program_that_runs_fused_or_not() -> None:
    """``ncd.cost`` reads the program lowering wrote: with attention fused into SDPA and with fusion switched off,
    its FLOPs and saved bytes are those ``flop_counter`` and autograd measure on the module lowered the same way
    (one report has the SDPA row, the other the boxes it replaces)."""
    from ncd.torch import fusion

    d = ncd.zoo.multi_head_attention()
    sizes = {"y": 5, "x": 6, "m": 8, "k": 4, "h": 2}
    fused = ncd.cost(d, **sizes)
    with fusion.disabled():
        plain = ncd.cost(d, **sizes)
        plain_run = measure(d, **sizes)
    fused_run = measure(d, **sizes)
    assert "sdpa" in {b.op for b in fused.boxes} and "sdpa" not in {b.op for b in plain.boxes}
    # each row carries the lines of the program it costs: the SDPA call in one, the softmax in the other
    assert [b.op for b in fused.boxes if any("F.scaled_dot_product_attention(" in c for c in b.code)] == ["sdpa"]
    assert not any("scaled_dot_product_attention" in c for b in plain.boxes for c in b.code)
    assert any("softmax" in c for b in plain.boxes for c in b.code)
    lowered = d.to_source(**sizes)
    assert all(c in lowered for b in fused.boxes for c in b.code if not c.startswith("#"))
    for report, run in ((fused, fused_run), (plain, plain_run)):
        assert (report.forward_matmul, report.backward_matmul + report.counter_excess, report.activation_bytes) == (
            run.forward_flops, run.backward_flops, run.activation_bytes)


def test_a_scans_products_are_read_off_its_typed_body() -> None:
    """A scan's step is typed ops inside its loop op (``Op.body``): its products are read off them, its length
    times, and equal the scan's cost row (no einsum of the program is left as text)."""
    compared = 0
    for sample in SAMPLES:
        d = sample.build()
        try:
            program = symbolic_program(d)
        except NCDError:
            continue
        loops = [op for _, op in program.ops() if op.body]
        if not loops:
            continue
        products = list(matrix_products(program))
        assert None not in [f for _, f in products], sample.id
        scans = [b for b in ncd.cost(d).box_formulas if b.op == "scan"]
        read = sum((f for box, f in products if box is not None and box.prim.op == "scan"), sympy.Integer(0))
        assert sympy.expand(read - sum((b.metrics.forward_matmul for b in scans), sympy.Integer(0))) == 0, sample.id
        compared += read != 0
    assert compared >= 1
