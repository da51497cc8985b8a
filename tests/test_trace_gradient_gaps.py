"""Gradients of traced models against ``torch.autograd`` on the original model, where they went wrong or crashed.

``compare_gradients`` on a float16 or bfloat16 model lowered the plain diagram with float32 placeholder weights (the
half inputs met float32 weights: RunError); on a model none of whose outputs takes a gradient it raised torch's bare
RuntimeError.  Now the traced values are loaded in their own types, and such a model's gradients are all zero.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ncd
from ncd.torch.verify import compare_gradients

#: a half type's rounding: the backward diagram and autograd may order a sum differently
TOLERANCE = {torch.float16: (2e-2, 2e-3), torch.bfloat16: (5e-2, 2e-2), torch.float32: (1e-5, 1e-6)}


class Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up, self.down, self.norm = nn.Linear(8, 16), nn.Linear(16, 4), nn.LayerNorm(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.nn.functional.gelu(self.up(self.norm(x)))).softmax(-1)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_backward_diagram_of_a_half_precision_model_equals_autograd_on_the_model(dtype: torch.dtype) -> None:
    torch.manual_seed(5)
    model = Mlp().to(dtype)  # (not the placeholder weights compare_gradients' own seed would draw)
    x = torch.randn(3, 8, dtype=dtype)
    d = ncd.trace(model, x)
    compared = compare_gradients(d, inputs=(x,))  # raised RunError: Half and Float
    rtol, atol = TOLERANCE[dtype]
    assert len(compared) == 1 + len(list(model.parameters()))
    for (what, got, want) in compared:
        assert got.dtype == dtype and want.dtype == dtype, what
        torch.testing.assert_close(got, want, rtol=rtol, atol=atol, msg=what)
    # the autograd side is the model's (its weights, not placeholders): its input gradient is the model's
    xg = x.clone().requires_grad_()
    out = model(xg)
    torch.manual_seed(1)  # compare_gradients draws the cotangent right after seeding seed + 1 (the module draws none)
    (gx,) = torch.autograd.grad(out, xg, torch.randn_like(out))
    torch.testing.assert_close(compared[0][2], gx, rtol=rtol, atol=atol)


class Chosen(nn.Module):
    def __init__(self, detach: bool) -> None:
        super().__init__()
        self.lin, self.detach = nn.Linear(8, 8), detach

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lin(x)
        return y.detach() if self.detach else y.argmax(-1)


@pytest.mark.parametrize("detach", [True, False])
def test_no_output_taking_a_gradient_gives_zero_gradients_not_a_torch_error(detach: bool) -> None:
    x = torch.randn(3, 8)
    d = ncd.trace(Chosen(detach), x)
    compared = compare_gradients(d, inputs=(x,))  # raised RuntimeError: element 0 of tensors does not require grad
    assert len(compared) == 3 and compared[0][0] == "input 0"
    for what, got, want in compared:
        assert torch.equal(want, torch.zeros_like(want)), what
        assert torch.equal(got, want), what


# -- NaN and infinite values through the piecewise functions: the backward diagram's numbers are autograd's ----------
NAN, INF = float("nan"), float("inf")


def _autograd_on_model(model: nn.Module, xs: tuple[torch.Tensor, ...], seed: int = 0) -> list[torch.Tensor]:
    """The model's own input gradients at the cotangent :func:`compare_gradients` draws (``seed + 1``, then
    ``randn_like`` of the output)."""
    leaves = [x.clone().requires_grad_() for x in xs]
    out = model(*leaves)
    torch.manual_seed(seed + 1)
    grads = torch.autograd.grad(out, leaves, torch.randn_like(out), allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for x, g in zip(xs, grads)]


class Of(nn.Module):
    def __init__(self, f) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.f = f

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.f(*xs)


F = torch.nn.functional
#: a: NaN, ±inf, ties with b (0, equal infinities); c: an infinite factor after the function (an infinite cotangent)
A = torch.tensor([NAN, 1.0, 0.0, INF, -INF, INF, 2.0, -3.0, NAN, 0.5, 7.0, -0.0])
B = torch.tensor([0.0, NAN, 0.0, INF, -INF, 1.0, -1.0, 5.0, NAN, 0.5, 6.0, 0.0])
C = torch.tensor([1.0, 2.0, -1.0, 1.0, 1.0, 0.5, INF, INF, 1.0, -INF, INF, 1.0])
PIECEWISE = {
    "relu": lambda a, b, c: F.relu(a) * c,
    "relu6": lambda a, b, c: F.relu6(a * 3) * c,
    "hardtanh": lambda a, b, c: F.hardtanh(a) * c,
    "elu": lambda a, b, c: F.elu(a) * c,
    "selu": lambda a, b, c: F.selu(a) * c,
    "celu": lambda a, b, c: F.celu(a, 0.5) * c,
    "sign": lambda a, b, c: torch.sign(a) * a + b,
    "round": lambda a, b, c: torch.round(a) * c + a,
    "maximum": lambda a, b, c: torch.maximum(a, b) * c,
    "minimum": lambda a, b, c: torch.minimum(a, b) * c,
    "maximum-flipped": lambda a, b, c: torch.maximum(a, a.flip(-1)) * c,
    "maximum-zeros": lambda a, b, c: torch.maximum(a, torch.zeros_like(a)) * c,
    "clamp-min-tensor": lambda a, b, c: torch.clamp(a, min=b) * c,
    "clamp-max-tensor": lambda a, b, c: torch.clamp(a, max=b) * c,
    "clamp-tensor-min": lambda a, b, c: torch.clamp(b, min=a) * c,
    "clamp-tensor-max": lambda a, b, c: torch.clamp(b, max=a) * c,
    "clamp-numbers": lambda a, b, c: torch.clamp(a, 0.0, 1.0) * c,
    "clamp-two-tensors": lambda a, b, c: torch.clamp(a, b, b + 1) * c,
    "clamp-min-number": lambda a, b, c: a.clamp(min=0.5) * c,
    "leaky_relu": lambda a, b, c: F.leaky_relu(a, 0.2) * c,
    "hardsigmoid": lambda a, b, c: F.hardsigmoid(a) * c,
    "hardswish": lambda a, b, c: F.hardswish(a) * c,  # (a = -3 under an infinite c: torch selects 0)
    "abs": lambda a, b, c: a.abs() * c,
    "where": lambda a, b, c: torch.where(a > 0, a, b) * c,
    "atan2": lambda a, b, c: torch.atan2(a, b) * c,  # (a = b = 0: autograd's gradient is 0, not 0 / 0)
    "atan2-zeros": lambda a, b, c: torch.atan2(a * 0, b * 0 + torch.tensor([0.0, 1e-20] * 6)) + a,
}


#: torch's CPU kernels of these give one value at a NaN input in their vectorised loop and another in the scalar tail
#: (hardtanh: 0 and the gradient; the ELUs: NaN and the slope): no rule to match, so their inputs hold no NaN here
VARIES_AT_NAN = {"relu6", "hardtanh", "elu", "selu", "celu", "hardswish"}


@pytest.mark.parametrize("case", list(PIECEWISE))
def test_backward_diagram_at_nan_and_infinite_values_equals_autograd_on_the_model(case: str) -> None:
    model = Of(PIECEWISE[case]).eval()
    xs = (A.clone(), B.clone(), C.clone())
    if case in VARIES_AT_NAN:
        xs = (torch.nan_to_num(xs[0], nan=0.25, posinf=INF, neginf=-INF),) + xs[1:]
    d = ncd.trace(model, *xs)
    assert d.opaque_count == 0
    want = _autograd_on_model(model, xs)
    got = {what: g for what, g, _ in compare_gradients(d, inputs=xs)}
    for k in range(3):
        torch.testing.assert_close(got[f"input {k}"], want[k], rtol=1e-6, atol=1e-6, equal_nan=True,
                                   msg=f"{case}: input {k}")


# -- stop-gradients drawn as sg: no warning that gradients flow through them, and the lowered gradients are the model's
class DetachInPlace(nn.Module):
    """``h.detach_()`` of a value read before (its earlier reader keeps the gradient) and after (cut)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x) * 2
        before = h + 1
        h.detach_()
        return self.b(h) * before


class DataOfActivation(nn.Module):
    """``h.data`` of a value of the inputs (a straight-through product)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        return h.data * h


@pytest.mark.parametrize("model", [DetachInPlace, DataOfActivation])
def test_a_drawn_stop_gradient_is_not_warned_and_the_lowered_gradients_are_the_models(model: type[nn.Module]) -> None:
    import warnings

    torch.manual_seed(0)
    m = model().eval()
    x = torch.randn(3, 4)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        d = ncd.trace(m, x)
    if model is DetachInPlace:  # warned "its gradients flow through them" (the make_fx capture of h.data, which holds
        # no lines to tell the drawn detach by, still warns)
        assert not [w for w in seen if "detaches values" in str(w.message)]
    assert "detach" in {b.prim.op for b in d.boxes()}
    lowered = d.to_torch()
    xm, xl = x.clone().requires_grad_(), x.clone().requires_grad_()
    cotangent = torch.randn(3, 4)
    (m(xm) * cotangent).sum().backward()
    (lowered(xl) * cotangent).sum().backward()
    assert xm.grad is not None and xl.grad is not None
    torch.testing.assert_close(xl.grad, xm.grad, rtol=1e-6, atol=1e-6)
    for (_, p), q in zip(sorted(m.named_parameters()), [q for _, q in sorted(lowered.named_parameters())]):
        assert p.grad is not None and q.grad is not None
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-6, atol=1e-6)


# -- a constant equal in value to a parameter does not become that parameter --------------------------------------------
class BufferCopyEqualToParameter(nn.Module):
    """``F.linear(x, self.table * 1.0)`` of a buffer holding the values of a parameter read elsewhere."""

    def __init__(self, frozen: bool = False) -> None:
        super().__init__()
        v = torch.randn(4, 4)
        self.register_buffer("table", v.clone())
        self.live = nn.Parameter(v.clone())
        self.frozen = nn.Parameter(v.clone(), requires_grad=False) if frozen else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.nn.functional.linear(x, self.table * 1.0).relu() + (x @ self.live).sigmoid()
        return y if self.frozen is None else y + torch.nn.functional.linear(x, self.frozen * 1.0).tanh()


@pytest.mark.parametrize("frozen", [False, True])
def test_a_copy_of_a_buffer_equal_to_a_parameter_stays_a_constant(frozen: bool) -> None:
    torch.manual_seed(0)
    model = BufferCopyEqualToParameter(frozen).eval()
    x = torch.randn(3, 4)
    lowered = ncd.trace(model, x).to_torch()
    # was a second parameter of the lowered module (trained, with a gradient where the model has none)
    trained = [p for p in lowered.parameters() if p.requires_grad]
    assert len(trained) == len([p for p in model.parameters() if p.requires_grad]) == 1
    assert sum(p.numel() for p in lowered.parameters()) == sum(p.numel() for p in model.parameters())
    xm, xl = x.clone().requires_grad_(), x.clone().requires_grad_()
    cotangent = torch.randn(3, 4)
    (model(xm) * cotangent).sum().backward()
    (lowered(xl) * cotangent).sum().backward()
    assert xm.grad is not None and xl.grad is not None and model.live.grad is not None and trained[0].grad is not None
    torch.testing.assert_close(xl.grad, xm.grad, rtol=1e-6, atol=1e-6)
    got = trained[0].grad if trained[0].shape == model.live.shape and torch.equal(trained[0], model.live) \
        else trained[0].grad.t()  # (x @ live is drawn a linear map, which may hold the weight as (out, in))
    torch.testing.assert_close(got, model.live.grad, rtol=1e-6, atol=1e-6)


class ReadOnlyThroughData(nn.Module):
    """A weight read only as ``w.data`` (``F.linear(x, w.data, b)``; ``x @ w.data.t()``)."""

    def __init__(self, matmul: bool) -> None:
        super().__init__()
        self.a, self.matmul = nn.Linear(4, 4), matmul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.matmul:
            return (x @ self.a.weight.data.t() + self.a.bias).tanh()
        return torch.nn.functional.linear(x, self.a.weight.data, self.a.bias).tanh()


@pytest.mark.parametrize("matmul", [False, True])
def test_a_weight_read_only_through_data_is_the_models_parameter_cut_from_autograd(matmul: bool) -> None:
    """Was ``F.linear``'s own weight, trained by the lowered module where the model's gets no gradient (warned), or a
    constant of its values (the lowered module one parameter short, frozen where the model's trains)."""
    import warnings

    torch.manual_seed(0)
    model, x = ReadOnlyThroughData(matmul).eval(), torch.randn(3, 4)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        lowered = ncd.trace(model, x).to_torch()
    assert not [w for w in seen if "detaches values" in str(w.message)]
    assert sorted(p.numel() for p in lowered.parameters()) == sorted(p.numel() for p in model.parameters())
    xm, xl = x.clone().requires_grad_(), x.clone().requires_grad_()
    model(xm).sum().backward()
    lowered(xl).sum().backward()
    assert xm.grad is not None and xl.grad is not None
    torch.testing.assert_close(xl.grad, xm.grad, rtol=1e-6, atol=1e-6)
    grads = {p.numel(): p.grad for p in lowered.parameters()}
    assert grads[16] is None and model.a.weight.grad is None  # the weight: no gradient in either
    assert grads[4] is not None and model.a.bias.grad is not None
    torch.testing.assert_close(grads[4], model.a.bias.grad, rtol=1e-6, atol=1e-6)
