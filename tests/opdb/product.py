"""Samples for the product over axes and its backward box, against torch (zeros among the entries included)."""

from __future__ import annotations

import torch

import ncd
from ncd.errors import ParseError, TypeMismatchError
from ncd.ir.axes import parse_segment
from ncd.ir.diagram import Box
from ncd.prims.product import ProdBackwardOp
from tests.opdb import error, sample


def _zeros(shape: tuple[int, ...], zeros: int) -> torch.Tensor:
    """Entries near ±1 (products that neither vanish nor blow up), ``zeros`` of them 0 in the first row."""
    gen = torch.Generator().manual_seed(0)
    x = (1 + 0.3 * torch.randn(shape, generator=gen)) * torch.randint(0, 2, shape, generator=gen).mul(2).sub(1)
    x.view(-1, shape[-1])[0, :zeros] = 0.0
    return x


sample("prod", "last", lambda: ncd.Identity.of("t m") >> ncd.Prod("m"), {"t": 3, "m": 5},
       lambda p, x: torch.prod(x[0], -1), cod="t")
sample("prod", "first", lambda: ncd.Identity.of("m t") >> ncd.Prod("m"), {"t": 3, "m": 4},
       lambda p, x: torch.prod(x[0], -2))
sample("prod", "two-axes", lambda: ncd.Identity.of("h w c") >> ncd.Prod("h w"), {"h": 2, "w": 3, "c": 4},
       lambda p, x: torch.prod(x[0].flatten(-3, -2), -2), cod="c")
for _n in (1, 2):
    sample("prod", f"{_n}-zero", lambda: ncd.Identity.of("t m") >> ncd.Prod("m"), {"t": 3, "m": 4},
           lambda p, x: torch.prod(x[0], -1), inputs=lambda sizes, n=_n: (_zeros((2, sizes["t"], sizes["m"]), n),))
error("prod", "index", lambda: ncd.Prod("t [5]"), r"product over 't \[5\]': multiplies distinct axes of a float", ParseError)
error("prod", "two-segments", lambda: ncd.Prod("s, t"), r"product takes one segment, not 's, t'", ParseError)
error("prod", "missing", lambda: ncd.Identity.of("t m") >> ncd.Prod("k"), r"k", TypeMismatchError)


def _vjp(p: dict[str, torch.Tensor], xs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    x, g = xs
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(torch.prod(x, -1), x, g)
    return grad


for _n in (0, 1, 2):
    sample("prod_backward", f"{_n}-zero", lambda: ncd.Identity.of("t m, t") >> Box(ProdBackwardOp(parse_segment("m"))),
           {"t": 3, "m": 4}, _vjp, grad=False, cod="t m",
           inputs=lambda sizes, n=_n: (_zeros((2, sizes["t"], sizes["m"]), n), torch.randn(2, sizes["t"])))
error("prod_backward", "index", lambda: ProdBackwardOp(parse_segment("m [3]")),
      r"product backward over 'm \[3\]': multiplies distinct axes", ParseError)
