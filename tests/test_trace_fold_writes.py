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


def _trace(model: torch.nn.Module, *x: torch.Tensor) -> ncd.TracedDiagram:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ncd.trace(model, *x)


def _scans(d: ncd.Diagram) -> int:
    return [b.prim.op for b in d.boxes()].count("scan")


@pytest.mark.parametrize("batch", [2, 1])
def test_a_loop_writing_its_positions_is_one_scan_whatever_the_length(batch: int) -> None:
    model = Wkv()
    short, long = _trace(model, torch.randn(batch, 4, 3)), _trace(model, torch.randn(batch, 11, 3))
    assert _scans(short) == _scans(long) == 1
    assert len(list(short.boxes())) == len(list(long.boxes()))
    for d, t in ((short, 4), (long, 11)):
        x = torch.randn(batch, t, 3)
        torch.testing.assert_close(d.to_torch()(x), model(x))


@pytest.mark.parametrize("peek", [True])
def test_a_buffer_read_while_written_stays_unrolled(peek: bool) -> None:
    model = Wkv(peek)
    d = _trace(model, torch.randn(2, 4, 3))
    assert _scans(d) == 0
    x = torch.randn(2, 4, 3)
    torch.testing.assert_close(d.to_torch()(x), model(x))


class ChunkedDeltaRule(torch.nn.Module):
    """``transformers``' chunked gated delta rule (Qwen3.5, Qwen3-Next, OLMo-Hybrid, MiniCPM...), chunks of 4 tokens:
    the loop over chunks writes ``core_attn_out[:, :, i]`` and carries the recurrent state."""

    def __init__(self, final_state: bool = False) -> None:
        super().__init__()
        self.final_state = final_state

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, beta: torch.Tensor,
                state: torch.Tensor) -> torch.Tensor:
        from transformers.models.qwen3_5.modeling_qwen3_5 import torch_chunk_gated_delta_rule

        out, last = torch_chunk_gated_delta_rule(q, k, v, g, beta, chunk_size=4, initial_state=state,
                                                 output_final_state=self.final_state)
        return out if last is None else out + last.sum((-1, -2))[:, None, :, None]


def _delta_inputs(t: int, seed: int, b: int = 2) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, t, 2, 3, generator=gen) for _ in range(3))
    return q, k, v, -torch.rand(b, t, 2, generator=gen), torch.rand(b, t, 2, generator=gen), \
        torch.randn(b, 2, 3, 3, generator=gen)


@pytest.mark.parametrize("final_state, batch", [(False, 2), (True, 2), (False, 1)])
def test_the_chunked_delta_rule_is_one_scan_at_any_number_of_chunks(final_state: bool, batch: int) -> None:
    """A batch of one records each write through the size-1 dimension (select, cat, unsqueeze): read as a stack too."""
    model = ChunkedDeltaRule(final_state)
    counts = []
    for t in (8, 12, 20):  # 2, 3 and 5 chunks
        d = _trace(model, *_delta_inputs(t, 0, batch))
        assert _scans(d) == 1 and d.opaque_count == 0
        counts.append(len(list(d.boxes())))
        fresh = _delta_inputs(t, 1, batch)
        torch.testing.assert_close(d.to_torch()(*fresh), model(*fresh), rtol=1e-4, atol=1e-5)
    assert counts[0] == counts[1] == counts[2]


class ReadsItsStart(torch.nn.Module):
    """The initial state read again at every step, as a constant beside the state: two readings of one value."""

    def forward(self, x: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:  # x: (b, t, m), h0: (b, m)
        h, ys = h0, []
        for i in range(x.shape[1]):
            h = torch.tanh(h * 0.5 + x[:, i]) + h0
            ys.append(h)
        return torch.stack(ys, 1)


def test_a_loop_reading_its_initial_state_as_a_constant_too_is_equal() -> None:
    model = ReadsItsStart()
    for t in (2, 3, 5):
        d = _trace(model, torch.randn(2, t, 3), torch.randn(2, 3))
        assert _scans(d) == 1
        x, h0 = torch.randn(2, t, 3), torch.randn(2, 3)
        torch.testing.assert_close(d.to_torch()(x, h0), model(x, h0))
