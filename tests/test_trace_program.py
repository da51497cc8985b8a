"""The importer's captured node list written as a lowered program (``ncd.trace.program``) runs as the model.

Each traced corpus model is captured, converted to an :class:`ncd.ir.program.Program` (one op per
ATen call, typed values with their shapes), printed, compiled, loaded with the captured parameters
and constants, and run: its outputs equal the original model's on the captured inputs.
"""

from __future__ import annotations

import pytest
import torch

from ncd.torch.module import compile_source
from ncd.trace.capture import capture
from ncd.trace.program import captured_program, captured_state
from tests.test_trace_corpus import CORPUS


@pytest.mark.parametrize("name", sorted(CORPUS), ids=str)
def test_captured_program_runs_as_the_model(name: str) -> None:
    make, _ = CORPUS[name]
    torch.manual_seed(0)
    model, args, kwargs = make()
    model = model.eval()
    captured = capture(model, args, kwargs)
    program = captured_program(captured)
    calls = [op for op in program.top.ops if op.kind == "call"]
    assert calls and all(op.target.startswith(("aten.", "prims.")) for op in calls)
    module = compile_source(program.to_source(), name)["Captured"]()
    module.load_state_dict(captured_state(captured))
    with torch.no_grad():
        expected = model(*args, **kwargs)
        got = module(*[t for t in args if isinstance(t, torch.Tensor)], *[v for v in kwargs.values()])
    flat = [t for t in torch.utils._pytree.tree_leaves(expected) if isinstance(t, torch.Tensor)]
    got = list(got) if isinstance(got, tuple) else [got]
    assert len(got) == len(flat)
    for a, b in zip(got, flat):
        torch.testing.assert_close(a, b)
