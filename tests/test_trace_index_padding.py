"""Token ids padded to a window (Longformer's ``F.pad(input_ids, (0, k), value=pad_token_id)``) are a pad box on an
index wire, not an opaque box: the fill is a constant index inside the ids' range, so the padded wire keeps it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ncd
from ncd.errors import ParseError, SizeError
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
