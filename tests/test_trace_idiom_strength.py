"""Near-miss variants of the idioms the tracer proves on values: each one differs from the idiom's function only where
the check did not look (large magnitudes, small scales, half precision, a row with no key).  Each is compared with
the original model on inputs where the variant differs; the check must tell them apart (the variant drawn as its
operations, or as something that computes what it computes) — never the idiom's box, silently wrong.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
from torch import nn

import ncd


def _trace(model: nn.Module, *inputs: torch.Tensor) -> ncd.trace.TracedDiagram:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ncd.trace(model, *inputs)


def _agrees(model: nn.Module, d: ncd.trace.TracedDiagram, *inputs: torch.Tensor, rtol: float = 1e-4) -> None:
    lowered = d.to_torch()
    with torch.no_grad():
        got, want = lowered(*inputs), model(*inputs)
    torch.testing.assert_close(got, want, rtol=rtol, atol=rtol * float(want.abs().max()))


def _named(name: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> nn.Module:
    """A module class called ``name`` (an activation the module idiom knows) computing ``fn``."""
    cls = type(name, (nn.Module,), {"forward": lambda self, x: fn(x)})
    return cls()  # type: ignore[no-any-return]


# -- activation modules: clamps and clips show at large magnitudes only --------------------------------------------
CLIPPED = {
    "ReLU computing ReLU6": ("ReLU", lambda x: x.clamp(0, 6)),
    "GELU clipped at 10": ("GELUActivation", lambda x: nn.functional.gelu(x).clamp(-10, 10)),
    "SiLU of an input clamped at 20": ("SiLU", lambda x: nn.functional.silu(x.clamp(max=20))),
}


@pytest.mark.parametrize("case", sorted(CLIPPED))
def test_an_activation_module_clipped_at_large_magnitudes_is_not_the_function_s_box(case: str) -> None:
    # before, the module was checked on the traced values and on 3 * randn of their shape (8 entries here, none past
    # 6): the clipped module was drawn as the plain function's box, and the lowered module was off by 180x at inputs
    # of size 100-1000
    name, fn = CLIPPED[case]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), _named(name, fn)).eval()
    d = _trace(model, torch.randn(2, 4))
    for scale in (1.0, 100.0, 1000.0):
        _agrees(model, d, torch.randn(2, 4) * scale)


def test_activation_modules_that_are_the_function_at_every_magnitude_stay_one_box() -> None:
    torch.manual_seed(0)
    for name, fn, op in (("NewGELUActivation", lambda x: 0.5 * x * (1.0 + torch.tanh(0.7978845608028654 * (
            x + 0.044715 * torch.pow(x, 3.0)))), "gelu_tanh"), ("SiLU", lambda x: x * torch.sigmoid(x), "silu")):
        model = nn.Sequential(nn.Linear(4, 4), _named(name, fn)).eval()
        d = _trace(model, torch.randn(2, 4))
        assert [b.prim.function for b in d.boxes() if b.prim.op == "elementwise"] == [op]
        _agrees(model, d, torch.randn(2, 4) * 1000)


# -- RMS-norm modules: eps shows at the scale of sqrt(eps), whatever the dtype ------------------------------------
class PaperRMSNorm(nn.Module):
    """The RMSNorm paper's form, ``x / (rms + eps)`` (eps outside the root), computed in float32 as HF's norms are."""

    def __init__(self, n: int, dtype: torch.dtype, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(n, dtype=dtype)), eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        return self.weight * (h / (h.pow(2).mean(-1, keepdim=True).sqrt() + self.eps)).to(x.dtype)


class OwnEpsRMSNorm(nn.Module):
    """An ``eps`` attribute of 0, and an ``eps`` of its own added inside the root."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(n)), 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


class Normed(nn.Module):
    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.norm(x) * 2
        return out


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_half_precision_rms_norm_adding_eps_outside_the_root_is_not_an_rms_box(dtype: torch.dtype) -> None:
    # before, the check at the scale of sqrt(eps) ran in float32 and float64 only; in half precision both forms round
    # to the same numbers at unit scale, so the norm was one rmsnorm box (eps inside the root), 33% (bfloat16) and
    # 43% (float16) off on inputs of root mean square 1e-3
    torch.manual_seed(0)
    model = Normed(PaperRMSNorm(8, dtype))
    d = _trace(model, torch.randn(2, 5, 8).to(dtype))
    for scale in (1.0, 1e-2, 1e-3):
        _agrees(model, d, (torch.randn(2, 5, 8) * scale).to(dtype), rtol=1e-2)


def test_an_rms_norm_of_eps_0_adding_an_eps_of_its_own_is_not_an_rms_box_of_eps_0() -> None:
    # before, an eps attribute of 0 skipped the small-scale check: drawn as rmsnorm(eps=0), 5x off at rms 1e-4
    torch.manual_seed(0)
    model = Normed(OwnEpsRMSNorm(8))
    d = _trace(model, torch.randn(2, 8))
    for scale in (1.0, 1e-3, 1e-4):
        _agrees(model, d, torch.randn(2, 8) * scale)


# -- attention: a constant mask that lets a query see no key --------------------------------------------------------
class StrictlyCausal(nn.Module):
    """Each query attends to the keys before it only (a constant mask: the first query sees no key, SDPA gives 0)."""

    def __init__(self, boolean: bool) -> None:
        super().__init__()
        self.proj, self.boolean = nn.Linear(8, 8), boolean

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        q = self.proj(x).view(x.shape[0], t, 2, 4).transpose(1, 2)
        before = torch.ones(t, t, dtype=torch.bool).tril(-1)
        mask = before if self.boolean else torch.zeros(t, t).masked_fill(~before, float("-inf"))
        return nn.functional.scaled_dot_product_attention(q, q, q, attn_mask=mask)


@pytest.mark.parametrize("boolean", [True, False])
def test_a_constant_mask_leaving_a_query_no_key_gives_0_there_as_sdpa_does(boolean: bool) -> None:
    # before, the constant mask was added to the scores and softmaxed: the first query's row was NaN in the lowered
    # module where scaled_dot_product_attention gives 0
    torch.manual_seed(0)
    model = StrictlyCausal(boolean).eval()
    d = _trace(model, torch.randn(2, 5, 8))
    for _ in range(2):
        _agrees(model, d, torch.randn(2, 5, 8))


# -- experts kernels: the activation is told where the activations part ---------------------------------------------
class StackedExperts(nn.Module):
    """Gated experts over stacked weights of transformers' initialisation (std 0.02), run as a batched GEMM."""

    def __init__(self, act: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.gate = nn.Parameter(torch.randn(4, 12, 8) * 0.02)
        self.up = nn.Parameter(torch.randn(4, 12, 8) * 0.02)
        self.down = nn.Parameter(torch.randn(4, 8, 12) * 0.02)
        self.act = act

    def forward(self, x: torch.Tensor, chosen: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        h = self.act(torch.einsum("tm,efm->tef", x, self.gate)) * torch.einsum("tm,efm->tef", x, self.up)
        every = torch.einsum("tef,emf->tem", h, self.down)
        picked = every.gather(1, chosen[:, :, None].expand(-1, -1, every.shape[-1]))
        return (picked * weights[:, :, None]).sum(1)


class Routed(nn.Module):
    def __init__(self, act: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.router, self.experts = nn.Linear(8, 4, bias=False), StackedExperts(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights, chosen = self.router(x).softmax(-1).topk(2, dim=-1)
        out: torch.Tensor = self.experts(x, chosen, weights)
        return out


@pytest.mark.parametrize("approximate", ["tanh", "none"])
def test_experts_of_small_weights_are_drawn_with_their_own_gelu(approximate: str) -> None:
    # before, the random tokens (2 randn) through weights of std 0.02 gave projections of about 0.2, where gelu and its
    # tanh approximation agree to 1e-7: the first activation tried (gelu) was read for a gelu_tanh expert, 2e-4 off
    # (relative to the largest output) on tokens of size 10-30
    torch.manual_seed(0)
    model = Routed(lambda x: nn.functional.gelu(x, approximate=approximate)).eval()
    d = _trace(model, torch.randn(6, 8))
    assert [b.prim.function for b in d.boxes() if b.prim.op == "elementwise"] == \
        ["gelu_tanh" if approximate == "tanh" else "gelu"]
    lowered = d.to_torch()
    for scale in (10.0, 30.0):
        x = torch.randn(6, 8) * scale
        with torch.no_grad():
            got, want = lowered(x), model(x)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))


# -- the tolerance follows the values: an RMS norm of small weights ------------------------------------------------
class SmallWeightRMSNorm(nn.Module):
    """An RMS norm whose weight is 1e-5, over ``n - 1`` (``unbiased``) or over ``n``."""

    def __init__(self, unbiased: bool) -> None:
        super().__init__()
        self.weight, self.eps, self.unbiased = nn.Parameter(torch.full((8,), 1e-5)), 1e-6, unbiased

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        square = x.pow(2).sum(-1, keepdim=True) / (x.shape[-1] - 1 if self.unbiased else x.shape[-1])
        return self.weight * x * torch.rsqrt(square + self.eps)


@pytest.mark.parametrize("unbiased", [True, False])
def test_an_rms_norm_of_small_weights_is_told_from_a_near_miss(unbiased: bool) -> None:
    # before, the module idiom's absolute tolerance (1e-5) was as large as the norm's outputs (weight 1e-5): the norm
    # over n - 1 passed as rms_norm and its lowered module was 7% off; the norm over n is still one rmsnorm box
    torch.manual_seed(0)
    model = Normed(SmallWeightRMSNorm(unbiased))
    d = _trace(model, torch.randn(2, 8))
    if not unbiased:
        assert "rmsnorm" in {b.prim.op for b in d.boxes()}
    _agrees(model, d, torch.randn(2, 8), rtol=1e-5)


# -- the tolerance follows the values: a Function's gradients of size 1e-6 -----------------------------------------
class TinyScale(torch.autograd.Function):
    """Forward ``x · 1e-6``; its backward twice autograd's (a gradient scaled on purpose, or a bug)."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
        return x * 1e-6

    @staticmethod
    def backward(ctx: object, g: torch.Tensor) -> torch.Tensor:
        return g * 2e-6


class TinyFunction(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = TinyScale.apply(self.lin(x)) * 1e6
        return out


def test_a_function_whose_backward_differs_from_autograd_by_1e_6_keeps_its_backward() -> None:
    # before, the proof compared the two backwards at atol 1e-5 floored at values of 1: gradients of 1e-6 and 2e-6
    # agreed, the Function was drawn as its forward, and the lowered module's gradients were half the model's
    torch.manual_seed(0)
    model = TinyFunction()
    d = _trace(model, torch.randn(3, 4))
    lowered = d.to_torch()
    x = torch.randn(3, 4)
    lowered(x).sum().backward()
    model(x).sum().backward()
    for got, want in zip(lowered.parameters(), model.parameters(), strict=True):
        assert got.grad is not None and want.grad is not None
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-4, atol=1e-4 * float(want.grad.abs().max()))
