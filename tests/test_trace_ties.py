"""Gradients at tied values: the lowered module's parameter and input gradients equal the model's (autograd) where
the maxima tie (rounded values, masked rows) — amax shares a tie's gradient evenly, ``max(dim)`` gives it to its own
position, ``clamp(x, min=t)`` all to ``x``; a top-1 or a maximum would share it otherwise."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import ncd
from ncd.torch.verify import compare_gradients

Op = Callable[[torch.Tensor], torch.Tensor]

CASES: dict[str, Op] = {
    "amax": lambda q: q.amax(-1),
    "amin": lambda q: q.amin(-1),
    "amax_keep": lambda q: q - q.amax(-1, keepdim=True),
    "amax_mid": lambda q: q.amax(1),
    "amax_two": lambda q: q.amax((1, 2)),
    "amax_apart": lambda q: q.amax((0, 2)),
    "amin_apart": lambda q: q.amin((-1, 0), keepdim=True) * 3,
    "max_dim": lambda q: q.max(-1).values,
    "min_dim": lambda q: q.min(1, keepdim=True).values * 2,
    "clamp_min": lambda q: torch.clamp(q, min=q.flip(-1)),
    "clamp_max": lambda q: torch.clamp(q, max=q.roll(1, -1)),
    "clamp_row": lambda q: torch.clamp(q[:, :, :1], min=q),
    "clamp_both": lambda q: torch.clamp(q, q.roll(1, -1), q.flip(-1)),  # bounds tied, crossed, x at a bound
}


class Rounded(torch.nn.Module):
    def __init__(self, f: Op) -> None:
        super().__init__()
        self.f = f
        self.w = torch.nn.Parameter(torch.ones(12))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = (x * 2).round() * self.w  # many ties
        q = torch.where(x[..., :1] > 1.2, self.w - 3, q)  # masked rows: every entry tied
        return self.f(q)


def _grads(m: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    x = x.clone().requires_grad_()
    y = m(x)
    weights = torch.linspace(0.1, 1.0, y.numel()).reshape(y.shape)
    params = [p for p in m.parameters() if p.requires_grad]
    grads = torch.autograd.grad((y * weights).sum(), [x, *params])
    return y.detach(), list(grads)


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradients_at_ties_match_the_model(name: str) -> None:
    torch.manual_seed(0)
    model = Rounded(CASES[name])
    x = torch.randn(2, 7, 12)
    d = ncd.trace(model, x)
    assert d.opaque_count == 0
    lowered = d.to_torch()
    for inputs in (x, torch.randn(2, 7, 12)):  # the traced input and a fresh one
        y, (gx, *gp) = _grads(model, inputs)
        y_low, (gx_low, *gp_low) = _grads(lowered, inputs)
        assert torch.equal(y, y_low)
        assert torch.allclose(gx, gx_low, atol=1e-6)
        assert sum(int(g.numel()) for g in gp) == sum(int(g.numel()) for g in gp_low) == 12
        assert torch.allclose(gp[0], gp_low[0], atol=1e-5), (gp[0] - gp_low[0]).abs().max()


@pytest.mark.parametrize("name", ["amax", "amin", "amax_keep", "amax_mid", "amax_two", "amax_apart", "amin_apart",
                                  "max_dim", "min_dim"])
def test_backward_diagram_at_ties_equals_autograd(name: str) -> None:
    """``ncd.backward`` of a traced amax shares a tie's cotangent evenly (``maxᵀ``), of ``max(dim)`` gives it to the
    position max returned, as autograd does (the amax's was refused before)."""
    torch.manual_seed(0)
    model, x = Rounded(CASES[name]), torch.randn(2, 7, 12)
    d = ncd.trace(model, x)
    for what, mine, want in compare_gradients(d, inputs=(x,)):
        assert torch.allclose(mine, want, atol=1e-5), (name, what, (mine - want).abs().max())


def test_backward_diagram_of_an_amax_shares_ties_evenly() -> None:
    class Extremes(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.amax(-1) * torch.tensor([1.0, 2.0, 4.0]) + x.amin(-1)

    x = torch.tensor([[1.0, 3.0, 3.0, 2.0], [0.0, 0.0, 0.0, 0.0], [5.0, 1.0, 5.0, 1.0]])  # ties in every row
    back = ncd.backward(ncd.trace(Extremes(), x))
    assert [b.prim.label() for b in back.boxes() if b.prim.op == "reduction_backward"] == ["minᵀ", "maxᵀ"]
    ((_, mine, want),) = compare_gradients(ncd.trace(Extremes(), x), inputs=(x,))
    xa = x.clone().requires_grad_()
    g = torch.autograd.grad(Extremes()(xa), xa, torch.ones(3))[0]
    assert torch.equal(g, torch.tensor([[1.0, 0.5, 0.5, 0.0], [0.75, 0.75, 0.75, 0.75], [2.0, 0.5, 2.0, 0.5]]))
    assert torch.equal(mine, want)


class Clamped(torch.nn.Module):
    def __init__(self, upper: bool) -> None:
        super().__init__()
        self.upper = upper

    def forward(self, x: torch.Tensor, bound: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x, max=bound) if self.upper else torch.clamp(x, min=bound)


@pytest.mark.parametrize("upper", [False, True])
def test_backward_diagram_of_a_clamp_gives_ties_to_the_clamped_tensor(upper: bool) -> None:
    x, bound = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[1.0, 3.0, 2.0]])  # a tie at the first entry
    back = ncd.backward(ncd.trace(Clamped(upper), x, bound)).to_torch()
    cotangent = torch.tensor([[1.0, 0.5, 0.25]])
    xa, ba = x.clone().requires_grad_(), bound.clone().requires_grad_()
    want = torch.autograd.grad((Clamped(upper)(xa, ba) * cotangent).sum(), [xa, ba])
    for w, g in zip(want, back(x, bound, cotangent)):
        assert torch.equal(w, g)


class ClampedBoth(torch.nn.Module):
    def forward(self, x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x, lo, hi)


def test_clamp_by_two_tensors_is_one_clamp_with_autograds_gradient() -> None:
    """Where ``x < lo = hi`` torch's clamp gives no gradient at all; a maximum then a minimum gave it to ``lo``."""
    x = torch.tensor([[0.0, 2.0, 5.0, 1.0, 3.0, 2.0, 0.0, 9.0, 0.0, 2.0, 5.0]])
    lo = torch.tensor([[1.0, 1.0, 1.0, 1.0, 1.0, 3.0, 3.0, 3.0, 2.0, 2.0, 2.0]])
    hi = torch.tensor([[3.0, 3.0, 3.0, 3.0, 3.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0]])
    d = ncd.trace(ClampedBoth(), x, lo, hi)
    assert [b.prim.op for b in d.boxes()] == ["clamp"]
    cotangent = torch.linspace(0.1, 1.0, 11)[None]
    ins = [t.clone().requires_grad_() for t in (x, lo, hi)]
    want = torch.autograd.grad((ClampedBoth()(*ins) * cotangent).sum(), ins)
    assert float(sum(w[0, 8] for w in want)) == 0.0  # x < lo = hi: nobody's
    low = [t.clone().requires_grad_() for t in (x, lo, hi)]
    for w, g in zip(want, torch.autograd.grad((d.to_torch()(*low) * cotangent).sum(), low)):
        assert torch.equal(w, g)
    for w, g in zip(want, ncd.backward(d).to_torch()(x, lo, hi, cotangent)):
        assert torch.equal(w, g)
