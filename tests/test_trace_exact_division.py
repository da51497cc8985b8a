"""A division by a number, and a float mean, lowered as the model computes them: bitwise equal to the model.

A Scale box standing for ``x / 3`` was lowered as ``x * 0.3333333333333333`` (one rounding off: float32 ``x / 3``,
``/ -2.5``, ``/ 0.1``), an attention's ``scores / math.sqrt(k)`` as ``scores * k ** -0.5``, and ``x.mean()`` as
``einsum * b**-1 * m**-1`` (3.7e-9 off).  The box keeps its drawing (``*0.333333333333333``, ``*1/√(k)``) and
lowers as the division (:attr:`~ncd.prims.elementwise.ScaleOp.divisor`); a number whose reciprocal is a power of two
(``x / 4``) stays the multiplication, which is exact."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

import ncd
from ncd.ir.binding import defaults_of
from ncd.ir.size import symbol
from ncd.prims.elementwise import ScaleOp
from ncd.torch.verify import compare_gradients

Op = Callable[[torch.Tensor], torch.Tensor]


class Applied(torch.nn.Module):
    def __init__(self, f: Op) -> None:
        super().__init__()
        self.f = f
        self.w = torch.nn.Parameter(torch.linspace(0.5, 2.0, 24))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(x * self.w)


class Heads(torch.nn.Module):
    """Attention over a head dimension of 24 (no power of two), its queries divided by its root (Longformer), or by
    a 0-dim float32 tensor of it (as GPT-2's eager path divides its scores)."""

    def __init__(self, tensor: bool) -> None:
        super().__init__()
        self.q = torch.nn.Linear(48, 48)
        self.k = torch.nn.Linear(48, 48)
        self.tensor = tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q(x).view(b, t, 2, 24).transpose(1, 2)
        k = self.k(x).view(b, t, 2, 24).transpose(1, 2)
        if self.tensor:
            q = q / torch.full([], 24 ** 0.5, dtype=q.dtype)
        else:
            q = q / math.sqrt(24)
        return (q @ k.transpose(-1, -2)).softmax(-1)


CASES: dict[str, Op] = {
    "/ 3": lambda x: x / 3,
    "/ -2.5": lambda x: x / -2.5,
    "/ 0.1": lambda x: x / 0.1,
    "/ 7": lambda x: x / 7,
    "/ (1/3)": lambda x: x / (1 / 3),
    "/ sqrt(24)": lambda x: x / math.sqrt(24),
    "div_ 3": lambda x: x.clone().div_(3),
    "mean()": lambda x: x.mean(),
    "mean((0, 1))": lambda x: x.mean((0, 1)),
    "mean(-1)": lambda x: x.mean(-1),
    "mean(0, keepdim)": lambda x: x.mean(0, keepdim=True) * 2,
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(CASES))
def test_a_division_by_a_number_is_the_models_bit_for_bit(name: str, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    model = Applied(CASES[name]).to(dtype)
    x = torch.randn(5, 24, dtype=dtype)
    d = ncd.trace(model, x)
    assert d.opaque_count == 0
    lowered = d.to_torch()
    for values in (x, torch.randn(5, 24, dtype=dtype)):  # the traced input and a fresh one
        with torch.no_grad():
            assert torch.equal(lowered(values), model(values)), name
        xa, xl = values.clone().requires_grad_(), values.clone().requires_grad_()
        want = torch.autograd.grad(model(xa).sum(), [xa, model.w])
        got = torch.autograd.grad(lowered(xl).sum(), [xl, *lowered.parameters()])
        assert all(torch.equal(a, b) for a, b in zip(want, got)), name
    if dtype == torch.float32:  # (the backward diagram runs in float32)
        for what, mine, theirs in compare_gradients(d, inputs=(x,)):  # it divides alike
            assert torch.allclose(mine, theirs, rtol=1e-6, atol=0), what
    sizes = {symbol(k): v for k, v in defaults_of(d.as_block()).items()}
    divisors = [b.prim.divisor for b in d.boxes() if isinstance(b.prim, ScaleOp)]
    again = [b.prim.divisor for b in ncd.load_json(d.to_json()).boxes() if isinstance(b.prim, ScaleOp)]
    assert any(v is not None for v in divisors) and [None if v is None else float(v.subs(sizes)) for v in again] \
        == [None if v is None else float(v.subs(sizes)) for v in divisors]  # (JSON keeps each divisor)


def test_drawn_as_before_and_a_power_of_two_stays_a_multiplication() -> None:
    """The Scale box's label is the factor's (a drawing of ``x / 3`` is the one of ``x * (1/3)``); ``x / 4`` has no
    divisor (``x * 0.25`` is exact), nor has ``x * 3``."""
    x = torch.randn(5, 24)
    scales = {}
    for name, f in (("/ 3", CASES["/ 3"]), ("* (1/3)", lambda x: x * (1 / 3)), ("/ 4", lambda x: x / 4),
                    ("* 3", lambda x: x * 3)):
        (prim,) = [b.prim for b in ncd.trace(Applied(f), x).boxes() if isinstance(b.prim, ScaleOp)]
        scales[name] = prim
    assert scales["/ 3"].label() == scales["* (1/3)"].label() and scales["/ 3"].divisor == 3
    assert scales["* (1/3)"].divisor is None and scales["/ 4"].divisor is None and scales["* 3"].divisor is None
    source = ncd.trace(Applied(CASES["/ 3"]), x).to_torch().ncd_source
    assert " / 3  #" in source and "0.333" not in source


@pytest.mark.parametrize("tensor", [False, True])
def test_an_attention_scale_divides_as_the_model_and_draws_symbolically(tensor: bool) -> None:
    """``q / math.sqrt(k)`` (and over a float32 0-dim tensor of ``k ** 0.5``) is drawn as ``*1/√(k)`` and lowered as
    ``q / sizes.k ** 0.5``: equal to the model bit for bit, where ``* k ** -0.5`` was a rounding off."""
    torch.manual_seed(0)
    model, x = Heads(tensor), torch.randn(2, 5, 48)
    d = ncd.trace(model, x)
    (prim,) = [b.prim for b in d.boxes() if isinstance(b.prim, ScaleOp)]
    assert prim.label().startswith("*1/√(") and prim.divisor is not None and prim.divisor.free_symbols
    lowered = d.to_torch()
    for values in (x, torch.randn(2, 5, 48)):
        with torch.no_grad():
            assert torch.equal(lowered(values), model(values))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_addcdiv_divides_as_aten(dtype: torch.dtype) -> None:
    """``torch.addcdiv(x, a, b, value=0.3)`` is ATen's ``x + (0.3·a) / b``, bit for bit (``x + 0.3·(a / b)`` was a
    rounding off); by a power of two (``value=2``) the two agree, and the box order stays."""
    torch.manual_seed(0)
    for value in (0.3, 2.0):
        model = Applied(lambda x: torch.addcdiv(x, x.flip(-1), x.abs() + 1, value=value)).to(dtype)
        x = torch.randn(5, 24, dtype=dtype)
        d = ncd.trace(model, x)
        lowered = d.to_torch()
        for values in (x, torch.randn(5, 24, dtype=dtype)):
            with torch.no_grad():
                assert torch.equal(lowered(values), model(values)), value
        ops = [b.prim.op for b in d.boxes() if b.prim.op in ("scale", "divide", "entrywise")]
        assert ops[0] == ("scale" if value == 0.3 else ops[0]), ops


def test_no_scale_box_over_one_entry() -> None:
    """A mean over a wire of one entry draws no ``*1`` box (nor does ``x / 1``), as before divisions lowered as the
    model's (informer drew two ``*1`` boxes)."""
    for f in (lambda x: x.mean(1) * 3, lambda x: x / 1 + x):
        model = Applied(lambda v, f=f: f(v[..., :8].reshape(4, 1, 8)))
        x = torch.randn(4, 24)
        d = ncd.trace(model, x)
        assert not [b for b in d.boxes() if isinstance(b.prim, ScaleOp) and b.prim.factor == 1]
        with torch.no_grad():
            assert torch.equal(d.to_torch()(x), model(x))
