"""The scan (``ncd.Scan``): drawn once whatever its length, its backward an explicit "unsupported"; the values,
costs and JSON of its samples are checked with every primitive (tests/opdb/scan.py)."""

from __future__ import annotations

import pytest
import torch

import ncd
from ncd.analysis.tables import AnalysisError
from ncd.ir.size import symbol
from ncd.render import to_svg
from tests.opdb.scan import rnn, rnn_step


def test_the_body_is_drawn_once_whatever_the_length() -> None:
    short = to_svg(ncd.Scan(rnn_step(), "t:4", carry=1).weave("b"), embed_fonts=False)
    long = to_svg(ncd.Scan(rnn_step(), "t:4096", carry=1).weave("b"), embed_fonts=False)
    assert short.count("tanh") == long.count("tanh") == 1
    assert len(long) < 1.05 * len(short)  # only the sizes in the labels differ


def test_backward_is_an_explicit_unsupported() -> None:
    with pytest.raises(AnalysisError, match="backward of primitive 'scan' is not supported: the backward of a recurrence"):
        ncd.backward(ncd.Scan(rnn_step(), "t:4", carry=1))


def test_symbolic_cost_is_length_times_the_step() -> None:
    report = ncd.cost(ncd.Scan(rnn_step(), "t", carry=1).weave("b"))
    b, h, t = (symbol(n) for n in "bht")
    assert report.formulas.forward_matmul - 2 * b * h * h * t == 0
    assert report.formulas.params == h * h


def test_scan_inside_a_block_lowers_with_its_parameters_shared() -> None:
    model = (ncd.Identity.of("h:3") @ ncd.Identity.of("t:6 h:3")) >> ncd.Scan(rnn_step(), "t", carry=1)
    module = model.block("RNN").to_torch()
    assert sum(p.numel() for p in module.parameters()) == 9
    h0, x = torch.randn(2, 3), torch.randn(2, 6, 3)
    params = {k.rsplit(".", 2)[-2] + "." + k.rsplit(".", 1)[-1]: v for k, v in module.state_dict().items()}
    for got, want in zip(module(h0, x), rnn(params, (h0, x))):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("where", ["plain", "block", "repeat"])
def test_a_body_that_saves_or_loads_is_refused_wherever_the_box_sits(where: str) -> None:
    """The store check reads the body's boxes in place (plain nodes) or inlined (a repetition unrolled): both find a
    ``Save`` however deep it sits, and a body without one is built."""
    from ncd.errors import TypeMismatchError

    save = ncd.Save("h:3", "k")
    inner = save.block("keep") if where == "block" else ncd.repeat(save, "i", 0, 2) if where == "repeat" else save
    body = rnn_step() >> (inner @ ncd.Identity.of("h:3"))
    with pytest.raises(TypeMismatchError, match="cannot save or load"):
        ncd.Scan(body, "t:4", carry=1)
    kept = ncd.Identity.of("h:3").block("keep")
    plain = rnn_step() >> ((ncd.repeat(kept, "i", 0, 2) if where == "repeat" else kept) @ ncd.Identity.of("h:3"))
    assert ncd.Scan(plain, "t:4", carry=1).prim.carry == 1  # nothing is stored: the scan is built
