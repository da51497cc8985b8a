"""Samples for the affine sampling grid (``F.affine_grid``) and its transpose."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import ncd
from ncd.errors import ParseError, SizeError
from ncd.ir.axes import parse_axis, parse_segment
from ncd.ir.diagram import Box
from ncd.prims.affine import AffineGrid, AffineGridOp, AffineGridTransposeOp
from tests.opdb import error, sample


def _grid(n: int, sizes: list[int], corners: bool):
    def reference(p: dict[str, torch.Tensor], x: tuple[torch.Tensor, ...]) -> torch.Tensor:
        theta = x[0]
        lead = theta.shape[:-2]
        out = F.affine_grid(theta.reshape(-1, n, n + 1), [lead.numel(), 1, *sizes], align_corners=corners)
        return out.view(*lead, *sizes, n)
    return reference


# a spatial transformer's batch of maps
sample("affine_grid", "batch", lambda: ncd.Identity.of("n k:2 l:3") >> AffineGrid("y x", "k", "l"),
       {"n": 3, "y": 4, "x": 5}, _grid(2, [4, 5], False), cod="n y x k:2")
# one map (woven over the sample batch only), corners aligned
sample("affine_grid", "one-map-corners", lambda: ncd.Identity.of("k:2 l:3") >> AffineGrid("y x", align_corners=True),
       {"y": 3, "x": 6}, _grid(2, [3, 6], True))
# a volume
sample("affine_grid", "volume", lambda: ncd.Identity.of("n k:3 l:4") >> AffineGrid("z y x", "k", "l"),
       {"n": 2, "z": 2, "y": 3, "x": 4}, _grid(3, [2, 3, 4], False))
error("affine_grid", "sizes", lambda: AffineGrid("y x", "k:3", "l"), r"one row per spatial axis \(2\)", SizeError)
error("affine_grid", "axes", lambda: AffineGrid("y", "k", "l"), r"takes 2 or 3 spatial axes", ParseError)
error("affine_grid", "names", lambda: AffineGrid("y x", "x", "l"), r"need names of their own", ParseError)


def _transpose(n: int, sizes: list[int], corners: bool):
    def reference(p: dict[str, torch.Tensor], x: tuple[torch.Tensor, ...]) -> torch.Tensor:
        (g,) = x
        theta = torch.zeros(g.shape[0], n, n + 1, requires_grad=True)
        out = F.affine_grid(theta, [g.shape[0], 1, *sizes], align_corners=corners)
        return torch.autograd.grad(out, theta, g)[0]
    return reference


sample("affine_grid_transpose", "plane", lambda: Box(AffineGridTransposeOp(parse_segment("y:4 x:5"), parse_axis("k:2"),
       parse_axis("l:3"))), {}, _transpose(2, [4, 5], False), grad=False)
sample("affine_grid_transpose", "volume-corners", lambda: Box(AffineGridTransposeOp(parse_segment("z:2 y:3 x:2"),
       parse_axis("k:3"), parse_axis("l:4"), True)), {}, _transpose(3, [2, 3, 2], True), grad=False)
error("affine_grid_transpose", "float", lambda: AffineGridTransposeOp(parse_segment("y x [4]"), parse_axis("k:2"),
      parse_axis("l:3")), r"the positions are numbers", ParseError)
error("affine_grid", "corners", lambda: AffineGridOp(parse_segment("y x"), parse_axis("k:2"), parse_axis("l:3"), 1),
      r"must be True or False", ParseError)
