"""Samples for ranking (top-k, sort), resampling (interpolation, adaptive max pooling), group norm and division."""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

import ncd
from ncd.errors import ParseError, SizeError
from ncd.ir.axes import parse_segment
from ncd.ir.diagram import Box
from ncd.prims.resampling import InterpolateTransposeOp
from tests.opdb import error, sample


def _topk(x: torch.Tensor, k: int, dim: int, largest: bool = True, ordered: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    values, indices = torch.topk(x, k, dim=dim, largest=largest, sorted=ordered)
    return values, indices


# (grad=False: the harness differentiates float outputs only; tests/test_backward.py checks the entries' gradient)
# -- top-k -----------------------------------------------------------------------------------
sample("topk", "router", lambda: ncd.Identity.of("b t e") >> ncd.TopK("e", 2, "j"), {"b": 2, "t": 3, "e": 5},
       lambda p, x: _topk(x[0], 2, -1), cod="b t j:2, b t j:2 [e]", grad=False)
sample("topk", "smallest-woven-after", lambda: ncd.Identity.of("t c") >> ncd.TopK("t", 3, "s", largest=False),
       {"t": 6, "c": 2}, lambda p, x: _topk(x[0], 3, -2, largest=False), cod="s:3 c, s:3 c [t]", grad=False)
sample("topk", "unsorted", lambda: ncd.Identity.of("t e") >> ncd.TopK("e", 3, "j", ordered=False), {"t": 4, "e": 9},
       lambda p, x: _topk(x[0], 3, -1, ordered=False), cod="t j:3, t j:3 [e]", grad=False)
# an amax / amin (``ties="even"``, as ncd.trace reads ``x.amax(dim)``): autograd keeps its input and result (tests/test_cost.py)
sample("topk", "amax-ties-even", lambda: ncd.Identity.of("b t e") >> Box(replace(ncd.TopK("e", 1, "j").prim, ties="even")),
       {"b": 2, "t": 3, "e": 5}, lambda p, x: (x[0].amax(-1, keepdim=True), x[0].argmax(-1, keepdim=True)),
       cod="b t j:1, b t j:1 [e]", grad=False)
sample("topk", "amin-ties-even-woven-after",
       lambda: ncd.Identity.of("t c") >> Box(replace(ncd.TopK("t", 1, "s", largest=False).prim, ties="even")),
       {"t": 6, "c": 2}, lambda p, x: (x[0].amin(-2, keepdim=True), x[0].argmin(-2, keepdim=True)),
       cod="s:1 c, s:1 c [t]", grad=False)
error("topk", "too-many", lambda: ncd.TopK("e:4", 5, "j"), r"k=5 must be between 1 and the size 4 of e", SizeError)
error("topk", "same-name", lambda: ncd.TopK("e", 2, "e"), r"the positions need an axis of their own", ParseError)

# -- sort ------------------------------------------------------------------------------------
sample("sort", "descending", lambda: ncd.Identity.of("b t") >> ncd.Sort("t", "s", descending=True), {"b": 3, "t": 7},
       lambda p, x: tuple(torch.sort(x[0], dim=-1, descending=True)), cod="b s:t, b s:t [t]", grad=False)
sample("sort", "stable-woven-after", lambda: ncd.Identity.of("t c") >> ncd.Sort("t", "s", stable=True), {"t": 5, "c": 3},
       lambda p, x: tuple(torch.sort(x[0], dim=-2, stable=True)), grad=False)
def _ids(sizes: dict[str, int]) -> tuple[torch.Tensor, ...]:
    return (torch.randperm(2 * sizes["t"]).reshape(2, sizes["t"]) % 9,)


sample("sort", "expert-ids", lambda: ncd.Identity.of("t [9]") >> ncd.Sort("t [9]", "s", stable=True), {"t": 6},
       lambda p, x: tuple(torch.sort(x[0], dim=-1, stable=True)), inputs=_ids, cod="s:t [9], s:t [t]")
error("sort", "size", lambda: ncd.Box.make(ncd.Sort("t:4", "s").prim.__class__(parse_segment("t:4").axes[0],
                                                                              parse_segment("s:3").axes[0])),
      r"the output axis s has size 3", SizeError)

# -- interpolation ---------------------------------------------------------------------------
sample("interpolate", "nearest-2x", lambda: ncd.Identity.of("c y x") >> ncd.Interpolate("y x", "v:2*y u:2*x", scales=(2.0, 2.0)),
       {"c": 2, "y": 3, "x": 4}, lambda p, x: F.interpolate(x[0], scale_factor=2.0, mode="nearest"), cod="c v:2*y u:2*x")
sample("interpolate", "nearest-size", lambda: ncd.Identity.of("c y x") >> ncd.Interpolate("y x", "v:5 u:7"),
       {"c": 2, "y": 3, "x": 4}, lambda p, x: F.interpolate(x[0], size=(5, 7), mode="nearest"))
sample("interpolate", "bilinear", lambda: ncd.Identity.of("c y x") >> ncd.Interpolate("y x", "v:5 u:6", mode="bilinear"),
       {"c": 2, "y": 3, "x": 4}, lambda p, x: F.interpolate(x[0], size=(5, 6), mode="bilinear"))
sample("interpolate", "bilinear-corners", lambda: ncd.Identity.of("c y x") >> ncd.Interpolate(
       "y x", "v:7 u:3", mode="bilinear", align_corners=True), {"c": 2, "y": 4, "x": 5},
       lambda p, x: F.interpolate(x[0], size=(7, 3), mode="bilinear", align_corners=True))
sample("interpolate", "linear-woven-after", lambda: ncd.Identity.of("t c") >> ncd.Interpolate("t", "s:9", mode="linear"),
       {"t": 4, "c": 3}, lambda p, x: F.interpolate(x[0].transpose(-1, -2), size=9, mode="linear").transpose(-1, -2))
error("interpolate", "mode-axes", lambda: ncd.Interpolate("t", "s:4", mode="bilinear"), r"mode bilinear takes 2 axes, not 1",
      ParseError)
error("interpolate", "corners", lambda: ncd.Interpolate("y x", "v u", align_corners=True), r"align_corners applies to the linear",
      ParseError)


def _transpose(mode: str, size: tuple[int, ...], corners: bool | None = None):
    def reference(p: dict[str, torch.Tensor], x: tuple[torch.Tensor, ...]) -> torch.Tensor:
        g = x[0]
        n = len(size)
        src = torch.zeros(*g.shape[:-n], *size, requires_grad=True)
        out = F.interpolate(src.reshape(-1, 1, *size), size=tuple(g.shape[-n:]), mode=mode, align_corners=corners)
        (grad,) = torch.autograd.grad(out, src, g.reshape(out.shape), create_graph=True)
        return grad
    return reference


sample("interpolate_transpose", "nearest", lambda: ncd.Identity.of("c v:6 u:4") >> Box(
       InterpolateTransposeOp(parse_segment("y:3 x:2"), parse_segment("v:6 u:4"))), {"c": 2},
       _transpose("nearest", (3, 2)), cod="c y:3 x:2")
sample("interpolate_transpose", "bilinear", lambda: Box(InterpolateTransposeOp(parse_segment("y:3 x:4"),
       parse_segment("v:5 u:7"), "bilinear")), {}, _transpose("bilinear", (3, 4), False))
error("interpolate_transpose", "mode", lambda: InterpolateTransposeOp(parse_segment("y"), parse_segment("v"), "cubic"),
      r"unknown mode", ParseError)

# -- adaptive max pooling --------------------------------------------------------------------
sample("adaptive_maxpool", "2d-uneven", lambda: ncd.Identity.of("c y x") >> ncd.AdaptiveMaxPool("y x", (2, 3)),
       {"c": 3, "y": 5, "x": 7}, lambda p, x: F.adaptive_max_pool2d(x[0], (2, 3)), cod="c y:2 x:3")
sample("adaptive_maxpool", "1d-global", lambda: ncd.Identity.of("t c") >> ncd.AdaptiveMaxPool("t", 1), {"t": 6, "c": 3},
       lambda p, x: F.adaptive_max_pool1d(x[0].transpose(-1, -2), 1).transpose(-1, -2), cod="t:1 c")
error("adaptive_maxpool", "sizes", lambda: ncd.AdaptiveMaxPool("y x", (2,)), r"1 output sizes for 2 axes", ParseError)

# -- group norm ------------------------------------------------------------------------------
def _param(params: dict[str, torch.Tensor], suffix: str) -> torch.Tensor:
    (hit,) = [v for k, v in params.items() if k.endswith(suffix)]
    return hit


sample("groupnorm", "image", lambda: ncd.Identity.of("b c y x") >> ncd.GroupNorm("c y x", 2), {"b": 2, "c": 4, "y": 3, "x": 3},
       lambda p, x: F.group_norm(x[0], 2, _param(p, "weight"), _param(p, "bias")), batch=(), atol=1e-4)
sample("groupnorm", "folded-batch", lambda: ncd.Identity.of("c t") >> ncd.GroupNorm("c t", 3, eps=1e-3, affine=False),
       {"c": 6, "t": 5}, lambda p, x: F.group_norm(x[0].reshape(-1, 6, 5), 3, eps=1e-3).view(x[0].shape), batch=(2, 3),
       atol=1e-4)
error("groupnorm", "groups", lambda: ncd.GroupNorm("c:6 y", 4), r"4 groups do not divide the 6 channels of c", SizeError)

# -- division --------------------------------------------------------------------------------
sample("divide", "same", lambda: ncd.Identity.of("a b, a b") >> ncd.Divide(), {"a": 2, "b": 3},
       lambda p, x: x[0] / x[1], inputs=lambda s: (torch.randn(2, 2, 3), torch.rand(2, 2, 3) + 0.5))
sample("divide", "normalise", lambda: (ncd.Identity.of("t m") @ ncd.Identity.of("t")) >> ncd.Divide(), {"t": 3, "m": 4},
       lambda p, x: x[0] / x[1][..., None], cod="t m")
sample("divide", "broadcast-divisor", lambda: (ncd.Identity.of("t") @ ncd.Identity.of("t m")) >> ncd.Divide(),
       {"t": 3, "m": 4}, lambda p, x: x[0][..., None] / x[1], cod="t m", atol=1e-3)
error("divide", "mismatch", lambda: ncd.Identity.of("a:2, a:3") >> ncd.Divide(), r"axis a has size 2 .* and 3")
