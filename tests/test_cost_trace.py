"""Every traced corpus model (``ncd.trace`` of small ``transformers`` models): ``ncd.cost`` equals measurement."""

from __future__ import annotations

import warnings

import pytest
import torch

import ncd
from ncd.torch.measure import measure
from ncd.torch.read_back import KEYS
from ncd.trace.params import HOLDER
from tests.test_trace_corpus import CORPUS  # noqa: E402

warnings.filterwarnings("ignore", message=".*bos_token_id.*|.*eos_token_id.*")


@pytest.mark.parametrize("name", list(CORPUS))
def test_traced_model_cost_matches_flop_counter_and_autograd(name: str) -> None:
    build, _ = CORPUS[name]
    torch.manual_seed(0)
    model, args, kwargs = build()
    traced = ncd.trace(model.eval(), *args, **kwargs)
    diagram = getattr(traced, "diagram", traced)
    inputs = tuple(a for a in list(args) + list(kwargs.values()) if isinstance(a, torch.Tensor))
    report = ncd.cost(diagram)
    # measured on the plain diagram: the traced module shares tied weights (T5's embedding), which the diagram draws
    # once per box that uses them; as_block() keeps the ties in its meta ('tied': a block read back from JSON lowers
    # them as one parameter), so they are dropped here
    plain = diagram
    if isinstance(diagram, ncd.TracedDiagram):
        block = diagram.as_block()
        plain = ncd.Block(block.body, block.name, tuple((k, v) for k, v in block.meta if k not in KEYS))
    m = measure(plain, inputs=inputs)
    assert report.forward_matmul == m.forward_flops
    assert report.backward_matmul + report.counter_excess == m.backward_flops
    assert report.activation_bytes == m.activation_bytes, m.saved
    # parameters: a tied weight counted once, as the traced diagram's own module and the model hold it (T5: was
    # 44,800, one count per box, for the model's 43,200)
    lowered = diagram.to_torch()
    held = sum(p.numel() for name, p in lowered.named_parameters() if not name.startswith(HOLDER + "."))
    assert report.params == held
    if not hasattr(lowered, HOLDER):  # every parameter of the model read
        assert report.params == sum(p.numel() for p in model.parameters())
