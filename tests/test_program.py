"""The lowered program (``ncd.ir.program``): produced once, printed, compiled, and typed truthfully.

The types are checked against PyTorch itself: the generated modules run, every local's shape is
read at the end of each ``forward`` and compared with the layout the program declares for it.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest
import torch

import ncd
from ncd.ir.program import Program
from ncd.ir.size import evaluate
from ncd.torch.codegen import to_program
from ncd.zoo import MODELS

SMALL = {"mlp": {}, "attention": {}, "multi_head_attention": {}, "transformer": {}, "convolution": {}, "resnet": {},
         "unet": {}, "vit": {}, "visual_attention": {}, "gpt2": {}}


def _locals_of_forwards(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> dict[str, dict[str, Any]]:
    """Each generated class's ``forward`` locals: every value it bound, as it was bound (a generated forward
    deletes an intermediate after its last read, so the locals at its return would not show them)."""
    seen: dict[str, dict[str, Any]] = {}

    def trace(frame: Any, event: str, arg: Any) -> Any:
        if frame.f_code.co_name != "forward" or not frame.f_code.co_filename.startswith("<ncd-generated"):
            return None

        def local(frame: Any, event: str, arg: Any) -> Any:
            seen.setdefault(type(frame.f_locals["self"]).__name__, {}).update(frame.f_locals)
            return local

        return local

    sys.settrace(trace)
    try:
        with torch.no_grad():
            module.eval()(*inputs)
    finally:
        sys.settrace(None)
    return seen


def _check_defined_before_use(program: Program) -> None:
    for function in program.functions:
        known = {v.var for v in function.inputs}
        for op in function.ops:
            for v in op.args:
                assert v.var in known, f"{function.name}: {op.code!r} reads {v.var} before it is defined"
            known |= {v.var for v in op.outputs}
        assert {v.var for v in function.outputs} <= known


@pytest.mark.parametrize("name", ["mlp", "attention", "multi_head_attention", "transformer", "convolution", "resnet",
                                  "vit"])
def test_gallery_programs_declare_the_shapes_torch_computes(name: str) -> None:
    diagram = MODELS[name]()
    module = diagram.to_torch()
    program: Program = module.ncd_program
    assert program.to_source() == module.ncd_source == diagram.to_source()  # one program: printed = compiled
    _check_defined_before_use(program)
    frames = _locals_of_forwards(module, diagram.example_inputs(2))
    checked = 0
    for function in program.functions:
        if function.name not in frames:
            continue
        local = frames[function.name]
        for op in function.ops:
            for value in op.outputs:
                tensor = local.get(value.var)
                if not isinstance(tensor, torch.Tensor):
                    continue
                want = tuple(evaluate(a.size) for a in value.axes)
                got = tuple(tensor.shape[tensor.dim() - len(want):]) if want else ()
                assert got == want, f"{function.name}: {value.var} = {op.code} declared {want}, torch made {tensor.shape}"
                checked += 1
    assert checked >= len(program.top.ops) // 2


def test_ops_name_what_they_run_and_the_boxes_they_lower() -> None:
    d = (ncd.Identity.of("t m") >> ncd.Linear("m -> k h", bias=True) >> ncd.Copy("t k h", 2)
         >> ncd.Einsum("t k h, t k h -> h") >> ncd.ReLU())
    program = to_program(d, t=3, m=4, k=2, h=5)
    ops = program.top.ops
    assert [(op.kind, op.target) for op in ops] == [("call", "Tensor.unflatten"), ("einsum", "torch.einsum"),
                                                    ("call", "torch.relu")]
    assert [op.box.prim.op if op.box else None for op in ops] == ["linear", "einsum", "elementwise"]
    einsum = ops[1]
    assert [v.var for v in einsum.args] == [ops[0].outputs[0].var] * 2  # one argument per subscript: the same value
    assert [a.name for a in einsum.outputs[0].axes] == ["h"]
    assert program.top.attributes == {"l_plus": "nn.Linear(4, 10)"}


def test_rules_returning_text_still_lower_and_their_ops_read_the_values_they_name() -> None:
    from ncd.torch.rules import RuleContext

    ctx_type = RuleContext  # the typed API is optional: a rule may return plain text
    assert hasattr(ctx_type, "call") and hasattr(ctx_type, "einsum") and hasattr(ctx_type, "bind")
    program = to_program(ncd.Identity.of("b m") >> ncd.Scale(2) >> ncd.Softmax("m"), b=2, m=3)
    scale, softmax = program.top.ops
    assert scale.kind == "expr" and [v.var for v in scale.args] == ["x"]
    assert softmax.kind == "call" and softmax.target == "torch.softmax" and softmax.args == scale.outputs


def test_generic_weaves_are_view_ops_of_the_program() -> None:
    from ncd.ir.axes import Axis
    from ncd.ir.diagram import Weave

    # a block woven over b in the middle of its axes runs with b moved to the front, then moved back
    block = (ncd.Linear("m -> n") >> ncd.ReLU()).block("B")
    d = Weave(block, Axis("b", 4), (1,), (1,))
    program = to_program(d, m=2, n=3)
    views = [op for op in program.top.ops if op.kind == "view"]
    assert [op.target for op in views] == ["torch.movedim", "torch.movedim"]
    assert [[a.name for a in op.outputs[0].axes] for op in views] == [["b", "m"], ["n", "b"]]
    assert [op.kind for op in program.top.ops] == ["view", "block", "view"]
    x = torch.randn(2, 4)
    torch.testing.assert_close(d.to_torch(m=2, n=3)(x).shape, torch.Size([3, 4]))


def test_the_internals_page_example_runs() -> None:
    import doctest
    from pathlib import Path

    page = (Path(__file__).resolve().parent.parent / "docs" / "internals.md").read_text(encoding="utf-8")
    section = page.split("## The lowered program", 1)[1].split("\n## ", 1)[0]
    test = doctest.DocTestParser().get_doctest(section, {}, "internals.md: the lowered program", None, 0)
    assert test.examples
    result = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS).run(test)
    assert result.failed == 0


def test_attention_operands_reach_sdpa_with_a_dense_last_dimension() -> None:
    # the gallery writes heads after features (m -> k h): arranging for SDPA moves k away from the end;
    # the program packs such operands (a layout chosen), and leaves already-dense ones alone
    diagram = MODELS["multi_head_attention"]()
    module = diagram.to_torch()
    sdpa = [op for _, op in module.ncd_program.ops() if op.target == "F.scaled_dot_product_attention"]
    assert len(sdpa) == 1 and len(sdpa[0].args) == 3
    frames = _locals_of_forwards(module, diagram.example_inputs(2))
    local = next(frame for frame in frames.values() if sdpa[0].args[0].var in frame and "attention" in frame)
    for value in sdpa[0].args:
        assert local[value.var].stride()[-1] == 1, f"{value.var} reaches SDPA strided"
    q = ncd.Identity.of("t m") >> ncd.Linear("m -> h k")
    k, v = (ncd.Identity.of("t m") >> ncd.Rename("t -> x") >> ncd.Linear("m -> h k") for _ in range(2))
    scores = ncd.Einsum("t h k, x h k -> h t x") >> ncd.Scale("k**-0.5") >> ncd.Softmax("x")
    attend = (scores @ ncd.Identity.of("x h k")) >> ncd.Einsum("h t x, x h k -> t h k")
    heads_first = ncd.Copy("t m", 3) >> (q @ k @ v) >> attend
    source = heads_first.to_source(t=4, m=8, h=2, k=4)
    assert "scaled_dot_product_attention" in source and ".contiguous()" not in source
