"""A crossing of wires beside an einsum is folded into it (``ncd.trace.crossings``): the heads' ``transpose(1, 2)``
before the scores and after the values is no box, the einsum names its axes in that order.  A crossing something
else also reads (an output, another box) stays.  Every diagram is compared with the model it was traced from: the
lowered module on the traced and a fresh input, its gradients (torch.autograd on the model), the backward diagram's
gradients, the JSON round trip, the FLOPs PyTorch counts, and a second trace drawn byte for byte alike."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import ncd
from ncd.prims.linear import EinsumOp
from ncd.prims.structure import TransposeOp
from ncd.render import to_svg
from ncd.torch.measure import measure
from ncd.torch.verify import compare_gradients


class Attention(nn.Module):
    """transformers' eager attention: heads split and crossed before the products, crossed and merged after."""

    def __init__(self, m: int = 12, h: int = 3, keep: str = "") -> None:
        super().__init__()
        self.h, self.k, self.keep = h, m // h, keep
        self.q, self.kk, self.v, self.o = (nn.Linear(m, m) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        b, t, _ = x.shape
        q = self.q(x).view(b, t, self.h, self.k).transpose(1, 2)
        k = self.kk(x).view(b, t, self.h, self.k).transpose(1, 2)
        v = self.v(x).view(b, t, self.h, self.k).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(2, 3)) * self.k ** -0.5
        out = torch.matmul(scores.softmax(-1), v)
        crossed = out.transpose(1, 2)
        y = self.o(crossed.reshape(b, t, self.h * self.k))
        if self.keep == "key":  # the crossed keys are an output too (a cache): that crossing stays
            return y, k
        if self.keep == "result":  # the values' product is read by the crossing and another box: that crossing stays
            return y + out.sum((1, 3))[..., None]
        return y


class Gram(nn.Module):
    """One einsum reading a value and its crossing: ``x xᵀ`` per batch."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(5, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lin(x)
        return torch.einsum("bij,bkj->bik", y, y) + torch.matmul(y.transpose(1, 2), y).sum(-1)[:, None, :]


def _traced(model: nn.Module, x: torch.Tensor) -> ncd.TracedDiagram:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, x)
    assert d.opaque_count == 0
    return d


def _crossings(d: ncd.Diagram) -> int:
    return sum(isinstance(b.prim, TransposeOp) for b in d.boxes())


def _checked(model: nn.Module, shape: tuple[int, ...]) -> ncd.TracedDiagram:
    """``model`` traced at ``shape``, checked against the model every way the module docstring says."""
    torch.manual_seed(0)
    model.eval()
    x = torch.randn(*shape)
    d = _traced(model, x)
    lowered = d.to_torch().eval()
    fresh = torch.randn(*shape)
    for inp in (x, fresh):
        with torch.no_grad():
            got, want = lowered(inp), model(inp)
        for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)
    # gradients of the lowered module and of the model (torch.autograd), input and parameters
    xg, xw = fresh.clone().requires_grad_(True), fresh.clone().requires_grad_(True)
    first = (lambda out: out[0] if isinstance(out, tuple) else out)
    first(lowered(xg)).square().sum().backward()
    first(model(xw)).square().sum().backward()
    torch.testing.assert_close(xg.grad, xw.grad, rtol=1e-5, atol=1e-6)
    assert sorted(p.grad.abs().sum().item() for p in lowered.parameters() if p.grad is not None) == \
        pytest.approx(sorted(p.grad.abs().sum().item() for p in model.parameters() if p.grad is not None), rel=1e-5, abs=1e-5)
    model.zero_grad()
    # the backward diagram against torch.autograd
    compared = compare_gradients(d, inputs=(x,))
    assert compared
    for name, got_g, want_g in compared:
        torch.testing.assert_close(got_g, want_g, rtol=1e-4, atol=1e-5, msg=name)
    # JSON round trip: the same diagram, lowered to the same numbers
    back = ncd.load_json(d.to_json())
    with torch.no_grad():
        again = back.to_torch().eval()
        again.load_state_dict(lowered.state_dict())
        got, want = again(x), lowered(x)
    for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
        torch.testing.assert_close(g, w, rtol=0, atol=0)
    # the FLOPs ncd.cost counts are those PyTorch counts running the lowered module
    block = d.as_block()
    assert ncd.cost(d).forward_matmul == measure(block, inputs=(x,)).forward_flops
    # deterministic: a second trace draws the same SVG
    assert to_svg(_traced(model, x)) == to_svg(d)
    return d


def test_heads_crossed_around_the_products_are_no_boxes() -> None:
    d = _checked(Attention(), (2, 5, 12))
    assert _crossings(d) == 0
    einsums = [b.prim for b in d.boxes() if isinstance(b.prim, EinsumOp)]
    assert len(einsums) == 2
    # the scores read q and k as the views made them (b t h k), the values' product writes b t h k for the merge
    assert all(seg.names[1] != "h" for seg in einsums[0].inputs), einsums[0].spec()
    assert einsums[1].output.names[1] != "h", einsums[1].spec()
    assert "scaled_dot_product_attention" in d.to_source()  # still fused into one SDPA call


def test_a_crossing_read_by_something_else_stays() -> None:
    # the keys crossed to heads are an output: that crossing stays; ``k.transpose(2, 3)`` after it reaches the scores
    # through a view renaming the key positions, and is moved past it and folded (``ncd.trace.crossings_through``), as
    # q's, v's and the result's are
    d = _checked(Attention(keep="key"), (2, 5, 12))
    assert _crossings(d) == 1
    assert str(d.cod[1]) == "b h:3 t̅ k:4"
    # the values' product is also summed: its crossing stays, q's, k's and v's are folded
    d = _checked(Attention(keep="result"), (2, 5, 12))
    assert _crossings(d) == 1


def test_an_einsum_reading_a_value_and_its_crossing() -> None:
    d = _checked(Gram(), (2, 4, 5))
    assert _crossings(d) == 0


def test_fewer_boxes_than_without_the_fold(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fold is the only difference: without it each crossing is a box of its own, and the same numbers."""
    import importlib

    crossings = importlib.import_module("ncd.trace.crossings")
    model = Attention().eval()
    x = torch.randn(2, 5, 12)
    folded = _traced(model, x)
    monkeypatch.setattr(crossings, "fold_crossings", lambda steps, outputs, segs: steps)
    plain = _traced(model, x)
    assert _crossings(plain) == 4 and _crossings(folded) == 0
    assert len(list(plain.boxes())) - len(list(folded.boxes())) == 4
    with torch.no_grad():
        torch.testing.assert_close(folded.to_torch().eval()(x), plain.to_torch().eval()(x), rtol=0, atol=1e-6)
