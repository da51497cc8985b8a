"""``ncd.cost`` against measurement: FLOPs against torch.utils.flop_counter, stored activations
against what autograd saves (saved_tensors_hooks, de-duplicated by storage), parameters against
the lowered module; formulas against hand-derived ones."""

from __future__ import annotations

import pytest
import sympy

import ncd
from ncd.analysis.tables import COST, AnalysisError, load_all
from ncd.ir.size import symbol
from ncd.torch.fusion import disabled
from ncd.torch.measure import measure
from tests.opdb import SAMPLES, Sample, load

load()
load_all()


def costable(s: Sample) -> bool:
    try:
        d = s.build()
    except Exception:  # a sample other tests report as broken
        return False
    return all(b.prim.op in COST for b in d.boxes()) and s.inputs is None and not s.train


def _check(d: ncd.Diagram, /, **sizes: int) -> None:
    report = ncd.cost(d, **sizes)
    m = measure(d, **sizes)
    got = (report.forward_matmul, report.backward_matmul + report.counter_excess, report.activation_bytes, report.params)
    want = (m.forward_flops, m.backward_flops, m.activation_bytes, m.params)
    assert got == want, f"model (fwd, bwd, saved bytes, params) {got} != measured {want}; saved {m.saved}"


@pytest.mark.parametrize("s", [s for s in SAMPLES if costable(s)], ids=lambda s: s.id)
def test_cost_of_every_primitive_sample_matches_measurement(s: Sample) -> None:
    _check(s.build(), **s.sizes)


# -- diagrams built here -------------------------------------------------------------------
def attention_head() -> ncd.Diagram:
    scores = ncd.Einsum("y k h, x k h -> y x h") >> ncd.Scale("k**-0.5") >> ncd.Softmax("x")
    return (scores @ ncd.Identity.of("x k h")) >> ncd.Einsum("y x h, x k h -> y k h")


def multi_head_attention() -> ncd.Diagram:
    """L^Q, L^K, L^V : m -> k h; scores; softmax; L^O : k h -> m (the paper's wiring), batched over b."""
    project = ncd.Par.of(*(ncd.Identity.of(f"b {t} m") >> ncd.Linear("m -> k h", bias=True, name=n)
                           for t, n in (("y", "Q"), ("x", "K"), ("x", "V"))))
    body = (ncd.Identity.of("b y m") @ ncd.Copy("b x m")) >> project >> attention_head().weave("b")
    return (body >> ncd.Linear("k h -> m", bias=True, name="O")).block("MultiHeadAttention")


def projected_attention() -> ncd.Diagram:
    """The projections in the attention's own sequence (benchmarks/bench_lowering.py's wiring): their weights
    store rows (h k), the order SDPA reads (``ncd.prims.patterns.chosen_rows``), and no operand is copied."""
    project = ncd.Par.of(*(ncd.Identity.of(f"{t} m") >> ncd.Linear("m -> k h", bias=True, name=n)
                           for t, n in (("y", "Q"), ("x", "K"), ("x", "V"))))
    return ((ncd.Identity.of("y m") @ ncd.Copy("x m")) >> project >> attention_head()
            >> ncd.Linear("k h -> m", bias=True, name="O"))


def batched_projected_attention() -> ncd.Diagram:
    """As above over a batch: four-dimensional operands run SDPA's flash kernel, whose output takes the query's
    layout, so ``L^O`` (its columns stored (h k), ``ncd.prims.patterns.chosen_columns``) reads a view."""
    return projected_attention().weave("b")


def gallery_self_attention() -> ncd.Diagram:
    """The gallery's wiring, batched: the projections in a ``Linear`` block, the attention in another block (its
    operands packed only if the caller gives a strided last dimension), ``L^O`` after both."""
    from ncd.zoo.heads import heads_attention

    return heads_attention(self_attention=True, tokens="t").weave("b")


def gallery_cross_attention() -> ncd.Diagram:
    from ncd.zoo.heads import heads_attention

    return heads_attention(self_attention=False).weave("b")


def mlp() -> ncd.Diagram:
    layer = ncd.Linear("m -> n", bias=True) >> ncd.GELU() >> ncd.Linear("n -> m", bias=True)
    return (ncd.Identity.of("b t m") >> ncd.residual(layer)).block("MLP")


SIZES = {"b": 2, "y": 5, "x": 6, "m": 12, "k": 4, "h": 3, "n": 16, "t": 3}


@pytest.mark.parametrize("build", [attention_head, multi_head_attention, projected_attention, batched_projected_attention,
                                   gallery_self_attention, gallery_cross_attention, mlp], ids=lambda f: f.__name__)
def test_cost_of_built_diagrams_matches_measurement(build) -> None:
    d = build()
    _check(d, **{k: v for k, v in SIZES.items() if k in {str(s) for s in d.free_symbols}})


def test_linear_saves_a_view_when_its_leading_dims_merge() -> None:
    """``F.linear`` of an argument whose features are not innermost but whose leading dims merge in memory (here
    stored ``m b t``, read ``b t m``) folds it with a view: autograd keeps the input's own storage, which another box
    saves too (one storage, not two).  The call's typed ``linear`` option says what it reads; the cost reads it."""
    from ncd.ir.program import LinearCall
    from ncd.torch.codegen import to_program

    branch = ncd.Identity.of("m b t") >> ncd.Transpose("m b t -> b t m") >> ncd.Linear("m -> n")
    d = ncd.Copy("m b t") >> (branch @ (ncd.Copy("m b t") >> ncd.Multiply(2)))
    sizes = {"b": 2, "t": 3, "m": 4, "n": 5}
    _check(d, **sizes)
    assert ncd.cost(d, **sizes).activation_bytes == 4 * 2 * 3 * 4
    calls = [op.option("linear") for _, op in to_program(d, **sizes).ops() if op.option("function") == "linear"]
    assert calls == [LinearCall(("m",), ("n",))]
    # read in another order than stored, the leading dims do not merge: a copy is kept (as autograd keeps one)
    _check(ncd.Identity.of("b t m") >> ncd.Transpose("b t m -> t b m") >> ncd.Linear("m -> n", bias=True), **sizes)


def test_attention_cost_formulas_are_the_papers() -> None:
    """Scores and weighted sum each cost b·y·x·k·h multiply-adds; backward twice that (two operands each)."""
    b, y, x, k, h, m = (symbol(n) for n in "byxkhm")
    with disabled():  # box by box, as drawn
        report = ncd.cost(multi_head_attention())
        boxes = [bc for bc in report.box_formulas if bc.op == "einsum"]
        assert [sympy.simplify(bc.metrics.forward_macs - b * y * x * k * h) for bc in boxes] == [0, 0]
        assert [sympy.simplify(bc.metrics.backward_macs - 2 * b * y * x * k * h) for bc in boxes] == [0, 0]
        _check(multi_head_attention(), **{n: SIZES[n] for n in "byxmkh"})
    report = ncd.cost(multi_head_attention())  # fused into scaled_dot_product_attention: the same products
    (sdpa,) = [bc for bc in report.box_formulas if bc.op == "sdpa"]
    assert sympy.simplify(sdpa.metrics.forward_macs - 2 * b * y * x * k * h) == 0
    assert sympy.simplify(sdpa.metrics.backward_macs - 4 * b * y * x * k * h) == 0
    linear_macs = b * y * m * k * h + 2 * b * x * m * k * h + b * y * k * h * m
    assert sympy.simplify(report.formulas.forward_macs - linear_macs - 2 * b * y * x * k * h) == 0
    assert sympy.simplify(report.formulas.params - 4 * (m * k * h) - 3 * k * h - m) == 0


def test_complexity_view_names_quadratic_attention() -> None:
    terms = ncd.cost(multi_head_attention()).complexity()["MultiHeadAttention"]
    degrees = [d for _, d in terms]
    assert {"b": 1, "h": 1, "k": 1, "x": 1, "y": 1} in degrees  # scores: quadratic in the sequence (x, y)
    assert all(sum(d.values()) == 5 for d in degrees)


def test_numbers_once_bound_and_formulas_before() -> None:
    d = ncd.Identity.of("b m") >> ncd.Linear("m -> n")
    free = ncd.cost(d)
    assert free.forward_flops == 2 * symbol("b") * symbol("m") * symbol("n")
    bound = ncd.cost(d, b=2, m=3, n=4)
    assert bound.forward_flops == 48 and bound.backward_flops == 96 and bound.params == 12
    assert bound.activation_bytes == 2 * 3 * 4 and bound.activation_bytes_by_dtype == {"float32": 24}
    assert ncd.cost(d, dtype="bfloat16", b=2, m=3, n=4).activation_bytes == 12


def test_peak_memory_counts_live_and_saved_tensors() -> None:
    # x (24 B) -> relu -> y (24 B, saved) -> tanh -> z (24 B, saved): all three alive at the end
    d = ncd.Identity.of("a b") >> ncd.ReLU() >> ncd.Tanh()
    assert ncd.cost(d, a=2, b=3).peak_bytes == 3 * 24
    # scale saves nothing: x and the first product die once consumed... x is the caller's and stays
    d2 = ncd.Identity.of("a b") >> ncd.Scale(2) >> ncd.Scale(3) >> ncd.Scale(4)
    assert ncd.cost(d2, a=2, b=3).peak_bytes == 3 * 24


def test_symbolic_repeat_sums_over_the_iteration_variable() -> None:
    layer = ncd.repeat(lambda i: (ncd.Linear("m -> m", bias=True) >> ncd.ReLU()).block("layer"), "i", 0, "N")
    d = ncd.Identity.of("b m") >> layer
    report = ncd.cost(d)
    N, m = symbol("N"), symbol("m")
    assert sympy.simplify(report.formulas.params - N * (m * m + m)) == 0
    assert ncd.cost(d, N=3, b=2, m=4).params == 3 * 20
    _check(d, N=3, b=2, m=4)


def test_table_and_text() -> None:
    report = ncd.cost(multi_head_attention(), **{k: SIZES[k] for k in "byxmkh"})
    from rich.console import Console

    console = Console(record=True, width=140)
    console.print(report.table())
    text = console.export_text()
    assert "MultiHeadAttention" in text and "attention (SDPA)" in text and "total" in text
    assert "FLOPs" in str(report)


def test_cli_prints_the_table(capsys, tmp_path) -> None:
    from ncd.cli import main

    path = tmp_path / "mha.json"
    path.write_text(multi_head_attention().to_json())
    assert main(["cost", str(path), "--size", "b=2", "--size", "y=3", "--size", "x=3", "--size", "m=8", "--size", "k=2",
                 "--size", "h=2", "--formulas", "--complexity", "--measure"]) == 0
    out = capsys.readouterr().out
    assert "total" in out and "forward_macs =" in out and "measured:" in out
    assert main(["cost", str(path), "--size", "b"]) == 2
    assert "must look like name=whole-number" in capsys.readouterr().err


def test_errors_name_the_problem() -> None:
    with pytest.raises(AnalysisError, match="unknown dtype 'float8'"):
        ncd.cost(ncd.ReLU(), dtype="float8")
    with pytest.raises(ncd.SizeError, match="b=0"):
        ncd.cost(ncd.ReLU(), b=0)


@pytest.mark.parametrize(("equation", "sizes"), [("a a ->", {"a": 4}), ("b a a -> b", {"a": 4, "b": 3}),
                                                 ("a b ->", {"a": 4, "b": 5}), ("a a b -> b", {"a": 3, "b": 2})])
def test_a_sum_by_einsum_is_charged_the_entries_it_adds(equation: str, sizes: dict[str, int]) -> None:
    # before, a trace (`a a ->`, 4 entries summed) was charged the whole square: 16 FLOPs. The entries it adds are
    # those its result depends on: counted by autograd (torch.utils.flop_counter counts no sums)
    d = ncd.Einsum(equation)
    (x,) = d.example_inputs(**sizes)
    x.requires_grad_(True)
    d.to_torch(**sizes)(x).sum().backward()
    assert x.grad is not None
    assert ncd.cost(d, **sizes).numbers.forward_other == int((x.grad != 0).sum())
