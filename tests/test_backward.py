"""``ncd.backward``: the reverse-mode diagram lowers to a module whose gradients equal torch.autograd's."""

from __future__ import annotations

import pytest
import torch

import ncd
from ncd.analysis import plan
from ncd.analysis.backward import cot
from ncd.analysis.tables import BACKWARD, AnalysisError, load_all
from ncd.errors import SizeError
from ncd.prims.gather import Gather
from ncd.prims.rotary import Rotary
from ncd.torch.verify import compare_gradients
from tests.opdb import SAMPLES, Sample, load
from tests.test_cost import SIZES, attention_head, mlp, multi_head_attention

load()
load_all()


def differentiable(s: Sample) -> bool:
    try:
        d = s.build()
    except Exception:  # a sample other tests report as broken
        return False
    if not all(b.prim.op in BACKWARD for b in d.boxes()):
        return False
    if not _has_leaves(d):
        return False  # nothing to differentiate: test_backward_without_float_inputs_has_no_gradients
    if s.train and s.op == "dropout":
        return False  # dropout differentiates as in evaluation (a backward diagram cannot replay the mask)
    return s.inputs is None or not any(b.prim.learned for b in d.boxes())


def _has_leaves(d: ncd.Diagram) -> bool:
    return any(seg.dtype == "float" for seg in d.dom) or any(b.prim.learned for b in d.boxes())


def test_importers_index_computations_and_rotary_have_backward_rules() -> None:
    """Issue #6: gather, argmax, comparisons, casts and rotary differentiate (none is declared unsupported)."""
    for op in ("gather", "argmax", "compare", "cast", "rotary"):
        assert BACKWARD.status(op) == "rule"
    d = ncd.Identity.of("b t m, b [t]") >> Gather("t")
    assert [b.prim.op for b in ncd.backward(d).boxes()].count("gather_transpose") == 1
    assert [b.prim.label() for b in ncd.backward(Rotary("k", "t")).boxes()] == ["ρᵀ"]


@pytest.mark.parametrize("s", [s for s in SAMPLES if s.op in BACKWARD and not _has_leaves(s.build())], ids=lambda s: s.id)
def test_backward_without_float_inputs_has_no_gradients(s: Sample) -> None:
    """Index and bool inputs only: autograd gives no gradient (the outputs do not require one); neither does the diagram."""
    d = s.build()
    module = d.to_torch(**s.sizes)
    outs = module(*d.example_inputs(*s.batch, **s.sizes))
    assert not any(o.requires_grad for o in (outs if isinstance(outs, tuple) else (outs,)))
    back = ncd.backward(d).bind(**s.sizes)
    assert len(back.cod) == 0
    assert str(back.dom) == str(cot(d.bind(**s.sizes).cod))
    back.to_torch()(*[torch.randn(*(int(a.size) for a in seg)) for seg in back.dom])  # it lowers and runs


def test_the_issues_primitives_have_backward_rules() -> None:
    """Transposed, grouped and 3-d convolution, pooling, batch norm, tied unembedding, diagonals: all differentiate."""
    assert {"conv", "conv_transpose", "maxpool", "avgpool", "adaptive_avgpool", "batchnorm", "unembed", "einsum"} <= set(BACKWARD)
    for op in ("diagonal", "maxpool_backward", "batchnorm_backward"):
        assert "second derivatives" in (BACKWARD.why(op) or "")


def _assert_same(pairs: list, atol: float = 1e-4) -> None:
    assert pairs
    for name, got, want in pairs:
        torch.testing.assert_close(got, want, atol=atol, rtol=1e-3, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("s", [s for s in SAMPLES if differentiable(s)], ids=lambda s: s.id)
def test_backward_of_every_primitive_sample_equals_autograd(s: Sample) -> None:
    d = s.build()
    inputs = s.inputs(s.sizes) if s.inputs else d.example_inputs(*s.batch, **s.sizes) if s.train else None
    if inputs is not None and not any(x.is_floating_point() for x in inputs):
        pytest.skip("no float input to differentiate")  # pragma: no cover
    _assert_same(compare_gradients(d, inputs=inputs, train=s.train, **s.sizes), atol=max(s.atol, 1e-4))


@pytest.mark.parametrize("build", [attention_head, multi_head_attention, mlp], ids=lambda f: f.__name__)
def test_backward_of_built_diagrams_equals_autograd(build) -> None:
    d = build()
    _assert_same(compare_gradients(d, **{k: v for k, v in SIZES.items() if k in {str(s) for s in d.free_symbols}}))


def test_backward_diagram_has_the_papers_shape() -> None:
    """Stored forward values and weights are explicit inputs; weights' gradients are outputs."""
    d = ncd.Identity.of("b m") >> ncd.Linear("m -> n", bias=True) >> ncd.ReLU()
    back = ncd.backward(d)
    assert str(back.dom) == "b m, n m, b n, b n"  # x, W, relu's output, the cotangent
    assert str(back.cod) == "b m, n m, n"  # ∂x, ∂W, ∂bias (summed over the broadcast b)
    roles = dict(back.meta)
    assert roles["inputs"] == ("stored 0", "param 0 weight", "stored 1", "cotangent 0")
    assert roles["outputs"] == ("input 0", "param 0", "param 1")
    ops = [b.prim.op for b in back.boxes()]
    assert {"linear_transpose", "linear_weight_grad", "derivative", "multiply", "einsum"} <= set(ops)


def test_backward_diagram_round_trips_through_json_and_has_source() -> None:
    back = ncd.backward(multi_head_attention())
    assert ncd.load_json(back.to_json()) == back
    source = back.to_source(**{n: SIZES[n] for n in "byxmkh"})
    assert "class MultiHeadAttentionBackward" in source


def test_save_and_load_cotangents_meet_again() -> None:
    d = ncd.Save("m", "C") >> (ncd.Identity.of("m") @ ncd.Load("m", "C") @ ncd.Load("m", "C")) >> ncd.Add(3)
    _assert_same(compare_gradients(ncd.Identity.of("b m") >> d, b=2, m=4))


def test_repeat_is_unrolled_once_bound() -> None:
    layer = ncd.repeat(lambda i: (ncd.Linear("m -> m", bias=True) >> ncd.Tanh()).block("layer"), "i", 0, "N")
    d = ncd.Identity.of("b m") >> layer
    with pytest.raises(AnalysisError, match="bind its repetition count first \\(N\\).*ncd.backward\\(diagram, N=12\\)"):
        ncd.backward(d)
    _assert_same(compare_gradients(d.bind(N=3), b=2, m=4))
    # the count given to ncd.backward, or the top block's default: the backward of the bound diagram, sizes symbolic
    given, defaulted = ncd.backward(d, N=3), ncd.backward(d.block("Model", defaults=(("N", 3),)))
    assert given == ncd.backward(d.bind(N=3)) and "m" in {str(s) for s in given.free_symbols}
    assert defaulted.cod == given.cod and [b.prim for b in defaulted.boxes()] == [b.prim for b in given.boxes()]
    assert len([b for b in given.boxes() if b.prim.op == "linear_transpose"]) == 3
    with pytest.raises(SizeError, match="backward: heads is not a size of the diagram"):
        ncd.backward(d, N=3, heads=2)
    with pytest.raises(SizeError, match="backward: size N=0 must be a positive whole number"):
        ncd.backward(d, N=0)


def test_tied_unembedding_gradient_is_the_sum_drawn_in_the_diagram() -> None:
    """The shared table's gradient is ∂Emb + ∂L: an addition of the two in the backward diagram."""
    d = ncd.Identity.of("t [v]") >> ncd.Embedding("v", "m", name="E") >> ncd.Unembed("v", "m", tied_to="E")
    back = ncd.backward(d)
    ops = [b.prim.op for b in back.boxes()]
    assert {"embedding_grad", "linear_weight_grad", "add"} <= set(ops)
    assert dict(back.meta)["outputs"] == ("param 0",)  # one parameter, one gradient
    _assert_same(compare_gradients(d, t=3, v=10, m=4))


def test_woven_weight_gradients_are_one_contraction() -> None:
    """∂W of a learned map woven over b t is one ∂L with the woven axes summed (no per-position outer product)."""
    d = ncd.Identity.of("b t m") >> ncd.Linear("m -> n", bias=True)
    back = ncd.backward(d)
    (grad,) = [b for b in back.boxes() if b.prim.op == "linear_weight_grad"]
    assert grad.prim.batch.names == ("b", "t") and str(grad.cod) == "n m"
    source = back.to_source(b=2, t=3, m=4, n=5)
    assert "linear_weight_grad = torch.einsum('...cdb,...cda->...ab', x0, x2)  # n m (5, 4)" in source
    _assert_same(compare_gradients(d, b=2, t=3, m=4, n=5))


def test_batch_norm_backward_follows_the_modules_mode() -> None:
    d = ncd.Identity.of("b c x") >> ncd.BatchNorm("b c x", channel="c")
    ops = {b.prim.training for b in ncd.backward(d, training=False).boxes() if b.prim.op == "batchnorm_backward"}
    assert ops == {False}
    for train in (True, False):
        _assert_same(compare_gradients(d, train=train, b=4, c=3, x=5))


def test_plan_forward_returns_outputs_then_stored_values() -> None:
    d = ncd.Identity.of("a") >> ncd.Exp()
    p = plan(d)
    assert str(p.forward.cod) == "a, a"  # the output and the stored output (exp saves its result)
    x = torch.randn(3)
    y, stored = p.forward.to_torch(a=3)(x)
    torch.testing.assert_close(stored, torch.exp(x))


@pytest.mark.parametrize("build", [attention_head, multi_head_attention, mlp], ids=lambda f: f.__name__)
def test_cost_of_a_backward_diagram_matches_its_flop_count(build) -> None:
    """Backward diagrams are costed like any diagram (their matrix products counted exactly)."""
    from ncd.torch.measure import measure

    d = build()
    sizes = {k: v for k, v in SIZES.items() if k in {str(s) for s in d.free_symbols}}
    back = ncd.backward(d)
    report, m = ncd.cost(back, **sizes), measure(back, **sizes)
    assert (report.forward_matmul, report.backward_matmul) == (m.forward_flops, m.backward_flops)
    assert report.forward_matmul > 0
