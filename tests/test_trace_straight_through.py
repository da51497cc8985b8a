"""Stop-gradients: a traced model that cuts values from autograd (``x.detach()``: a straight-through estimator, a
VQ-VAE's quantiser, Gumbel-softmax's hard sample, SimSiam's stopped branch, a weight read detached; ``with
torch.no_grad():``: BYOL's target network, an EMA teacher's decorated ``forward``, statistics) lowers to a module
whose gradients are the model's (torch.autograd on both), through a ``detach`` box (``ncd.prims.detach``).  Before,
the diagram drew the value only, and the lowered module's gradients flowed where the model's stop (a warning said
so): a straight-through estimator's input took no gradient through the rounding, and a VQ-VAE's codebook took the
encoder's."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ncd
from ncd.torch.verify import compare_gradients

M = 8


class RoundSTE(nn.Module):
    """Straight-through rounding to quarters: ``h + (round(4h)/4 - h).detach()``."""

    def __init__(self) -> None:
        super().__init__()
        self.inner, self.outer = nn.Linear(M, M), nn.Linear(M, M)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inner(x)
        return self.outer(h + (torch.round(h * 4) / 4 - h).detach())


class BinaryConnect(nn.Module):
    """Binary weights, straight through: ``w + (sign(w) - w).detach()``."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(M, M))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ (self.w + (torch.sign(self.w) - self.w).detach())


class VQVAE(nn.Module):
    """The quantiser of a VQ-VAE: nearest code, ``z + (e - z).detach()``, the codebook and commitment losses."""

    def __init__(self) -> None:
        super().__init__()
        self.enc, self.codebook, self.dec = nn.Linear(M, 4), nn.Embedding(6, 4), nn.Linear(4, M)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.enc(x)
        w = self.codebook.weight
        e = self.codebook((z.pow(2).sum(-1, keepdim=True) - 2 * z @ w.t() + w.pow(2).sum(-1)).argmin(-1))
        loss = F.mse_loss(e, z.detach()) + 0.25 * F.mse_loss(z, e.detach())
        return self.dec(z + (e - z).detach()), loss


class GumbelHard(nn.Module):
    """Gumbel-softmax's hard sample (the noise left out): ``y_hard - y_soft.detach() + y_soft``."""

    def __init__(self) -> None:
        super().__init__()
        self.logits, self.out = nn.Linear(M, 5), nn.Linear(5, M)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        soft = F.softmax(self.logits(x) / 0.5, -1)
        hard = F.one_hot(soft.argmax(-1), 5).to(soft.dtype)
        return self.out(hard - soft.detach() + soft)


class SimSiam(nn.Module):
    """SimSiam's symmetric loss: each prediction against the other view's projection, stopped."""

    def __init__(self) -> None:
        super().__init__()
        self.project, self.predict = nn.Linear(M, M), nn.Linear(M, M)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z1, z2 = self.project(x), self.project(x.flip(1))
        p1, p2 = self.predict(z1), self.predict(z2)
        return -((F.normalize(p1, dim=-1) * F.normalize(z2.detach(), dim=-1)).sum(-1)
                 + (F.normalize(p2, dim=-1) * F.normalize(z1.detach(), dim=-1)).sum(-1)) / 2


class FrozenWeight(nn.Module):
    """A layer's weight read detached (its bias still learned), beside the layer itself; a parameter both ways."""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = nn.Linear(M, M), nn.Linear(M, M)
        self.gain = nn.Parameter(torch.randn(M))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.linear(self.first(x), self.second.weight.detach(), self.second.bias) + self.second(x)
        return h * self.gain.detach() + self.gain


class BYOL(nn.Module):
    """BYOL's loss: the online branch's prediction against a target network's projection under ``torch.no_grad()``."""

    def __init__(self) -> None:
        super().__init__()
        self.online, self.predict, self.target = nn.Linear(M, M), nn.Linear(M, M), nn.Linear(M, M)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            t = F.normalize(self.target(x.flip(1)), dim=-1)
        p = F.normalize(self.predict(self.online(x)), dim=-1)
        return 2 - 2 * (p * t).sum(-1)


class Teacher(nn.Module):
    """An EMA teacher: its ``forward`` decorated ``@torch.no_grad()``."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(M, M)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.proj(x) / 0.5).softmax(-1)


class Distilled(nn.Module):
    """A student's cross-entropy against the teacher's distribution."""

    def __init__(self) -> None:
        super().__init__()
        self.student, self.teacher = nn.Linear(M, M), Teacher()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -(self.teacher(x) * self.student(x).log_softmax(-1)).sum(-1)


class Centred(nn.Module):
    """Statistics taken under ``torch.no_grad()`` from a value that also flows on (a centring, nested regions)."""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = nn.Linear(M, M), nn.Linear(M, M)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.first(x)
        with torch.no_grad():
            centre = h.mean(-1, keepdim=True)
            with torch.no_grad():
                spread = h.std(-1, keepdim=True) + 1
            centre = centre * 0.5
        return self.second((h - centre) / spread)


class Regrad(nn.Module):
    """``torch.enable_grad()`` inside the model's ``torch.no_grad()``: what is computed there takes gradients (from what
    it reads made with them, not from the region's values before it), what follows it in the region does not."""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.second, self.third = nn.Linear(M, M), nn.Linear(M, M), nn.Linear(M, M)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.first(x)
        with torch.no_grad():
            stat = h.mean(-1, keepdim=True)
            with torch.enable_grad():
                g = self.second(h) * stat
            late = self.third(g)
        return g + late + h * stat


CASES: dict[str, Callable[[], nn.Module]] = {
    "round_ste": RoundSTE, "binary_connect": BinaryConnect, "vq_vae": VQVAE, "gumbel_hard": GumbelHard,
    "simsiam": SimSiam, "frozen_weight": FrozenWeight, "byol": BYOL, "ema_teacher": Distilled, "centred": Centred,
    "regrad": Regrad,
}


def _grads(m: nn.Module, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, list[torch.Tensor]]:
    x = x.clone().requires_grad_()
    out = m(x)
    outs = list(out) if isinstance(out, tuple) else [out]
    weights = [torch.linspace(-1.0, 1.0, o.numel()).reshape(o.shape) for o in outs]
    params = list(m.parameters())
    gx, *gp = torch.autograd.grad(sum((o * w).sum() for o, w in zip(outs, weights)), [x, *params], allow_unused=True)
    return [o.detach() for o in outs], gx, [g if g is not None else torch.zeros_like(p) for g, p in zip(gp, params)]


def _matched(model: nn.Module, lowered: nn.Module) -> list[tuple[int, int, bool]]:
    """``(model's parameter, lowered parameter, transposed)``, matched by value (the lowered module holds copies of the
    model's parameters under its own names, a weight maybe transposed)."""
    mine, theirs = list(model.parameters()), list(lowered.parameters())
    pairs = []
    for i, p in enumerate(mine):
        found = [(j, False) for j, q in enumerate(theirs) if q.shape == p.shape and torch.equal(q, p)]
        found += [(j, True) for j, q in enumerate(theirs) if q.dim() == 2 and q.t().shape == p.shape
                  and torch.equal(q.t(), p)]
        assert found, f"parameter {i} {tuple(p.shape)} is no parameter of the lowered module"
        pairs.append((i, *found[0]))
    assert sorted(j for _, j, _ in pairs) == list(range(len(theirs)))
    return pairs


@pytest.mark.parametrize("name", sorted(CASES))
def test_lowered_module_trains_like_the_model(name: str) -> None:
    torch.manual_seed(0)
    model = CASES[name]().eval()
    x = torch.randn(2, 3, M)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a detach drawn is no warning any more
        d = ncd.trace(model, x)
    assert any(b.prim.op == "detach" for b in d.boxes())
    lowered = d.to_torch()
    pairs = _matched(model, lowered)
    for inputs in (x, torch.randn(2, 3, M)):  # the traced input and a fresh one
        y, gx, gp = _grads(model, inputs)
        y_low, gx_low, gp_low = _grads(lowered, inputs)
        for a, b in zip(y, y_low):
            assert torch.allclose(a, b, atol=1e-6)
        assert torch.allclose(gx, gx_low, atol=1e-5), (gx - gx_low).abs().max()
        for i, j, transposed in pairs:
            got = gp_low[j].t() if transposed else gp_low[j]
            assert torch.allclose(gp[i], got, atol=1e-5), (i, (gp[i] - got).abs().max())


@pytest.mark.parametrize("name", sorted(CASES))
def test_backward_diagram_stops_at_the_detach(name: str) -> None:
    """``ncd.backward``'s diagram sends nothing back through a ``detach`` box, as autograd does.  (frozen_weight,
    centred: a detach's zero cotangent, woven, was lowered as ``torch.zeros(())``, so a parameter read only through a
    detach got a 0-dim gradient, and a reshape of that zero raised RunError.)"""
    torch.manual_seed(0)
    x = torch.randn(2, 3, M)
    d = ncd.trace(CASES[name]().eval(), x)
    for what, mine, want in compare_gradients(d, inputs=(x,)):
        assert torch.allclose(mine, want, atol=1e-5), (name, what, (mine - want).abs().max())


def test_detached_constants_draw_no_box() -> None:
    """A detach no gradient reaches (positions, a mask the model made) is a wire, as before: no ``sg`` drawn."""

    class Masks(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pos = nn.Embedding(8, M)
            self.register_buffer("table", torch.randn(10, M))

        def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
            positions = torch.arange(x.shape[1]).detach()
            mask = torch.ones(x.shape[1], M).tril().detach()
            # M2M100's sinusoidal positions: a constant table at positions computed from the ids (a value of the inputs)
            at = (torch.cumsum(ids.ne(1).int(), dim=1) * ids.ne(1).int()).long() + 1
            fixed = self.table.index_select(0, at.view(-1)).view(*ids.shape, M).detach()
            return x * mask + self.pos(positions) + fixed

    model = Masks()
    x, ids = torch.randn(2, 3, M), torch.tensor([[2, 5, 1], [1, 3, 4]])
    d = ncd.trace(model, x, ids)
    assert not any(b.prim.op == "detach" for b in d.boxes())
    torch.testing.assert_close(d.to_torch()(x, ids), model(x, ids))
