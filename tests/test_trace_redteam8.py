"""Red team, eighth pass: each test fails on the main it was written against and compares with the model itself
(its outputs, torch's autograd)."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import ncd
from tests.trace_checks import one_opaque_and_flops


def _same_gradients(model: torch.nn.Module, lowered: torch.nn.Module, *inputs: torch.Tensor) -> None:
    """Every parameter of ``model`` has its twin in ``lowered`` (equal entries), which gets the same gradient under one
    weighted sum of the outputs; the lowered module has no other parameter."""
    got, want = lowered(*inputs), model(*inputs)
    torch.testing.assert_close(got, want)
    weights = torch.linspace(0.1, 1.0, want.numel()).reshape(want.shape)
    mine = list(model.parameters())
    theirs = list(lowered.parameters())
    assert sum(p.numel() for p in theirs) == sum(p.numel() for p in mine)
    want_grads = torch.autograd.grad((want.float() * weights).sum(), mine)
    got_grads = torch.autograd.grad((got.float() * weights).sum(), theirs, allow_unused=True)
    for p, g in zip(mine, want_grads):
        twins = [k for k, q in enumerate(theirs) if q.shape == p.shape and q.dtype == p.dtype and torch.equal(q, p)]
        assert twins, f"no parameter of the lowered module equals one of shape {tuple(p.shape)}"
        wide = torch.complex128 if g.is_complex() else torch.float64
        assert any(got_grads[k] is not None and torch.allclose(got_grads[k].to(wide), g.to(wide), rtol=2e-2, atol=1e-3)
                   for k in twins), f"the gradient of a parameter of shape {tuple(p.shape)} differs (or is None)"


class _Fp32LayerNorm(torch.nn.LayerNorm):
    """fairseq's layer norm computed in float32 in a half-precision model: its weight and bias cast to float32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(),
                            self.eps).type_as(x)


class _Norms(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.norm, self.out = torch.nn.Linear(6, 6), _Fp32LayerNorm(6), torch.nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.norm(self.a(x)))


class _Decay(torch.nn.Module):
    """A state-space scan's ``-exp(A_log.float())`` and skip ``D.float()`` (Mamba's) in a bfloat16 model."""

    def __init__(self) -> None:
        super().__init__()
        self.A_log = torch.nn.Parameter(torch.log(torch.arange(1, 7.0)))
        self.D = torch.nn.Parameter(torch.ones(6))
        self.a = torch.nn.Linear(6, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x).float()
        return (torch.cumsum(h * (-torch.exp(self.A_log.float())).exp(), 1) + h * self.D.float()).to(x.dtype)


class _Cast(torch.nn.Module):
    """A float32 weight cast to the input's float16, and a float64 one cast to float32."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(6, 6))
        self.v = torch.nn.Parameter(torch.randn(6, 6, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.w.to(x.dtype)) + (x.float() @ self.v.float()).to(x.dtype)


@pytest.mark.parametrize(("make", "dtype"), [(_Norms, torch.bfloat16), (_Decay, torch.bfloat16),
                                             (_Cast, torch.float16)])
def test_a_parameter_cast_to_another_type_is_trained_through_the_cast(make: type[torch.nn.Module],
                                                                      dtype: torch.dtype) -> None:
    """The cast parameter was folded into a constant of the lowered module (a buffer holding the cast values), the
    parameter itself kept unread beside it: equal outputs, parameter count equal, and no gradient ever reached it, with
    no word.  Now the parameter is a box and the cast a box after it."""
    torch.manual_seed(0)
    model = make().to(dtype) if make is not _Cast else make()
    x = torch.randn(2, 5, 6, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, x)
    _same_gradients(model, d.to_torch(), x)


class _Pointwise(torch.nn.Module):
    """Operators with no rule of their own before, each drawn as its definition."""

    def __init__(self, op: str) -> None:
        super().__init__()
        self.lin, self.op = torch.nn.Linear(6, 6), op
        self.w = torch.nn.Parameter(torch.randn(6, 4, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lin(x)
        if self.op == "shrink":
            return F.hardshrink(h, 0.4) + F.softshrink(h, 0.3) * F.threshold(h, 0.2, -1.5) + F.softshrink(h, 0.0)
        if self.op == "nan_to_num":
            g = torch.cat([h.log(), h * 1e38, -h * 1e38], -1)
            return torch.nan_to_num(g) + torch.nan_to_num(g, nan=-1.0, posinf=3.0, neginf=-2.5) + torch.isinf(g)
        if self.op == "take_along_dim":
            order = h.argsort(-1)
            return torch.take_along_dim(h, order, -1) * torch.take_along_dim(h, order[:, :2].argsort(1), dim=1).sum(1,
                                                                                                      keepdim=True)
        return torch.tensordot(h, self.w, dims=([2], [0])).flatten(2) + torch.tensordot(self.w, h, dims=([0], [-1])
                                                                                         ).permute(2, 3, 0, 1).flatten(2)


@pytest.mark.parametrize("op", ["shrink", "nan_to_num", "take_along_dim", "tensordot"])
def test_pointwise_operators_without_a_rule_are_drawn_as_their_definitions(op: str) -> None:
    """hardshrink, softshrink, threshold, nan_to_num (default and given fills), isinf, take_along_dim and tensordot were opaque
    boxes; each is now the boxes of its definition: no opaque box, equal to the model on the traced and a fresh input,
    the same gradients (NaN where the model's are), and a backward diagram."""
    torch.manual_seed(0)
    model, x = _Pointwise(op), torch.randn(2, 5, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, x)
    assert d.opaque_count == 0
    lowered = d.to_torch()
    for inputs in (x, torch.randn(2, 5, 6) * 3):
        a, b = inputs.clone().requires_grad_(True), inputs.clone().requires_grad_(True)
        got, want = lowered(a), model(b)
        torch.testing.assert_close(got, want, equal_nan=True)
        weights = torch.linspace(0.1, 1.0, want.numel()).reshape(want.shape)
        (got * weights).sum().backward()
        (want * weights).sum().backward()
        torch.testing.assert_close(a.grad, b.grad, equal_nan=True)
    ncd.backward(d)


class _TrainingOnly(torch.autograd.Function):
    """A Function whose backward refuses to run outside training, as Reformer's reversible layers do in eval mode."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return torch.heaviside(x, torch.tensor(0.5)) + x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        raise AssertionError("make sure to use `model.train()` to train this model")


class _Reversible(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(5, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _TrainingOnly.apply(self.proj(x)) * x


def test_the_cost_of_an_opaque_call_whose_backward_raises_is_measured_forward_only() -> None:
    """The Function's backward raises an AssertionError when run (its forward runs): on main ``ncd.cost`` raised
    AnalysisError for the model (Reformer traced in eval mode); now its forward is measured, as heaviside's is."""
    torch.manual_seed(0)
    model, x = _Reversible(), torch.randn(2, 3, 5)
    d, flops = one_opaque_and_flops(model, x)
    with pytest.warns(UserWarning, match=r"backward of the call.*AssertionError.*counted as costing nothing"):
        cost = ncd.cost(d)  # the Linear's FLOPs as torch counts them, and the elementwise ones torch does not count
    assert cost.forward_flops == flops + 2 * x.numel()


class _ComplexGain(torch.nn.Module):
    """A complex parameter read through real views: its real and imaginary parts, or ``view_as_real``'s pairs."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.gain, self.how = torch.nn.Parameter(torch.randn(6, dtype=torch.complex64)), how

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.how == "real and imag":
            return x * self.gain.real + x.flip(-1) * self.gain.imag
        return x * torch.view_as_real(self.gain)[:, 0]


@pytest.mark.parametrize("how", ["real and imag", "view_as_real"])
def test_a_complex_parameter_read_through_a_real_view_is_that_parameter(how: str) -> None:
    """``gain.real`` equals the complex table cast to float32, so it was read as the table's first rows: the lowered
    module held a float32 parameter beside the complex one (twice the entries, trained apart), and ``view_as_real``'s
    pairs a constant buffer (no gradient reached the parameter), both with no word."""
    torch.manual_seed(0)
    model, x = _ComplexGain(how), torch.randn(2, 5, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, x)
    lowered = d.to_torch()
    assert [p.dtype for p in lowered.parameters()] == [torch.complex64]
    _same_gradients(model, lowered, x)


class _Widening(torch.nn.Module):
    """Arithmetic of float32 values with narrower and wider floats: a half-precision factor, a float64 parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(6, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6).to(torch.float16)
        return (h - x.bfloat16()) / x.exp().half() + self.w


def test_arithmetic_on_two_float_types_casts_the_narrower_operand_first() -> None:
    """``x * rsqrt(…).to(float16)`` of float32 ``x``, and the other operators with an operand of another float type,
    were opaque boxes (holding the traced values); each is now a cast of the narrower operand to the result's type and
    the operation, as torch computes it: equal on a fresh input, the same gradients."""
    torch.manual_seed(0)
    model, x = _Widening(), torch.randn(2, 5, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, x)
    assert d.opaque_count == 0
    lowered = d.to_torch()
    _same_gradients(model, lowered, torch.randn(2, 5, 6))
    a, b = (torch.randn(2, 5, 6, requires_grad=True) for _ in range(2))
    with torch.no_grad():
        b.copy_(a)
    lowered(a).sum().backward()
    model(b).sum().backward()
    torch.testing.assert_close(a.grad, b.grad)
