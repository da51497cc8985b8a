"""Attention fusion is a rewrite of the lowered program: steps matched by dataflow, replaced by one SDPA step.

Lowering writes the boxes one by one; the rewrite (``ncd.torch.fusion.fuse_attention``) follows the values the
steps read back from the einsum with the values to the score einsum and replaces those steps.  Checked here:
the rewritten program against the unfused one (``fusion.disabled()``) and a torch reference, values and
gradients; its costs against ``FlopCounterMode`` and autograd's saved tensors; a pattern the diagram's parts do
not show but the program's dataflow does; what the rewrite removes (ops, a dropout module, the names they took).
"""

from __future__ import annotations

import sympy
import torch
import torch.nn.functional as F

import ncd
from ncd.prims.patterns import recognise_attention
from ncd.torch import fusion
from ncd.torch.codegen import to_program
from ncd.torch.measure import measure

SDPA = "F.scaled_dot_product_attention("


def _run(module: torch.nn.Module, xs: list[torch.Tensor]) -> list[torch.Tensor]:
    out = module(*xs)
    weight = torch.linspace(-1, 1, out.numel()).view(out.shape)
    leaves = [x for x in xs if x.requires_grad] + list(module.parameters())
    return [out.detach()] + list(torch.autograd.grad((out * weight).sum(), leaves))


def _inputs(d: ncd.Diagram, sizes: dict[str, int]) -> list[torch.Tensor]:
    return [x.requires_grad_(True) for x in d.example_inputs(2, seed=1, **sizes)]


def test_the_unfused_steps_become_one_fused_step_reading_the_same_values() -> None:
    scores = ncd.Einsum("y k h, x k h -> y x h") >> ncd.Scale("k**-0.5") >> ncd.CausalMask("y", "x")
    scores = scores >> ncd.Softmax("x") >> ncd.Dropout(0.1)
    d = (scores @ ncd.Identity.of("x k h")) >> ncd.Einsum("y x h, x k h -> y k h")
    sizes = {"y": 6, "x": 6, "k": 4, "h": 3}
    with fusion.disabled():
        plain = to_program(d, **sizes)
        unfused = d.to_torch(**sizes).eval()
    program = to_program(d, **sizes)
    boxes = [s.box.prim.op for s in plain.top.steps if s.kind == "box"]
    assert boxes == ["einsum", "scale", "causal_mask", "softmax", "dropout", "einsum"]
    assert [s.kind for s in program.top.steps] == ["enter", "fused", "exit"]
    fused = program.top.steps[1]
    assert [v.var for v in fused.inputs] == [v.var for v in program.top.inputs]  # q, k, v: the class's inputs
    assert [p.prim.op for p in (ncd.ir.diagram.unweave(p)[0] for p in fused.parts)] == boxes
    assert all(op.box is None for op in program.top.ops)  # no op of a replaced box is left
    sdpa = next(op for op in program.top.ops if op.target == "F.scaled_dot_product_attention")
    assert len(sdpa.args) == 3 and dict(sdpa.options) == {"scale": sympy.Rational(1, 2), "is_causal": True,
                                                          "dropout_p": 0.1}
    source = program.to_source()
    assert SDPA in source and "nn.Dropout" not in source and "softmax" not in source  # its module went with it
    module = d.to_torch(**sizes).eval()
    assert module.ncd_source == source and dict(module.named_modules()).keys() == {""}
    xs = _inputs(d, sizes)
    q, k, v = (x.movedim(-1, -3) for x in xs)  # heads first, as SDPA reads them
    want = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.5).movedim(-3, -1)
    got, ref = _run(module, xs), _run(unfused, xs)
    torch.testing.assert_close(got[0], want, atol=1e-5, rtol=1e-4)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_dataflow_finds_the_pattern_where_the_diagram_shows_none() -> None:
    """The values are computed beside the scores (a learned map, not a wire): no part of the diagram has the
    pattern's shape, but the program's steps compute exactly SDPA, so the rewrite fuses them; costs follow."""
    scores = ncd.Einsum("y k, x k -> y x") >> ncd.Scale("k**-0.5") >> ncd.Softmax("x")
    d = (scores @ ncd.Linear("m -> k", bias=True).weave("x")) >> ncd.Einsum("y x, x k -> y k")
    sizes = {"y": 5, "x": 7, "k": 4, "m": 6}
    assert all(recognise_attention(d.parts, j) is None for j in range(len(d.parts)))
    module = d.to_torch(**sizes)
    with fusion.disabled():
        plain = d.to_torch(**sizes)
    plain.load_state_dict(module.state_dict())
    assert SDPA in module.ncd_source and SDPA not in plain.ncd_source
    xs = _inputs(d, sizes)
    linear = dict(module.named_modules())[next(n for n, _ in module.named_modules() if n)]
    want = F.scaled_dot_product_attention(xs[0], xs[1], linear(xs[2]), scale=0.5)
    got, ref = _run(module, xs), _run(plain, xs)
    torch.testing.assert_close(got[0], want.detach(), atol=1e-5, rtol=1e-4)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    report, run = ncd.cost(d, **sizes), measure(d, **sizes)
    assert "sdpa" in {b.op for b in report.boxes}
    assert (report.forward_matmul, report.backward_matmul + report.counter_excess, report.activation_bytes) == (
        run.forward_flops, run.backward_flops, run.activation_bytes)


def test_locals_are_named_as_if_the_replaced_steps_had_never_been_written() -> None:
    scores = ncd.Einsum("y k, x k -> y x") >> ncd.Softmax("x")
    d = (scores @ ncd.Identity.of("x k")) >> ncd.Einsum("y x, x k -> y k") >> ncd.Scale(2) >> ncd.Softmax("k")
    source = d.to_source(y=3, x=4, k=5)
    assert "scale = attention * 2" in source and "softmax = torch.softmax(scale, dim=-1)" in source
    with fusion.disabled():
        assert "scale = einsum_1 * 2" in d.to_source(y=3, x=4, k=5)


def test_no_rewrite_when_the_chain_is_not_attention() -> None:
    """A softmax over the queries, or probabilities contracted over another axis, stay box by box."""
    for scores, contract in ((ncd.Einsum("y k, x k -> y x") >> ncd.Softmax("y"), "y x, x k -> y k"),
                             (ncd.Einsum("y k, x k -> y x") >> ncd.Softmax("x"), "y x, x k -> y x k")):
        d = (scores @ ncd.Identity.of("x k")) >> ncd.Einsum(contract)
        program = to_program(d, y=3, x=4, k=5)
        assert "fused" not in [s.kind for s in program.top.steps] and SDPA not in program.to_source()


def test_cost_in_eval_mode_is_the_program_below_the_fused_inference_branch() -> None:
    """``ncd.cost(training=False)`` costs eval mode with autograd recording (backward, saved tensors): the ops below
    the guard of a class's fused inference kernel (``ncd.torch.layouts``), which runs only with autograd off.
    ``flop_counter`` sees no product inside that kernel, so nonzero equal counts show the ops below it ran."""
    from ncd.torch.layouts import FUSED_ENCODER
    from tests.test_layouts import SIZES, gallery_layer

    d = gallery_layer()
    module = d.to_torch(**SIZES)
    assert FUSED_ENCODER + "(" in module.ncd_source
    report, run = ncd.cost(d, training=False, **SIZES), measure(d, module=module, training=False, **SIZES)
    assert run.forward_flops > 0 and run.activation_bytes > 0
    assert (report.forward_matmul, report.backward_matmul + report.counter_excess, report.activation_bytes) == (
        run.forward_flops, run.backward_flops, run.activation_bytes)


def test_a_producer_any_number_of_steps_back_is_found() -> None:
    """The rewrite finds a value's producer by an index of the steps (``fusion._Producers``), not by a walk back of
    bounded reach: 150 steps on the values' path between the softmax and the einsum reading it still fuse, equal to
    the unfused program; and a later attention in the same class fuses too (the index follows the rewrite)."""
    scores = ncd.Einsum("y k, x k -> y x") >> ncd.Scale("k**-0.5") >> ncd.Softmax("x")
    path = ncd.Identity.of("x k")
    for _ in range(150):
        path = path >> ncd.Tanh()
    attend = (scores @ path) >> ncd.Einsum("y x, x k -> y k")
    second = ncd.Copy("y k", 3) >> (ncd.Identity.of("y k") @ ncd.Rename("y -> x") @ ncd.Rename("y -> x"))
    d = (attend >> second >> (scores @ ncd.Identity.of("x k")) >> ncd.Einsum("y x, x k -> y k"))
    sizes = {"y": 5, "x": 5, "k": 4}
    program = to_program(d, **sizes)
    assert [s.kind for s in program.top.steps].count("fused") == 2
    assert program.to_source().count(SDPA) == 2 and "softmax" not in program.to_source()
    with fusion.disabled():
        unfused = d.to_torch(**sizes)
    xs = _inputs(d, sizes)
    for got, want in zip(_run(d.to_torch(**sizes), xs), _run(unfused, xs)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
