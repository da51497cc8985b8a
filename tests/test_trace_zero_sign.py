"""``x + 0`` of floats (DeBERTa's ``score = 0; score += c2p / scale``) is ``x`` but for ``-0.0``, which becomes ``+0.0``:
it is drawn as no box only where what reads it sees a zero's sign at most, up to a softmax (``ncd.trace.scalars``).
Each lowered module is compared with the model bit for bit on inputs holding ``-0.0``, gradients too; a sum the model
returns, or divides by, keeps its box (dropping it there would turn ``1 / +0.0`` into ``1 / -0.0``)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import ncd
from ncd.prims.arithmetic import ArithmeticOp


class Scores(nn.Module):
    """``score = 0; score += x * w / 2`` then a sum with ``y``, a move and a softmax (``seen``: then ``1 / score``,
    which shows a zero's sign; ``out``: the score is also returned)."""

    def __init__(self, seen: bool = False, out: bool = False) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([[-1.0, 2.0, 0.5, -3.0]]))
        self.seen, self.out = seen, out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        score = 0
        score += x * self.w / 2
        s = (score + y).transpose(0, 1).reshape(4, 3)
        if self.seen:
            return torch.softmax(1 / s, dim=-1)
        p = torch.softmax(s, dim=-1)
        return (p, score) if self.out else p


def _zeros_added(d: ncd.Diagram) -> int:
    return sum(isinstance(b.prim, ArithmeticOp) and b.prim.operator == "+" and b.prim.value == 0 for b in d.boxes())


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.tensor([[0.0, -0.0, 1.0, 0.0], [2.0, 0.0, -0.0, 1.0], [0.0, 3.0, 0.0, -1.0]])
    y = torch.tensor([[-0.0, -0.0, 0.0, 5.0], [-0.0, 1.0, -0.0, 0.0], [-0.0, -0.0, -0.0, -0.0]])
    return x, y


@pytest.mark.parametrize(("seen", "out", "drawn"), [(False, False, 0), (True, False, 1), (False, True, 1)])
def test_a_zero_added_is_drawn_only_where_its_sign_is_seen(seen: bool, out: bool, drawn: int) -> None:
    # before, the + 0 was always drawn
    model = Scores(seen, out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, *_inputs())
    assert _zeros_added(d) == drawn
    lowered = d.to_torch()
    x, y = _inputs()
    got, want = lowered(x, y), model(x, y)
    for g, w in zip(got if out else (got,), want if out else (want,)):
        _same(g, w)
    gx, gw = (torch.tensor(v, requires_grad=True) for v in (x.tolist(), y.tolist()))
    mx, mw = (torch.tensor(v, requires_grad=True) for v in (x.tolist(), y.tolist()))
    first = lowered(gx, gw)
    second = model(mx, mw)
    (first[0] if out else first).sum().backward()
    (second[0] if out else second).sum().backward()
    assert gx.grad is not None and mx.grad is not None and gw.grad is not None and mw.grad is not None
    _same(gx.grad, mx.grad)
    _same(gw.grad, mw.grad)


def _same(got: torch.Tensor, want: torch.Tensor) -> None:
    """Bit for bit: NaN where the model has NaN, the same numbers and the same signs of zero elsewhere."""
    assert torch.equal(torch.isnan(got), torch.isnan(want))
    kept = ~torch.isnan(want)
    assert torch.equal(got[kept], want[kept]) and torch.equal(torch.signbit(got[kept]), torch.signbit(want[kept]))
