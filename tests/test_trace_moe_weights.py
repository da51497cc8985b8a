"""Experts are not proven by the traced weights' special values, nor by a tolerance larger than their outputs.

A model as built has zero expert biases and small weights.  A kernel equal to the weighted sum of its experts only
there — an expert's bias reaching tokens not routed to it, a bias the sum leaves out — agreed with the dense reading
(:mod:`ncd.trace.moe_proof`) or the experts' sum (:mod:`ncd.trace.moe`) on the live weights, and was drawn as that
sum: right for the traced weights only.  Each model here is traced as built, then the same random weights are set in
the model and in its lowered module (each lowered parameter found by the model parameter's values it holds; one the
lowered module dropped is set in the model only), and the two are compared.  Experts of outputs far below 1 are
compared at a tolerance of their own scale: a fixed ``1e-5`` passed a kernel that renormalises its routing weights.
Experts routing their own tokens (JetMoE's form, :mod:`ncd.trace.moe_routed`) are checked the same way.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

import ncd


def _trace(model: nn.Module, *args: torch.Tensor) -> ncd.Diagram:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ncd.trace(model, *args)


def _trained(model: nn.Module, lowered: nn.Module) -> None:
    """The same random values set in each model parameter and in the lowered parameter holding its values (none where
    the lowered module dropped it)."""
    gen = torch.Generator().manual_seed(7)
    owned = list(lowered.parameters())
    with torch.no_grad():
        for name, p in model.named_parameters():
            same = [q for q in owned if q.numel() == p.numel() and torch.equal(q.reshape(-1), p.reshape(-1))]
            assert len(same) <= 1, name
            p.copy_(0.5 * torch.randn(p.shape, generator=gen))
            for q in same:
                q.copy_(p.reshape(q.shape))


def _router(x: torch.Tensor, router: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    weights, chosen = router(x).softmax(-1).topk(2, dim=-1)
    return chosen, weights


class LeakyExperts(nn.ModuleList):
    """Every expert applied to every token scaled by its routing weight (0 where the token did not choose it):
    ``Σ_e expert_e(G[t, e] · x)``.  With biases of 0 (here ~1e-9, so that each lowered copy is found by its values) a
    ReLU MLP is positively homogeneous — ``expert(g·x) = g·expert(x)``, ``expert(0) = 0`` — so this is the weighted
    sum as built; once the biases are trained, every expert's biases reach every token."""

    def __init__(self) -> None:
        super().__init__([nn.Sequential(nn.Linear(8, 12), nn.ReLU(), nn.Linear(12, 8)) for _ in range(4)])
        with torch.no_grad():
            for expert in self:
                for layer in (expert[0], expert[2]):
                    layer.bias.copy_(1e-9 * torch.randn(layer.bias.shape))

    def forward(self, x: torch.Tensor, chosen: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(x)
        for e, expert in enumerate(self):
            out = out + expert(x * (weights * (chosen == e)).sum(-1, keepdim=True))
        return out


class LeakyMoE(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.router, self.experts = nn.Linear(8, 4), LeakyExperts()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.experts(x, *_router(x, self.router))


def test_experts_equal_to_their_dense_reading_at_init_only_are_drawn_as_recorded() -> None:
    # before, the dense reading was checked with the live (zero) biases and drawn: the lowered module was the
    # weighted sum of the experts, off the model once the biases were trained
    torch.manual_seed(0)
    model, x = LeakyMoE().eval(), torch.randn(6, 8)
    lowered = _trace(model, x).to_torch()
    _trained(model, lowered)
    with torch.no_grad():
        torch.testing.assert_close(lowered(x), model(x), rtol=1e-4, atol=1e-5)


class Shift(nn.Module):
    """A per-expert bias held by a submodule (zeros as built)."""

    def __init__(self, experts: int, m: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(experts, m))


class ShiftedExperts(nn.Module):
    """Gated experts on stacked weights run densely (every expert on every token), each expert's output shifted by a
    bias of its own: the experts' weighted sum of :mod:`ncd.trace.moe` while the bias is 0, not once trained."""

    def __init__(self, experts: int = 4, m: int = 8, f: int = 12) -> None:
        super().__init__()
        self.gate_up_proj = nn.Parameter(0.2 * torch.randn(experts, 2 * f, m))
        self.down_proj = nn.Parameter(0.2 * torch.randn(experts, m, f))
        self.shift = Shift(experts, m)

    def forward(self, x: torch.Tensor, chosen: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        gate, up = torch.einsum("tm,egm->teg", x, self.gate_up_proj).chunk(2, dim=-1)
        y = torch.einsum("tef,emf->tem", nn.functional.silu(gate) * up, self.down_proj) + self.shift.bias
        g = (weights[..., None] * nn.functional.one_hot(chosen, self.down_proj.shape[0])).sum(1)
        return torch.einsum("te,tem->tm", g, y)


class ShiftedMoE(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.router, self.experts = nn.Linear(8, 4), ShiftedExperts()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.experts(x, *_router(x, self.router))


def test_an_experts_kernel_equal_to_the_weighted_sum_at_init_only_is_drawn_as_recorded() -> None:
    # before, the recorded kernel was re-run with the live parameters only (the shift's zeros) and drawn as the
    # weighted sum, without the shift
    torch.manual_seed(0)
    model, x = ShiftedMoE().eval(), torch.randn(6, 8)
    lowered = _trace(model, x).to_torch()
    _trained(model, lowered)
    with torch.no_grad():
        torch.testing.assert_close(lowered(x), model(x), rtol=1e-4, atol=1e-5)


class RenormalisingExperts(nn.ModuleList):
    """Experts of small weights and no biases (outputs ~1e-6) that renormalise their routing weights to sum to 1 (which
    the router did not): not the weighted sum, by ~1e-6 — with any weights of that scale."""

    def __init__(self) -> None:
        super().__init__([nn.Sequential(nn.Linear(8, 12, bias=False), nn.ReLU(), nn.Linear(12, 8, bias=False))
                          for _ in range(4)])
        with torch.no_grad():
            for p in self.parameters():
                p.mul_(1e-3)

    def forward(self, x: torch.Tensor, chosen: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        weights = weights / weights.sum(-1, keepdim=True)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self):
            out = out + expert(x) * (weights * (chosen == e)).sum(-1, keepdim=True)
        return out


class RenormalisingMoE(LeakyMoE):
    def __init__(self) -> None:
        super().__init__()
        self.experts = RenormalisingExperts()  # type: ignore[assignment]


def _relative(got: torch.Tensor, want: torch.Tensor) -> None:
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()))


def test_experts_of_small_outputs_are_compared_at_their_scale() -> None:
    # before, the dense reading was compared at atol 1e-5 · max(1, max|want|): outputs of ~1e-6 passed anything
    torch.manual_seed(0)
    model, x, fresh = RenormalisingMoE().eval(), torch.randn(6, 8), torch.randn(6, 8)
    lowered = _trace(model, x).to_torch()
    with torch.no_grad():
        _relative(lowered(fresh), model(fresh))


class SmallRenormalisingExperts(nn.Module):
    """Gated experts on stacked weights of small values, run densely, that renormalise their routing weights: not the
    experts' weighted sum of :mod:`ncd.trace.moe` — with any weights of that scale — by less than 1e-5 on every case
    the kernel is re-run on (outputs below 1e-5 even where the tokens are scaled so the first projections have a root
    mean square of 3)."""

    def __init__(self, experts: int = 4, m: int = 8, f: int = 12) -> None:
        super().__init__()
        self.gate_up_proj = nn.Parameter(1e-6 * torch.randn(experts, 2 * f, m))
        self.down_proj = nn.Parameter(1e-7 * torch.randn(experts, m, f))

    def forward(self, x: torch.Tensor, chosen: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        gate, up = torch.einsum("tm,egm->teg", x, self.gate_up_proj).chunk(2, dim=-1)
        y = torch.einsum("tef,emf->tem", nn.functional.silu(gate) * up, self.down_proj)
        g = (weights[..., None] * nn.functional.one_hot(chosen, self.down_proj.shape[0])).sum(1)
        return torch.einsum("te,tem->tm", g / weights.sum(-1, keepdim=True), y)


class SmallRenormalisingMoE(ShiftedMoE):
    def __init__(self) -> None:
        super().__init__()
        self.experts = SmallRenormalisingExperts()  # type: ignore[assignment]


def test_an_experts_kernel_of_small_outputs_is_compared_at_their_scale() -> None:
    # before, the re-run kernel was compared with the experts' sum at atol 1e-5: a kernel renormalising the routing
    # weights, of outputs below 1e-5, passed, and the sum was drawn
    torch.manual_seed(0)
    model, x, fresh = SmallRenormalisingMoE().eval(), torch.randn(6, 8), torch.randn(6, 8)
    lowered = _trace(model, x).to_torch()
    with torch.no_grad():
        _relative(lowered(fresh), model(fresh))


class _Router(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer, self.top_k = nn.Linear(8, 4, bias=False), 2


class _Stacked(nn.Module):
    def __init__(self, *shape: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(0.3 * torch.randn(*shape))


class SelfRoutedExperts(nn.Module):
    """Experts routing their own tokens in JetMoE's form (``router.layer``, ``router.top_k``, ``input_linear``,
    ``output_linear``, ``bias``, ``activation``), run densely, the bias (zeros as built) added to the tokens, not to the
    output: the routed dense reading at init only."""

    def __init__(self) -> None:
        super().__init__()
        self.router, self.input_linear, self.output_linear = _Router(), _Stacked(4, 24, 8), _Stacked(4, 8, 12)
        self.bias = nn.Parameter(torch.zeros(8))
        self.activation = nn.functional.silu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, chosen = self.router.layer(x).topk(self.router.top_k, dim=1)
        g = (top.softmax(1)[..., None] * nn.functional.one_hot(chosen, 4)).sum(1)
        gate, up = torch.einsum("tm,efm->tef", x + self.bias, self.input_linear.weight).chunk(2, dim=-1)
        return torch.einsum("te,tem->tm", g, torch.einsum("tef,emf->tem", self.activation(gate) * up,
                                                           self.output_linear.weight))


def test_experts_routing_their_own_tokens_equal_to_their_reading_at_init_only_are_drawn_as_recorded() -> None:
    # before, the routed reading (the bias added to the output) was checked with the live (zero) bias and drawn
    torch.manual_seed(0)
    model, x = nn.Sequential(nn.Linear(8, 8), SelfRoutedExperts()).eval(), torch.randn(6, 8)
    lowered = _trace(model, x).to_torch()
    _trained(model, lowered)
    with torch.no_grad():
        torch.testing.assert_close(lowered(x), model(x), rtol=1e-4, atol=1e-5)



def test_the_comparison_answers_as_allclose_in_float64_around_its_bound() -> None:
    # moe_proof.within compares float32 values in float32 first (accepting only well inside the bound); on each float32
    # value next to the bound (a few steps either side, at an entry of 0 — where the bound is the absolute tolerance
    # alone, which float32 cannot hold exactly — and at others) it must answer as allclose in float64
    from ncd.trace.moe_proof import within

    gen = torch.Generator().manual_seed(0)
    checked = {True: 0, False: 0}
    for _ in range(40):
        want = torch.randn(16, generator=gen) * 10.0 ** float(torch.randint(-8, 4, (), generator=gen))
        want[3] = 0.0
        atol = 1e-5 * float(want.abs().max())
        for j in (3, 5):
            edge = torch.tensor(float(want[j]) + atol + 1e-4 * abs(float(want[j])), dtype=torch.float32)
            for step in range(-3, 4):
                near = edge
                for _ in range(abs(step)):
                    near = torch.nextafter(near, torch.tensor(float("inf") if step > 0 else float("-inf")))
                got = want.clone()
                got[j] = near
                expected = bool(torch.allclose(got.double(), want.double(), atol=atol, rtol=1e-4))
                assert within(got, want) == expected, (j, step)
                checked[expected] += 1
    assert min(checked.values()) > 100
