"""Token ids padded to a window (Longformer's ``F.pad(input_ids, (0, k), value=pad_token_id)``) are a pad box on an
index wire, not an opaque box: the fill is a constant index inside the ids' range, so the padded wire keeps it."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ncd
from ncd.errors import ParseError, SizeError
from ncd.ir.diagram import Box
from ncd.prims.padding import PadOp
from tests.test_trace_robust import _fresh_round_trip


class PaddedIds(nn.Module):
    """Ids padded by 3 pad tokens (id 1) before the embedding, a mask padded with zeros, as Longformer pads to its
    attention window."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(11, 4)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ids = F.pad(ids, (0, 3), value=1)
        mask = F.pad(mask, (0, 3), value=0)
        return self.embed(ids), mask


def test_padded_token_ids_are_a_pad_box_on_indices_and_equal_the_model() -> None:
    torch.manual_seed(0)
    model = PaddedIds()
    ids = torch.randint(0, 11, (2, 5))
    mask = torch.ones(2, 5, dtype=torch.long)
    d = _fresh_round_trip(model, ids, mask)
    assert d.opaque_count == 0
    pads = [b.prim for b in d.boxes() if isinstance(b.prim, PadOp)]
    assert any(p.axes.dtype == "index" and p.value == 1 and p.after == (3,) for p in pads)
    for p in pads:  # the padded wire keeps the ids' dtype and range
        assert p.signature()[1].segments[0].dtype == p.axes.dtype and p.signature()[1].segments[0].range == p.axes.range
    assert "value=1)" in d.to_torch().ncd_source  # an integer fill: the ids stay integers
    with torch.no_grad():  # the padded mask exactly: ones, then the three zeros
        assert torch.equal(d.to_torch()(ids, mask)[1], model(ids, mask)[1])
    ncd.cost(d)  # every interpreter has its rule: costs and the backward diagram
    ncd.backward(d)


def test_an_index_pad_refuses_a_fill_outside_the_range_or_a_mode_that_is_not_constant() -> None:
    ids = ncd.Identity.of("b t [11]").cod.segments[0]
    t = ids.__class__(ids.axes[1:], ids.dtype, ids.range)
    assert PadOp(t, (0,), (3,), value=10.0).padded().range == ids.range
    with pytest.raises(SizeError, match="outside the index range"):
        PadOp(t, (0,), (3,), value=11.0)
    with pytest.raises(ParseError, match="whole number"):
        PadOp(t, (0,), (3,), value=0.5)
    with pytest.raises(ParseError, match="whole number"):
        PadOp(t, (0,), (3,), value=-1.0)
    with pytest.raises(ParseError, match="whole number"):
        PadOp(t, (1,), (1,), mode="reflect")


class _Layer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.linear(h)).view(h.shape[0], 2, -1, 4).reshape(h.shape[0], -1, 4) + h


class WindowPadded(nn.Module):
    """Ids padded up to a window the model computes from their length (Longformer's ``(w - t % w) % w``), then two
    alike layers whose inner view names the token axis afresh at the window's size."""

    def __init__(self, window: int = 8) -> None:
        super().__init__()
        self.window = window
        self.embed = nn.Embedding(11, 4)
        self.layers = nn.ModuleList(_Layer() for _ in range(2))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        t = ids.shape[1]
        ids = F.pad(ids, (0, (self.window - t % self.window) % self.window), value=1)
        h = self.embed(ids)
        for layer in self.layers:
            h = layer(h)
        return h


def test_ids_padded_up_to_a_window_keep_the_window_and_the_layers_fold() -> None:
    """The pad's output is the window (its traced size, named as any wire of that size), not ``t + k``: the layers
    after it read one type and fold into one repetition (Longformer: 375 -> 201 boxes, where a layer named the token
    axis afresh at the window's size and the pad's `t + 504` did not meet it). At another length the pad
    is held at the traced sizes: lowering there is refused, naming it."""
    from ncd.ir.repetition import Repeat

    torch.manual_seed(0)
    model = WindowPadded()
    ids = torch.randint(0, 11, (2, 5))
    d = _fresh_round_trip(model, ids)
    assert d.opaque_count == 0
    (pad,) = [b.prim for b in d.boxes() if isinstance(b.prim, PadOp)]
    assert pad.fit and pad.label() == "pad 0|→8 fill 1" and int(pad.output.axes[0].size) == 8, (pad.label(), pad.output)

    def repeats(node: object) -> int:
        return isinstance(node, Repeat) + sum(repeats(p) for p in getattr(node, "parts", ()) + tuple(
            getattr(node, k) for k in ("body",) if hasattr(node, k)))
    assert repeats(d) == 1
    back = ncd.load_json(d.to_json())
    (again,) = [b.prim for b in back.boxes() if isinstance(b.prim, PadOp)]
    assert again == pad
    ncd.cost(d)
    ncd.backward(d)
    with pytest.raises(ncd.TraceError, match="pad 0|→8 fill 1"):
        d.to_torch(t=6)


def test_a_pad_up_to_an_output_refuses_an_axis_longer_than_it_and_lowers_at_its_sizes() -> None:
    ids = ncd.Identity.of("t [11]").cod.segments[0]
    out = ncd.Identity.of("p:8 [11]").cod.segments[0]
    sym = ncd.Identity.of("t [11]").cod.segments[0]
    with pytest.raises(SizeError, match="longer than"):
        PadOp(ncd.Identity.of("t:9 [11]").cod.segments[0], (0,), (0,), value=1.0, output=out, fit=True)
    with pytest.raises(ParseError, match="up to"):
        PadOp(ncd.Identity.of("t:5").cod.segments[0], (0,), (3,), output=ncd.Identity.of("p:8").cod.segments[0],
              fit=True)
    box = Box(PadOp(sym, (0,), (3,), value=1.0, output=out, fit=True))
    for n in (5, 8, 1):  # padded up to 8 at every length
        x = torch.randint(0, 11, (n,))
        torch.testing.assert_close(box.to_torch(t=n)(x), F.pad(x, (0, 8 - n), value=1), rtol=0, atol=0)
    del ids


class FixedPad(nn.Module):
    """Ids padded by a fixed 2 pad tokens, whatever their length (no size read)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(11, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embed(F.pad(ids, (0, 2), value=1)).sum(1)


def test_ids_padded_by_a_fixed_amount_lower_at_every_length_equal_to_the_model() -> None:
    """put11: every pad of ids was a pad up to the traced length (``fit``), so ``F.pad(ids, (0, 2))`` was refused at
    any other length. The recording marks a pad's amounts computed from a size (``shapes._mark``): a fixed one is a
    pad by its amount (``t + 2``), lowered at any length, also read back from JSON; one computed from the length stays
    ``fit`` (above)."""
    torch.manual_seed(0)
    model = FixedPad()
    d = ncd.trace(model, torch.randint(0, 11, (2, 5)))
    (pad,) = [b.prim for b in d.boxes() if isinstance(b.prim, PadOp)]
    assert not pad.fit and pad.after == (2,)
    back = ncd.load_json(d.to_json())
    for t in (5, 1, 9):
        x = torch.randint(0, 11, (3, t))
        lowered = d.to_torch(b=3, t=t)
        torch.testing.assert_close(lowered(x), model(x), rtol=0, atol=0)
        again = back.to_torch(b=3, t=t)
        again.load_state_dict(d.state_dict(again))
        torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)


class PadToLen(nn.Module):
    """Ids padded up to 8 by an amount computed from ``len()`` (a plain int: Python drops what ``__len__`` returns)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(11, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embed(F.pad(ids, (0, 8 - len(ids[0])), value=1)).sum(1)


def test_a_pad_computed_from_len_is_refused_at_other_lengths_in_every_path() -> None:
    """fixes: ``len(x)`` of a tensor the inputs make is noted as a size turned into a plain int (as ``float(t)``): the
    traced diagram, its pickle and its JSON read-back refuse another length, naming the line (the read-back ran at
    t=6 2.1 off the model with only the generic warning); at the traced length all equal the model."""
    import pickle

    torch.manual_seed(0)
    model = PadToLen()
    d = ncd.trace(model, torch.randint(0, 11, (2, 5)))
    assert any("len() = 5" in box for _, box in d.fixed), d.fixed
    back = ncd.load_json(d.to_json())
    for diagram in (d, pickle.loads(pickle.dumps(d)), back):
        with pytest.raises(ncd.TraceError, match="t=6|'t': 6"):  # (d: the model run at t=6 differs, review)
            diagram.to_torch(b=2, t=6)
        x = torch.randint(0, 11, (2, 5))
        lowered = diagram.to_torch(b=2, t=5)
        lowered.load_state_dict(d.state_dict(lowered))
        torch.testing.assert_close(lowered(x), model(x), rtol=0, atol=0)
    with pytest.raises(ncd.TraceError, match=r"test_trace_index_padding.py:\d+ the model turned .*len\(\) = 5"):
        pickle.loads(pickle.dumps(d)).to_torch(b=2, t=6)  # without the model: held, naming the line



def test_a_len_of_a_row_holds_only_the_length_it_measures() -> None:
    """correct (stop 50): ``len(ids[0])`` measures a row no wire draws (``ids[0]`` is read for its length only): its
    size was an unnamed wire, so every size was held and the pickle and JSON read-back refused another batch too,
    where the model computes the same at any batch.  Now the row is followed to the wire it picks from: only ``t`` is
    held; every path lowers at b=3 equal to the model and still refuses t=6."""
    import pickle

    torch.manual_seed(0)
    model = PadToLen()
    d = ncd.trace(model, torch.randint(0, 11, (2, 5)))
    assert [sizes for sizes, _ in d.fixed] == [("t",)], d.fixed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (the read-back warns at any size but the traced ones: no model to check)
        for diagram in (d, pickle.loads(pickle.dumps(d)), ncd.load_json(d.to_json())):
            lowered = diagram.to_torch(b=3, t=5)
            lowered.load_state_dict(d.state_dict(lowered))
            x = torch.randint(0, 11, (3, 5))
            torch.testing.assert_close(lowered(x), model(x), rtol=0, atol=0)
            with pytest.raises(ncd.TraceError, match="t=6|'t': 6"):
                diagram.to_torch(b=2, t=6)

class BatchByLen(nn.Module):
    """``B = len(x)`` (a plain int) used where the diagram follows the batch anyway: a reshape, a test of emptiness."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) == 0:
            return x.sum()
        return self.proj(x.reshape(len(x), -1))


def test_a_batch_read_by_len_lowers_at_other_batches_where_the_model_agrees() -> None:
    """review: ``len(x)`` held the batch in every path (fixes, ff56201), so ``B = len(x); x.reshape(B, -1)`` -- equal
    to the model at every batch before -- was refused at b=5.  The traced diagram holding its model lowers there when
    the model run at those sizes agrees (as it checks ``x * (1.0 / x.shape[0])``); without the model it stays held."""
    import pickle

    torch.manual_seed(0)
    model = BatchByLen()
    d = ncd.trace(model, torch.randn(2, 3, 4))
    x = torch.randn(5, 3, 4)
    torch.testing.assert_close(d.to_torch(b=5)(x), model(x))
    assert "def forward" in d.to_source(b=5)  # the source lowers there too
    with pytest.raises(ncd.TraceError, match=r"len\(\) = 2"):
        pickle.loads(pickle.dumps(d)).to_torch(b=5)


class BatchByLenAtMostFour(nn.Module):
    """``B = len(x)`` read by a test the model raises on past 4 items: at b=5 there is no output to compare with."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = len(x)
        if batch > 4:
            raise ValueError("at most 4 items")
        return self.proj(x).reshape(batch, -1)


def test_a_batch_read_by_len_stays_held_where_the_model_raises() -> None:
    """The size a ``len()`` reads is released only where the model run at the new sizes agreed: where the model itself
    raises there (or gives another output on each run) nothing was compared, and the size stays held, as in a pickle
    (the check answered "compared" and the module lowered at b=5, a warning only, where the model refuses b=5)."""
    torch.manual_seed(0)
    model = BatchByLenAtMostFour()
    d = ncd.trace(model, torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="at most 4"):
        model(torch.randn(5, 3, 4))
    with pytest.warns(RuntimeWarning, match="the model itself raises at these sizes"), \
            pytest.raises(ncd.TraceError, match=r"len\(\) = 2"):
        d.to_torch(b=5)
    torch.testing.assert_close(d.to_torch(b=3)(x := torch.randn(3, 3, 4)), model(x))  # where it runs: compared, lowered
