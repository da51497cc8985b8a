"""Samples for the largest or smallest entries written at positions (``ScatterExtremum``, against
``torch.scatter_reduce(..., "amax" | "amin", include_self)``) and its backward."""

from __future__ import annotations

import torch

import ncd
from ncd.errors import ParseError, SizeError
from ncd.ir.axes import parse_axis, parse_segment
from ncd.ir.diagram import Box
from ncd.prims.scatter_extremum import ScatterExtremum, ScatterExtremumGradOp, ScatterExtremumOp
from tests.opdb import error, sample


def _repeated(sizes: dict[str, int]) -> tuple[torch.Tensor, ...]:
    """Positions that repeat, with ties between the source and ``x`` (rounded values), and the harness' leading
    batch axis of 2."""
    g = torch.Generator().manual_seed(0)
    return ((torch.randn(2, sizes["b"], sizes["t"], sizes["m"], generator=g) * 2).round(),
            torch.randint(0, sizes["t"], (2, sizes["b"], sizes["j"], sizes["m"]), generator=g),
            (torch.randn(2, sizes["b"], sizes["j"], sizes["m"], generator=g) * 2).round())


sample("scatter_extremum", "amax-repeated-ties", lambda: ncd.Identity.of("b t m, b j m [t], b j m")
       >> ScatterExtremum("t", "j [t]", "amax"), {"b": 3, "t": 4, "j": 6, "m": 2},
       lambda p, x: x[0].scatter_reduce(-2, x[1], x[2], "amax"), inputs=_repeated, cod="b t m")
sample("scatter_extremum", "amin-without-self", lambda: ncd.Identity.of("b t m, b j m [t], b j m")
       >> ScatterExtremum("t", "j [t]", "amin", include_self=False), {"b": 2, "t": 5, "j": 4, "m": 3},
       lambda p, x: x[0].scatter_reduce(-2, x[1], x[2], "amin", include_self=False), inputs=_repeated, cod="b t m")
sample("scatter_extremum", "amax-vector", lambda: ncd.Identity.of("t, j [t], j") >> ScatterExtremum("t", "j [t]"),
       {"t": 4, "j": 3}, lambda p, x: x[0].scatter_reduce(-1, x[1], x[2], "amax"), cod="t")
error("scatter_extremum", "reduce", lambda: ScatterExtremum("t", "j [t]", "prod"), r"reduces by amax or amin, not 'prod'",
      ParseError)
error("scatter_extremum", "range", lambda: ScatterExtremum("t:5", "[4]"), r"gather along axis t of size 5", SizeError)
error("scatter_extremum", "include-self", lambda: ScatterExtremumOp(parse_axis("t"), parse_segment("j [t]"), "amax", 1),
      r"include_self=1 must be True or False", ParseError)


def _gradients(include_self: bool):
    def reference(p: dict[str, torch.Tensor], x: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        a, i, s, _, g = x
        a, s = a.detach().requires_grad_(), s.detach().requires_grad_()
        out = a.scatter_reduce(-1, i, s, "amax", include_self=include_self)
        return torch.autograd.grad(out, (a, s), g)
    return reference


def _stored(include_self: bool):
    def inputs(sizes: dict[str, int]) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(1)
        a, s = (torch.randn(2, 4, generator=g) * 2).round(), (torch.randn(2, 6, generator=g) * 2).round()
        i = torch.randint(0, 4, (2, 6), generator=g)
        return a, i, s, a.scatter_reduce(-1, i, s, "amax", include_self=include_self), torch.randn(2, 4, generator=g)
    return inputs


for _self in (True, False):
    sample("scatter_extremum_grad", f"amax-self-{_self}".lower(), lambda _self=_self: Box(ScatterExtremumGradOp(
           parse_axis("t:4"), parse_segment("j:6 [4]"), "amax", _self)), {}, _gradients(_self), inputs=_stored(_self),
           grad=False)
error("scatter_extremum_grad", "reduce", lambda: ScatterExtremumGradOp(parse_axis("t"), parse_segment("j [t]"), "mean"),
      r"reduces by amax or amin, not 'mean'", ParseError)
