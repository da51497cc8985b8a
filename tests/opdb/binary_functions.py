"""Samples for the named functions of two tensors (ncd.prims.binary_functions); references are torch's own functions
and, for the gradient boxes, torch.autograd."""

from __future__ import annotations

import torch

import ncd
from ncd.errors import ParseError
from ncd.ir.diagram import Box
from ncd.prims.binary_functions import BINARY, BinaryFunction, BinaryGradientOp
from tests.opdb import error, sample


def _operands(function: str):
    def make(sizes: dict[str, int]) -> tuple[torch.Tensor, ...]:
        """Two tensors with some ties (``fmax``, ``fmin``), zeros (``copysign``) and, for ``fmax``/``fmin``, NaNs."""
        gen = torch.Generator().manual_seed(0)
        shape = (2, sizes["a"], sizes["b"])
        a, b = 2 * torch.randn(shape, generator=gen), 2 * torch.randn(shape, generator=gen)
        b = torch.where(torch.rand(shape, generator=gen) < 0.25, a, b)
        if function == "copysign":
            a = torch.where(torch.rand(shape, generator=gen) < 0.2, torch.zeros(shape), a)
        if function == "xlogy":  # zeros of a (a 0, whatever b), b positive (log of a negative is NaN)
            a, b = torch.where(torch.rand(shape, generator=gen) < 0.2, torch.zeros(shape), a), b.abs() + 0.1
        if function in ("fmax", "fmin"):
            b = torch.where(torch.rand(shape, generator=gen) < 0.2, torch.full(shape, float("nan")), b)
        return a, b
    return make


for fn in BINARY:
    sample("binary_function", fn, lambda fn=fn: ncd.Identity.of("a b, a b") >> BinaryFunction(fn), {"a": 3, "b": 4},
           lambda p, x, fn=fn: getattr(torch, fn)(x[0], x[1]), inputs=_operands(fn), atol=1e-5)
    # woven: b lacks the axis a (broadcast), so its gradient is summed over it
    sample("binary_function", f"{fn}-broadcast", lambda fn=fn: ncd.Identity.of("t m, m") >> BinaryFunction(fn),
           {"t": 3, "m": 4}, lambda p, x, fn=fn: getattr(torch, fn)(x[0], x[1][..., None, :]), cod="t m", atol=1e-5,
           inputs=(lambda s: (torch.randn(2, 3, 4), torch.rand(2, 4) + 0.1)) if fn == "xlogy" else None)
error("binary_function", "mismatch", lambda: ncd.Identity.of("a:2, a:3") >> BinaryFunction("atan2"),
      r"axis a has size 2 .* and 3")
error("binary_function", "unknown", lambda: BinaryFunction("frexp"), r"unknown function of two tensors 'frexp'", ParseError)


def _autograd(function: str, operand: int):
    def reference(p: dict[str, torch.Tensor], x: tuple[torch.Tensor, ...]) -> torch.Tensor:
        a, b, g = (v.detach().requires_grad_(True) for v in x)
        (grad,) = torch.autograd.grad(getattr(torch, function)(a, b), (a, b)[operand], g, allow_unused=True)
        return grad if grad is not None else torch.zeros_like(g)
    return reference


def _cotangent(function: str):
    def make(sizes: dict[str, int]) -> tuple[torch.Tensor, ...]:
        """The operands and a cotangent (an input of its own: the gradient boxes have no cost sample)."""
        a, b = _operands(function)(sizes)
        return a, b, torch.randn(a.shape, generator=torch.Generator().manual_seed(1))
    return make


for fn in BINARY:
    for k in (0, 1):
        sample("binary_gradient", f"{fn}-{'ab'[k]}", lambda fn=fn, k=k: ncd.Identity.of("a b, a b, a b")
               >> Box(BinaryGradientOp(fn, k)), {"a": 3, "b": 4}, _autograd(fn, k), grad=False, atol=1e-5,
               inputs=_cotangent(fn))
error("binary_gradient", "operand", lambda: BinaryGradientOp("hypot", 2), r"operand 0 or 1, not 2", ParseError)
error("binary_gradient", "two-operands", lambda: ncd.Identity.of("a b, a b") >> Box(BinaryGradientOp("hypot", 0)),
      r"the first gives 2 segment\(s\), the second takes 3")
