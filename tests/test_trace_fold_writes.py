"""Loops writing each step into its position of a buffer (ncd.trace.fold_writes) fold into one scan, even when the
last step's state update is never read; near misses stay unrolled, still equal."""

from __future__ import annotations

import warnings

import pytest
import torch

import ncd


class Wkv(torch.nn.Module):
    """RWKV's form: the output written at position i, then the state updated (the last update is never read)."""

    def __init__(self, peek: bool = False) -> None:
        super().__init__()
        self.peek = peek

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (b, t, m)
        out, state = torch.zeros_like(x), torch.zeros_like(x[:, 0])
        for i in range(x.shape[1]):
            y = torch.tanh(state + x[:, i])
            if self.peek:  # the buffer read while it is written: not a stack of the steps
                y = y + out[:, :1].sum(1)
            out[:, i] = y * 2
            state = 0.5 * state + y
        return out


def _trace(model: torch.nn.Module, x: torch.Tensor) -> ncd.TracedDiagram:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ncd.trace(model, x)


def _scans(d: ncd.Diagram) -> int:
    return [b.prim.op for b in d.boxes()].count("scan")


def test_a_loop_writing_its_positions_is_one_scan_whatever_the_length() -> None:
    model = Wkv()
    short, long = _trace(model, torch.randn(2, 4, 3)), _trace(model, torch.randn(2, 11, 3))
    assert _scans(short) == _scans(long) == 1
    assert len(list(short.boxes())) == len(list(long.boxes()))
    for d, t in ((short, 4), (long, 11)):
        x = torch.randn(2, t, 3)
        torch.testing.assert_close(d.to_torch()(x), model(x))


@pytest.mark.parametrize("peek", [True])
def test_a_buffer_read_while_written_stays_unrolled(peek: bool) -> None:
    model = Wkv(peek)
    d = _trace(model, torch.randn(2, 4, 3))
    assert _scans(d) == 0
    x = torch.randn(2, 4, 3)
    torch.testing.assert_close(d.to_torch()(x), model(x))
