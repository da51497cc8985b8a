"""Samples for the entrywise maximum and minimum of two tensors (ncd.prims.extremum)."""

from __future__ import annotations

import torch

import ncd
from ncd.errors import ParseError
from ncd.ir.diagram import Box
from ncd.prims.extremum import Clamp, ClampGradientOp, ExtremumGradientOp, Maximum
from tests.opdb import error, sample


def _ties(sizes: dict[str, int]) -> tuple[torch.Tensor, ...]:
    """Two tensors equal in some entries (torch halves the gradient on a tie)."""
    a = torch.randn(2, sizes["a"], sizes["b"])
    b = torch.where(torch.rand(2, sizes["a"], sizes["b"]) < 0.3, a, torch.randn(2, sizes["a"], sizes["b"]))
    return a, b


sample("extremum", "maximum-with-ties", lambda: ncd.Identity.of("a b, a b") >> Maximum(), {"a": 2, "b": 3},
       lambda p, x: torch.maximum(x[0], x[1]), inputs=_ties)
sample("extremum", "minimum-broadcast", lambda: (ncd.Identity.of("t m") @ ncd.Identity.of("t")) >> Maximum(smaller=True),
       {"t": 3, "m": 4}, lambda p, x: torch.minimum(x[0], x[1][..., None]), cod="t m")
sample("extremum", "running-maximum", lambda: (ncd.Identity.of("m") @ ncd.Identity.of("t m")) >> Maximum(),
       {"t": 3, "m": 4}, lambda p, x: torch.maximum(x[0][..., None, :], x[1]).transpose(-1, -2), cod="m t")
error("extremum", "mismatch", lambda: ncd.Identity.of("a:2, a:3") >> Maximum(), r"axis a has size 2 .* and 3")


def _clamp_ties(sizes: dict[str, int]) -> tuple[torch.Tensor, ...]:
    """Rounded: x at a bound, bounds equal (then torch's clamp gives no gradient where x < lo), lo above hi."""
    gen = torch.Generator().manual_seed(0)
    return tuple(torch.randn(2, sizes["a"], sizes["b"], generator=gen).round() for _ in range(3))


sample("clamp", "with-ties", lambda: ncd.Identity.of("a b, a b, a b") >> Clamp(), {"a": 3, "b": 4},
       lambda p, x: torch.clamp(x[0], x[1], x[2]), inputs=_clamp_ties)
sample("clamp", "broadcast", lambda: ncd.Identity.of("t m, t, m") >> Clamp(), {"t": 3, "m": 4},
       lambda p, x: torch.clamp(x[0], x[1][..., None], x[2][..., None, :]), cod="t m")
error("clamp", "mismatch", lambda: ncd.Identity.of("a:2, a:3, a:2") >> Clamp(), r"axis a has size 2 .* and 3")
error("clamp", "two-operands", lambda: ncd.Identity.of("a b, a b") >> Clamp(),
      r"the first gives 2 segment\(s\), the second takes 3")


# -- the gradient boxes of a backward diagram: autograd's own numbers, NaNs, equal infinities and ties included --------
def _special(sizes: dict[str, int]) -> tuple[torch.Tensor, ...]:
    """Operands with ties, NaNs, equal infinities, and an infinite cotangent in some entries."""
    gen = torch.Generator().manual_seed(0)
    shape = (2, sizes["a"], sizes["b"])
    a, b = torch.randn(shape, generator=gen).round(), torch.randn(shape, generator=gen).round()
    special = torch.tensor([float("nan"), float("inf"), -float("inf")])
    pick = torch.randint(0, 3, shape, generator=gen)
    a = torch.where(torch.rand(shape, generator=gen) < 0.2, special[pick], a)
    b = torch.where(torch.rand(shape, generator=gen) < 0.2, special[pick], b)
    g = torch.where(torch.rand(shape, generator=gen) < 0.2, float("inf"), torch.randn(shape, generator=gen))
    return a, b, g


def _call(smaller: bool, ties: str):
    def f(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if ties == "half":
            return torch.minimum(a, b) if smaller else torch.maximum(a, b)
        x, bound = (a, b) if ties == "first" else (b, a)
        return torch.clamp(x, max=bound) if smaller else torch.clamp(x, min=bound)
    return f


def _autograd(smaller: bool, ties: str, operand: int):
    def reference(p: dict[str, torch.Tensor], x: tuple[torch.Tensor, ...]) -> torch.Tensor:
        a, b, g = (v.detach().requires_grad_(True) for v in x)
        (grad,) = torch.autograd.grad(_call(smaller, ties)(a, b), (a, b)[operand], g)
        return grad
    return reference


for smaller in (False, True):
    for ties in ("half", "first", "second"):
        for k in (0, 1):
            sample("extremum_gradient", f"{'min' if smaller else 'max'}-{ties}-{'ab'[k]}",
                   lambda smaller=smaller, ties=ties, k=k: ncd.Identity.of("a b, a b, a b")
                   >> Box(ExtremumGradientOp(smaller, ties, k)), {"a": 3, "b": 4}, _autograd(smaller, ties, k),
                   grad=False, inputs=_special)
error("extremum_gradient", "operand", lambda: ExtremumGradientOp(False, "half", 2), r"operand 0 or 1, not 2", ParseError)
error("extremum_gradient", "ties", lambda: ExtremumGradientOp(False, "both", 0), r"ties must be", ParseError)


def _clamp_special(sizes: dict[str, int]) -> tuple[torch.Tensor, ...]:
    """``x``, ``lo``, ``hi`` rounded (ties), with NaNs and infinities (``x = lo = ∞``), and a cotangent."""
    a, b, g = _special(sizes)
    c, _, _ = _special({"a": sizes["b"], "b": sizes["a"]})
    return a, b, c.transpose(-1, -2).contiguous(), g


def _clamp_autograd(operand: int):
    def reference(p: dict[str, torch.Tensor], x: tuple[torch.Tensor, ...]) -> torch.Tensor:
        v, lo, hi, g = (t.detach().requires_grad_(True) for t in x)
        (grad,) = torch.autograd.grad(torch.clamp(v, lo, hi), (v, lo, hi)[operand], g)
        return grad
    return reference


for k in (0, 1, 2):
    sample("clamp_gradient", ("x", "lo", "hi")[k], lambda k=k: ncd.Identity.of("a b, a b, a b, a b")
           >> Box(ClampGradientOp(k)), {"a": 3, "b": 4}, _clamp_autograd(k), grad=False, inputs=_clamp_special)
error("clamp_gradient", "operand", lambda: ClampGradientOp(3), r"operand 0, 1 or 2, not 3", ParseError)
