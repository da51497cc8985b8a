"""Position tables a model computes in its forward from its input's length: a sinusoidal table (interleaved) is the
``∿`` box and follows the sizes (``to_torch(t=12)``, ``to_torch(b=3)`` equal the model); another table stays a
constant of the traced length, other batches still lower, and another length is refused saying why."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import ncd
from ncd.prims.constant import SinusoidalOp
from ncd.prims.opaque import ConstantOp


class Positions(torch.nn.Module):
    """``x + PE[:t]`` then a linear map; ``layout``: ``"interleaved"`` (sin in even columns, cos in odd ones),
    ``"halves"`` (``cat([sin, cos])``) or ``"shifted"`` (interleaved, positions from 1)."""

    def __init__(self, layout: str, m: int = 16) -> None:
        super().__init__()
        self.layout, self.m = layout, m
        self.lin = torch.nn.Linear(m, m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        pos = torch.arange(t, dtype=torch.float32)[:, None] + (1 if self.layout == "shifted" else 0)
        div = torch.exp(torch.arange(0, self.m, 2, dtype=torch.float32) * (-math.log(10000.0) / self.m))
        if self.layout == "halves":
            pe = torch.cat([torch.sin(pos * div), torch.cos(pos * div)], dim=-1)
        else:
            pe = torch.zeros(t, self.m)
            pe[:, 0::2] = torch.sin(pos * div)
            pe[:, 1::2] = torch.cos(pos * div)
        y: torch.Tensor = self.lin(x + pe)
        return y


def _traced(layout: str) -> tuple[torch.nn.Module, ncd.TracedDiagram]:
    torch.manual_seed(0)
    model = Positions(layout).eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d = ncd.trace(model, torch.randn(2, 8, 16))
    assert not [w for w in caught if "ncd.trace" in str(w.message)]
    return model, d


def _equal(d: ncd.TracedDiagram, model: torch.nn.Module, batch: int, length: int, **sizes: int) -> None:
    x = torch.randn(batch, length, 16)
    with torch.no_grad():
        torch.testing.assert_close(d.to_torch(**sizes)(x), model(x), atol=1e-5, rtol=1e-5)


def test_a_sinusoidal_table_computed_in_forward_follows_the_length_and_batch() -> None:
    model, d = _traced("interleaved")
    assert [b.prim.op for b in d.boxes() if isinstance(b.prim, SinusoidalOp)] == ["sinusoidal"]
    assert not [b for b in d.boxes() if isinstance(b.prim, ConstantOp)] and d.opaque_count == 0
    _equal(d, model, 2, 8)
    _equal(d, model, 3, 8, b=3)
    _equal(d, model, 2, 12, t=12)
    assert sum(p.numel() for p in d.to_torch(t=12).parameters()) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("layout", ["halves", "shifted"])
def test_another_table_stays_the_traced_length_and_says_why(layout: str) -> None:
    """Not the interleaved sinusoid of positions 0..t-1: a constant; another batch lowers, another length is refused
    naming the size, the box and the sizes that do lower."""
    model, d = _traced(layout)
    assert not [b for b in d.boxes() if isinstance(b.prim, SinusoidalOp)]
    _equal(d, model, 2, 8)
    _equal(d, model, 3, 8, b=3)  # the table has no batch axis: other batches lower
    with pytest.raises(ncd.TraceError, match=r"cannot lower Positions at \{'t': 12\} \(traced at \{'t': 8\}\): these"
                       r" boxes hold tensors or calls recorded at the traced sizes.*constant .*'t̅ m:16'.*other sizes"
                       r" lower: b$"):
        d.to_torch(t=12)


def _nudged(row: int, col: int, by: float, rows: int = 6, width: int = 8) -> torch.Tensor:
    from ncd.trace.positions import sinusoidal_table

    table = sinusoidal_table(rows, width).to(torch.float32)
    table[row, col] += by
    return table


@pytest.mark.parametrize("table", [
    _nudged(0, 0, 0.0), _nudged(0, 0, 9e-6), _nudged(0, 0, 2e-5), _nudged(0, 1, 1.9e-5), _nudged(0, 1, 2.1e-5),
    _nudged(0, 1, -1.9e-5), _nudged(0, 6, float("nan")), _nudged(0, 7, float("inf")), _nudged(3, 2, 1e-3),
    _nudged(0, 0, 1.0), torch.ones(6, 8), torch.zeros(1, 6, 8),
    _nudged(0, 0, 0.0).to(torch.float16), _nudged(0, 3, 1e-4).to(torch.bfloat16),
], ids=lambda t: f"{t.dtype}")
def test_a_table_is_sinusoidal_exactly_when_allclose_to_the_encoding(table: torch.Tensor) -> None:
    """``is_sinusoidal`` refuses most tables from their first row before making the encoding: its answer is still
    ``allclose`` (atol = rtol = 1e-5, in float64) against the whole encoding, near its tolerance on row 0 too."""
    from ncd.trace.positions import is_sinusoidal, sinusoidal_table

    rows, width = table.shape[-2:]
    want = torch.allclose(table.reshape(rows, width).double(), sinusoidal_table(rows, width), atol=1e-5, rtol=1e-5)
    assert is_sinusoidal(table) == want
