"""Recurrences imported as scans over the time axis: ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` (one ATen call each) and
loops recorded step by step (a selective scan); round trips against the original modules on fresh inputs."""

from __future__ import annotations

import pytest
import torch

import ncd
from ncd.ir.diagram import defaults_of
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


def test_projected_layers_are_declined_visibly() -> None:  # bidirectional ones: tests/test_trace_usermodels.py
    model = torch.nn.LSTM(4, 6, proj_size=3).eval()
    with pytest.warns(UserWarning, match="opaque"):
        d = ncd.trace(model, torch.randn(5, 2, 4))
    assert d.opaque_count == 1


class Elman(torch.nn.Module):
    """A recurrence written as a Python loop (what the recorder unrolls): ``h = tanh(W h + U x_t)``."""

    def __init__(self, reverse: bool = False, shifted: bool = False) -> None:
        super().__init__()
        self.w, self.u = torch.nn.Linear(5, 5), torch.nn.Linear(3, 5, bias=False)
        self.reverse, self.shifted = reverse, shifted

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.zeros(x.shape[0], 5)
        ys = []
        order = range(x.shape[1] - 1, -1, -1) if self.reverse else range(x.shape[1])
        for i in order:
            j = min(i + 1, x.shape[1] - 1) if self.shifted else i  # not the step's own position: no scan
            h = torch.tanh(self.w(h) + self.u(x[:, j]))
            ys.append(h * 2)
        if self.reverse:
            ys.reverse()
        return torch.stack(ys, dim=1) + h[:, None]


@pytest.mark.parametrize("kind", ["forward", "reverse", "shifted"])
def test_recorded_loops_fold_into_one_scan(kind: str) -> None:
    torch.manual_seed(0)
    model = Elman(reverse=kind == "reverse", shifted=kind == "shifted").eval()
    d = ncd.trace(model, torch.randn(2, 7, 3))
    assert len(_scans(d)) == (0 if kind == "shifted" else 1)
    x = torch.randn(2, 7, 3)
    torch.testing.assert_close(d.to_torch()(x), model(x), atol=1e-5, rtol=1e-4)
    if kind == "reverse":
        assert _scans(d)[0].reverse


class CellLoop(torch.nn.Module):
    """Cells in a Python loop over the positions: the recording of the last step lacks the pick of the cell state
    ``c`` (nothing reads the final ``c``), so the last step is one call shorter than the others."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm, self.gru = torch.nn.LSTMCell(3, 5), torch.nn.GRUCell(5, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = c = x.new_zeros(x.shape[0], 5)
        g = x.new_zeros(x.shape[0], 4)
        outs = []
        for t in range(x.shape[1]):
            h, c = self.lstm(x[:, t], (h, c))
            g = self.gru(h, g)
            outs.append(g)
        return torch.stack(outs, 1)


def test_a_loop_of_cells_folds_into_one_scan() -> None:
    from ncd.render import to_svg

    torch.manual_seed(0)
    model = CellLoop().eval()
    sizes = []
    for length in (4, 24):
        d = ncd.trace(model, torch.randn(2, length, 3))
        assert d.opaque_count == 0 and len(_scans(d)) == 1
        x = torch.randn(2, length, 3)
        torch.testing.assert_close(d.to_torch()(x), model(x), atol=1e-5, rtol=1e-4)
        sizes.append(len(to_svg(d, embed_fonts=False)))
    assert sizes[1] < 1.01 * sizes[0]  # the step drawn once


def test_mamba_selective_scan_folds_and_round_trips() -> None:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.MambaConfig(vocab_size=64, hidden_size=16, state_size=4, num_hidden_layers=2, expand=2,
                                   conv_kernel=4, time_step_rank=4)
    torch.manual_seed(0)
    model = transformers.MambaModel(cfg).eval()
    from ncd.render import to_svg

    sizes = []
    for length in (6, 48):
        d = ncd.trace(model, torch.randint(0, 64, (2, length)), use_cache=False)
        # one scan, drawn once for both layers, over the tokens t (the causal conv's t+3 sliced back to t)
        assert [str(s.length) for s in _scans(d)] == ["t"] and defaults_of(d.as_block())["t"] == length
        for other in (length, 11):  # the traced length and another one
            ids = torch.randint(0, 64, (2, other))
            got = d.to_torch(t=other)(ids)
            torch.testing.assert_close(got[0] if isinstance(got, tuple) else got,
                                       model(ids, use_cache=False).last_hidden_state, atol=1e-4, rtol=1e-4)
        sizes.append(len(to_svg(d, embed_fonts=False)))
    assert sizes[1] < 1.01 * sizes[0]


class _TwoRecurrences(torch.nn.Module):
    """Two LSTMs of one size in sequence (each with its own weights), then a two-layer bidirectional GRU with a bias and
    one without: scans whose cells step by one body (built once per converter), each reading its own weights."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = torch.nn.LSTM(6, 6, batch_first=True), torch.nn.LSTM(6, 6, batch_first=True)
        self.c = torch.nn.GRU(6, 5, num_layers=2, bidirectional=True, batch_first=True)
        self.d = torch.nn.GRU(10, 5, bias=False, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.a(x)
        y, _ = self.b(y)
        y, h = self.c(y)
        z, _ = self.d(y)
        return z + h[-1:].transpose(0, 1)


def test_recurrences_sharing_a_cell_body_keep_their_own_weights() -> None:
    torch.manual_seed(0)
    model = _TwoRecurrences().eval()
    d = ncd.trace(model, torch.randn(2, 7, 6))
    scans = _scans(d)
    assert d.opaque_count == 0 and len(scans) >= 6  # (the two LSTMs may be drawn as one block repeated)
    assert len({id(s.body) for s in scans}) < len(scans)  # (equal cells are one body)
    lowered = d.to_torch()
    x = torch.randn(2, 7, 6)
    torch.testing.assert_close(lowered(x), model(x), atol=1e-5, rtol=1e-4)
    assert ncd.load_json(d.to_json()) == d.as_block()


def test_a_replayed_step_is_the_recorded_one_as_allclose_says() -> None:
    """The fold's check that its body replays every step (ncd.trace.loops._same_value): floats equal bit for bit are
    taken at once, any other pair as ``allclose`` at the proof's tolerance (``rtol=1e-4``, ``atol=1e-5·max|want|``)
    finds it; a NaN is never the recorded value, equal infinities and signed zeros are."""
    from ncd.trace.loops import _same_value

    torch.manual_seed(0)
    want = torch.randn(4, 5)
    for got in (want.clone(), want + 1e-7, want * (1 + 3e-5), want * 1.5, want + 1e-3, -want):
        scale = float(want.abs().max())
        assert _same_value(got, want) == torch.allclose(got, want, rtol=1e-4, atol=1e-5 * scale)
    assert _same_value(want.clone(), want) and not _same_value(want * 1.5, want)
    holed = want.clone()
    holed[1, 2] = float("nan")
    assert not _same_value(holed.clone(), holed) and not _same_value(want, holed)
    holed[1, 2] = float("inf")
    assert _same_value(holed.clone(), holed) and not _same_value(want, holed)
    assert _same_value(torch.tensor([0.0, -0.0]), torch.tensor([-0.0, 0.0]))
    assert not _same_value(want.double(), want) and not _same_value(want[:2], want)
    ints = torch.arange(6)
    assert _same_value(ints.clone(), ints) and not _same_value(ints + 1, ints)
