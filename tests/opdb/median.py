"""Samples for the median along an axis and its backward box, against torch (equal entries included)."""

from __future__ import annotations

import torch

import ncd
from ncd.errors import ParseError, TypeMismatchError
from ncd.ir.axes import parse_segment
from ncd.ir.diagram import Box
from ncd.prims.median import MedianBackwardOp
from tests.opdb import error, sample


def _ties(shape: tuple[int, ...]) -> torch.Tensor:
    """Small integers: many equal entries, so which one torch picks matters."""
    return torch.randint(-2, 3, shape, generator=torch.Generator().manual_seed(0)).float()


sample("median", "odd", lambda: ncd.Identity.of("b t") >> ncd.Median("t"), {"b": 3, "t": 5},
       lambda p, x: torch.median(x[0], -1).values, cod="b")
sample("median", "even-first", lambda: ncd.Identity.of("t m") >> ncd.Median("t"), {"t": 4, "m": 3},
       lambda p, x: torch.median(x[0], -2).values)
sample("median", "ties", lambda: ncd.Identity.of("b t") >> ncd.Median("t"), {"b": 3, "t": 6},
       lambda p, x: torch.median(x[0], -1).values, inputs=lambda sizes: (_ties((2, sizes["b"], sizes["t"])),))
error("median", "two-axes", lambda: ncd.Median("t m"), r"median over 't m': runs along one axis of a float", ParseError)
error("median", "two-segments", lambda: ncd.Median("s, t"), r"median takes one segment, not 's, t'", ParseError)
error("median", "missing", lambda: ncd.Identity.of("t m") >> ncd.Median("k"), r"k", TypeMismatchError)


def _vjp(p: dict[str, torch.Tensor], xs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    x, g = xs
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(torch.median(x, -1).values, x, g)
    return grad


for _name, _make in (("random", lambda shape: torch.randn(shape, generator=torch.Generator().manual_seed(1))),
                     ("ties", _ties)):
    sample("median_backward", _name, lambda: ncd.Identity.of("b t, b") >> Box(MedianBackwardOp(parse_segment("t"))),
           {"b": 3, "t": 6}, _vjp, grad=False, cod="b t",
           inputs=lambda sizes, make=_make: (make((2, sizes["b"], sizes["t"])), torch.randn(2, sizes["b"])))
error("median_backward", "index", lambda: MedianBackwardOp(parse_segment("t [3]")),
      r"median backward over 't \[3\]': runs along one axis", ParseError)
