"""Every traced corpus model (``ncd.trace`` of small ``transformers`` models): ``ncd.cost`` equals measurement."""

from __future__ import annotations

import warnings

import pytest
import torch

import ncd
from ncd.torch.measure import measure
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
    # (and ncd.cost counts) once per box that uses them
    m = measure(diagram.as_block() if isinstance(diagram, ncd.TracedDiagram) else diagram, inputs=inputs)
    assert report.forward_matmul == m.forward_flops
    assert report.backward_matmul + report.counter_excess == m.backward_flops
    assert report.activation_bytes == m.activation_bytes, m.saved
    assert report.params == m.params
