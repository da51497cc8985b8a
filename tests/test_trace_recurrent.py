"""Recurrences imported as scans over the time axis: ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` (one ATen call each) and
loops recorded step by step (a selective scan); round trips against the original modules on fresh inputs."""

from __future__ import annotations

import pytest
import torch

import ncd
from ncd.prims.scan import ScanOp


def _scans(d: ncd.Diagram) -> list[ScanOp]:
    return [b.prim for b in d.boxes() if isinstance(b.prim, ScanOp)]


CASES = {
    "lstm-2-layers-batch-first": (lambda: torch.nn.LSTM(4, 6, num_layers=2, batch_first=True), (2, 5, 4)),
    "lstm-time-first": (lambda: torch.nn.LSTM(3, 5), (6, 2, 3)),
    "gru-2-layers": (lambda: torch.nn.GRU(4, 6, num_layers=2, batch_first=True), (2, 7, 4)),
    "gru-unbatched-no-bias": (lambda: torch.nn.GRU(4, 6, bias=False), (7, 4)),
    "rnn-relu": (lambda: torch.nn.RNN(4, 6, nonlinearity="relu"), (7, 3, 4)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_recurrent_layers_round_trip_as_scans(name: str) -> None:
    make, shape = CASES[name]
    torch.manual_seed(0)
    model = make().eval()
    d = ncd.trace(model, torch.randn(shape))
    assert d.opaque_count == 0
    assert len(_scans(d)) == model.num_layers
    lowered = d.to_torch()
    x = torch.randn(shape)
    got, want = lowered(x), model(x)
    want = (want[0], *want[1]) if isinstance(want[1], tuple) else want
    assert len(got) == len(want)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert ncd.load_json(d.to_json()) == d.as_block()


def test_the_drawing_does_not_grow_with_the_sequence() -> None:
    from ncd.render import to_svg

    model = torch.nn.LSTM(4, 6, batch_first=True).eval()
    short = to_svg(ncd.trace(model, torch.randn(2, 4, 4)), embed_fonts=False)
    long = to_svg(ncd.trace(model, torch.randn(2, 256, 4)), embed_fonts=False)
    assert len(long) < 1.05 * len(short)


def test_bidirectional_layers_are_declined_visibly() -> None:
    model = torch.nn.LSTM(4, 6, bidirectional=True).eval()
    with pytest.warns(UserWarning, match="opaque"):
        d = ncd.trace(model, torch.randn(5, 2, 4))
    assert d.opaque_count == 1
