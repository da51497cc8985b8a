"""Samples for the reductions (vector norm, log-sum-exp) and their shared backward box, against torch."""

from __future__ import annotations

from collections.abc import Callable

import torch

import ncd
from ncd.errors import ParseError, TypeMismatchError
from ncd.ir.axes import parse_segment
from ncd.ir.diagram import Box
from ncd.prims.reduction import ReductionBackwardOp
from ncd.prims.weightnorm import WeightNormBackwardOp, WeightNormOp
from tests.opdb import error, sample

# -- vector norm -------------------------------------------------------------------------------
sample("vector_norm", "last", lambda: ncd.Identity.of("t m") >> ncd.VectorNorm("m"), {"t": 3, "m": 5},
       lambda p, x: torch.linalg.vector_norm(x[0], dim=-1), cod="t")
sample("vector_norm", "middle-two", lambda: ncd.Identity.of("h w c") >> ncd.VectorNorm("h w"), {"h": 3, "w": 4, "c": 2},
       lambda p, x: torch.linalg.vector_norm(x[0], dim=(-3, -2)), cod="c")
sample("vector_norm", "p1", lambda: ncd.Identity.of("m t") >> ncd.VectorNorm("m", 1), {"t": 3, "m": 4},
       lambda p, x: torch.linalg.vector_norm(x[0], 1, dim=-2))
sample("vector_norm", "p3", lambda: ncd.Identity.of("t m") >> ncd.VectorNorm("m", 3), {"t": 2, "m": 6},
       lambda p, x: torch.linalg.vector_norm(x[0], 3, dim=-1))
sample("vector_norm", "normalize", lambda: ncd.Identity.of("t m") >> (ncd.Copy("t m") >> (
       ncd.Identity.of("t m") @ ncd.VectorNorm("m"))) >> ncd.Divide(), {"t": 3, "m": 4},
       lambda p, x: torch.nn.functional.normalize(x[0], dim=-1, eps=0.0))
error("vector_norm", "order", lambda: ncd.VectorNorm("m", float("inf")), r"vector norm over 'm': the order p must be a finite",
      ParseError)
error("vector_norm", "index", lambda: ncd.VectorNorm("t [5]"), r"vector norm over 't \[5\]': reduces distinct axes of a float",
      ParseError)
error("vector_norm", "missing", lambda: ncd.Identity.of("t m") >> ncd.VectorNorm("k"), r"k", TypeMismatchError)

# -- log-sum-exp -------------------------------------------------------------------------------
sample("logsumexp", "last", lambda: ncd.Identity.of("h s") >> ncd.LogSumExp("s"), {"h": 3, "s": 5},
       lambda p, x: torch.logsumexp(x[0], -1), cod="h")
sample("logsumexp", "woven-after", lambda: ncd.Identity.of("s t h") >> ncd.LogSumExp("s t"), {"h": 2, "s": 3, "t": 4},
       lambda p, x: torch.logsumexp(x[0], (-3, -2)))
error("logsumexp", "two-segments", lambda: ncd.LogSumExp("s, t"), r"logsumexp takes one segment, not 's, t'", ParseError)
error("logsumexp", "repeated", lambda: ncd.LogSumExp("s s"), r"logsumexp over 's s': reduces distinct axes", ParseError)


# -- the backward box ------------------------------------------------------------------------------
def _vjp(reduce):  # type: ignore[no-untyped-def]
    def reference(p: dict[str, torch.Tensor], xs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x, _, g = xs
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(reduce(x), x, g)
        return grad
    return reference


def _inputs(reduce):  # type: ignore[no-untyped-def]
    def make(sizes: dict[str, int]) -> tuple[torch.Tensor, ...]:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn((2, sizes["t"], sizes["m"]), generator=gen)
        y = reduce(x)
        return x, y, torch.randn(y.shape, generator=gen)
    return make


for _p in (1.0, 2.0, 3.0):
    def _norm(x: torch.Tensor, p: float = _p) -> torch.Tensor:
        return torch.linalg.vector_norm(x, p, dim=-1)

    sample("reduction_backward", f"norm-p{int(_p)}", lambda p=_p: ncd.Identity.of("t m, t, t") >> Box(
           ReductionBackwardOp(parse_segment("m"), "norm", p)), {"t": 3, "m": 4}, _vjp(_norm), inputs=_inputs(_norm),
           grad=False, cod="t m")
sample("reduction_backward", "logsumexp", lambda: ncd.Identity.of("t m, t, t") >> Box(
       ReductionBackwardOp(parse_segment("m"), "logsumexp")), {"t": 3, "m": 4}, _vjp(lambda x: torch.logsumexp(x, -1)),
       inputs=_inputs(lambda x: torch.logsumexp(x, -1)), grad=False)


def _tied(reduce):  # type: ignore[no-untyped-def]
    def make(sizes: dict[str, int]) -> tuple[torch.Tensor, ...]:
        x, _, g = _inputs(reduce)(sizes)
        x = x.round()  # many ties, shared evenly by amax's autograd
        return x, reduce(x), g
    return make


for _r in ("amax", "amin"):
    def _extreme(x: torch.Tensor, r: str = _r) -> torch.Tensor:
        return getattr(torch, r)(x, -1)

    sample("reduction_backward", _r, lambda r=_r: ncd.Identity.of("t m, t, t") >> Box(
           ReductionBackwardOp(parse_segment("m"), r)), {"t": 3, "m": 4}, _vjp(_extreme), inputs=_tied(_extreme),
           grad=False, cod="t m")
error("reduction_backward", "kind", lambda: ReductionBackwardOp(parse_segment("m"), "max"),  # type: ignore[arg-type]
      r"reduction backward over 'm': unknown reduction 'max'", ParseError)

# -- weight norm (nn.utils.parametrizations.weight_norm) and its backward box ------------------------
sample("weight_norm", "first", lambda: ncd.Identity.of("o c k, o") >> ncd.WeightNorm("o c k", "o"), {"o": 3, "c": 2, "k": 4},
       lambda p, x: torch._weight_norm(x[0], x[1], 0), batch=())
sample("weight_norm", "last", lambda: ncd.Identity.of("c k o, o") >> ncd.WeightNorm("c k o", "o"), {"o": 3, "c": 2, "k": 4},
       lambda p, x: torch._weight_norm(x[0], x[1], 2), batch=())
sample("weight_norm", "woven", lambda: ncd.Identity.of("o c, o") >> ncd.WeightNorm("o c", "o"), {"o": 3, "c": 5},
       lambda p, x: x[0] * (x[1][..., None] / torch.linalg.vector_norm(x[0], dim=-1, keepdim=True)))
error("weight_norm", "gain", lambda: ncd.WeightNorm("o c", "d"), r"weight norm of 'o c': the gain's axis d is not one",
      ParseError)
error("weight_norm", "one-axis", lambda: ncd.WeightNorm("o", "o"), r"weight norm of 'o': a float tensor of at least two",
      ParseError)


def _weight_norm_vjp(p: dict[str, torch.Tensor], xs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    v, g, dw = (x.detach() for x in xs)
    v, g = v.requires_grad_(True), g.requires_grad_(True)
    dv, dg = torch.autograd.grad(torch._weight_norm(v, g, 0), (v, g), dw)
    return dv, dg


def _weight_norm_inputs(gain: tuple[int, ...]) -> Callable[[dict[str, int]], tuple[torch.Tensor, ...]]:
    """A direction, a gain and a cotangent, as the backward diagram passes them (the derivative box is not differentiated
    again, so like every derivative sample its stored tensors are not compared with autograd's by test_cost)."""
    def make(sizes: dict[str, int]) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(0)
        shape = (sizes["o"], sizes["c"], sizes["k"])
        return (torch.randn(shape, generator=g), torch.randn((sizes["o"], *gain), generator=g),
                torch.randn(shape, generator=g))
    return make


sample("weight_norm_backward", "first", lambda: ncd.Identity.of("o c k, o, o c k") >> Box(
       WeightNormBackwardOp(parse_segment("o c k"), 0)), {"o": 3, "c": 2, "k": 4}, _weight_norm_vjp, grad=False, batch=(),
       inputs=_weight_norm_inputs(()))
error("weight_norm_backward", "position", lambda: WeightNormBackwardOp(parse_segment("o c"), 2),
      r"weight norm backward of 'o c': no axis at position 2", ParseError)
sample("weight_norm", "unit-axes", lambda: ncd.Identity.of("o c k, o u:1 w:1") >> Box(WeightNormOp(
       parse_segment("o c k"), 0, parse_segment("o u:1 w:1"))), {"o": 3, "c": 2, "k": 4},
       lambda p, x: torch._weight_norm(x[0], x[1], 0), batch=())
sample("weight_norm_backward", "unit-axes", lambda: ncd.Identity.of("o c k, o u:1 w:1, o c k") >> Box(
       WeightNormBackwardOp(parse_segment("o c k"), 0, parse_segment("o u:1 w:1"))), {"o": 3, "c": 2, "k": 4},
       _weight_norm_vjp, grad=False, batch=(), inputs=_weight_norm_inputs((1, 1)))
error("weight_norm", "gain-shape", lambda: WeightNormOp(parse_segment("o c"), 0, parse_segment("o c")),
      r"weight norm of 'o c': the gain 'o c' is neither its axis o nor", ParseError)
