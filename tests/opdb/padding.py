"""Samples for the ends of an axis (roll, flip, pad and its transpose) and cumulative sums."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import ncd
from ncd.errors import ParseError, SizeError
from ncd.ir.axes import parse_segment
from ncd.ir.diagram import Box
from ncd.prims.padding import Flip, PadTransposeOp
from tests.opdb import error, sample

# -- roll ------------------------------------------------------------------------------------
sample("roll", "swin-windows", lambda: ncd.Identity.of("h w c") >> ncd.Roll("h w", (-1, -2)), {"h": 4, "w": 5, "c": 3},
       lambda p, x: torch.roll(x[0], (-1, -2), (-3, -2)), cod="h w c")
sample("roll", "one-axis", lambda: ncd.Roll("t", 2), {"t": 5}, lambda p, x: torch.roll(x[0], 2, -1))
sample("roll", "woven-inside", lambda: ncd.Identity.of("a t b") >> ncd.Roll("t", -7), {"a": 2, "t": 5, "b": 3},
       lambda p, x: torch.roll(x[0], -7, -2))
sample("flip", "kernel", lambda: ncd.Identity.of("b t k") >> Flip("k"), {"b": 2, "t": 3, "k": 4},
       lambda p, x: torch.flip(x[0], (-1,)))
sample("flip", "two-axes-woven-after", lambda: ncd.Identity.of("h w a") >> Flip("h w"), {"h": 3, "a": 2, "w": 4},
       lambda p, x: torch.flip(x[0], (-3, -2)))
error("flip", "repeated", lambda: Flip("h h"), r"flip takes distinct axes, not 'h h'", ParseError)
error("roll", "shifts", lambda: ncd.Roll("h w", (1, 2, 3)), r"roll of 'h w': 3 amounts for 2 axes", ParseError)
error("roll", "fraction", lambda: ncd.Roll("h", 1.5), r"roll of 'h': 1.5 is not a whole number", ParseError)

# -- pad -------------------------------------------------------------------------------------
sample("pad", "constant", lambda: ncd.Identity.of("c x y") >> ncd.Pad("x y", (1, 0), (2, 3)), {"c": 2, "x": 3, "y": 4},
       lambda p, x: F.pad(x[0], (0, 3, 1, 2)), cod="c x:x+3 y:y+3")
sample("pad", "value-woven", lambda: ncd.Identity.of("t b") >> ncd.Pad("t", 2, 0, value=-1.5), {"t": 3, "b": 4},
       lambda p, x: F.pad(x[0].transpose(-1, -2), (2, 0), value=-1.5).transpose(-1, -2), cod="t:t+2 b")
sample("pad", "crop", lambda: ncd.Pad("x:6", -1, -2, out="z"), {},
       lambda p, x: x[0][..., 1:4], cod="z:3")
sample("pad", "reflect", lambda: ncd.Identity.of("c x y") >> ncd.Pad("x y", 2, 1, mode="reflect"), {"c": 2, "x": 4, "y": 3},
       lambda p, x: F.pad(x[0], (2, 1, 2, 1), mode="reflect"))
sample("pad", "replicate-1d", lambda: ncd.Identity.of("a b t") >> ncd.Pad("t", 3, 1, mode="replicate"),
       {"a": 2, "b": 3, "t": 4}, lambda p, x: F.pad(x[0].flatten(0, -2), (3, 1), mode="replicate").view(2, 2, 3, 8),
       batch=(2,))
sample("pad", "reflect-3d", lambda: ncd.Pad("x y z", 1, mode="reflect"), {"x": 2, "y": 3, "z": 2},
       lambda p, x: F.pad(x[0].unsqueeze(1), (1,) * 6, mode="reflect").squeeze(1))
sample("pad", "circular-torus", lambda: ncd.Identity.of("c x y") >> ncd.Pad("x y", (1, 2), (2, 0), mode="circular"),
       {"c": 2, "x": 4, "y": 3}, lambda p, x: F.pad(x[0], (2, 0, 1, 2), mode="circular"), cod="c x:x+3 y:y+2")
sample("pad", "circular-1d-woven", lambda: ncd.Identity.of("a t b") >> ncd.Pad("t", 3, 1, mode="circular"),
       {"a": 2, "t": 3, "b": 2},
       lambda p, x: F.pad(x[0].transpose(-1, -2).reshape(-1, 2, 3), (3, 1), mode="circular").view(*x[0].shape[:-2], 2, 7)
       .transpose(-1, -2))
sample("pad", "circular-3d", lambda: ncd.Pad("x y z", 1, 2, mode="circular"), {"x": 2, "y": 3, "z": 2},
       lambda p, x: F.pad(x[0].reshape(-1, 1, 2, 3, 2), (1, 2) * 3, mode="circular").view(*x[0].shape[:-3], 5, 6, 5))
error("pad", "mode", lambda: ncd.Pad("x", 1, mode="wrap"), r"pad of 'x': unknown mode 'wrap'", ParseError)
error("pad", "circular-twice-around", lambda: ncd.Pad("x:3", 4, 0, mode="circular"),
      r"circular padding of axis x of size 3 by 4 and 0 would wrap around more than once", SizeError)
error("pad", "reflect-too-far", lambda: ncd.Pad("x:3", 3, mode="reflect"),
      r"reflect padding of axis x of size 3 by 3 and 3 must be smaller than the axis", SizeError)
error("pad", "nothing-left", lambda: ncd.Pad("x:3", -2, -1), r"axis x of size 3 padded by -2 and -1 leaves nothing", SizeError)
error("pad", "wrong-out", lambda: ncd.Identity.of("x:3") >> ncd.Box.make(
    ncd.Pad("x", 1).prim.__class__(parse_segment("x:3"), (1,), (1,), "constant", 0.0, parse_segment("z:4"))),
    r"the output 'z:4' must have the padded sizes 'x:5'", SizeError)


def _pad_vjp(g: torch.Tensor, pads: tuple[int, ...], mode: str, shape: tuple[int, ...]) -> torch.Tensor:
    """The transpose of ``F.pad`` by autograd: the gradient of <pad(x), g> with respect to x."""
    x = torch.zeros(*g.shape[:-len(shape)], *shape, requires_grad=True)
    flat = x.reshape(-1, *shape)
    (grad,) = torch.autograd.grad(F.pad(flat, pads, mode=mode), x, g.reshape(-1, *g.shape[-len(shape):]), create_graph=True)
    return grad


sample("pad_transpose", "reflect-2d", lambda: Box(PadTransposeOp(parse_segment("x:4 y:3"), (2, 1), (1, 0), "reflect")), {},
       lambda p, x: _pad_vjp(x[0], (1, 0, 2, 1), "reflect", (4, 3)), dom="x:7 y:4", cod="x:4 y:3")
sample("pad_transpose", "replicate-woven", lambda: ncd.Identity.of("c t:6") >> Box(
       PadTransposeOp(parse_segment("t:3"), (2,), (1,), "replicate")), {"c": 2},
       lambda p, x: _pad_vjp(x[0], (2, 1), "replicate", (3,)), cod="c t:3")
sample("pad_transpose", "circular-2d", lambda: Box(PadTransposeOp(parse_segment("x:4 y:3"), (2, 1), (1, 3), "circular")),
       {}, lambda p, x: _pad_vjp(x[0], (1, 3, 2, 1), "circular", (4, 3)), dom="x:7 y:7", cod="x:4 y:3")
sample("pad_transpose", "circular-woven", lambda: ncd.Identity.of("c t:6") >> Box(
       PadTransposeOp(parse_segment("t:3"), (0,), (3,), "circular")), {"c": 2},
       lambda p, x: _pad_vjp(x[0], (0, 3), "circular", (3,)), cod="c t:3")
error("pad_transpose", "constant", lambda: PadTransposeOp(parse_segment("x:4"), (1,), (1,), "constant"),
      r"the transpose of a constant pad is a crop", ParseError)

# -- cumsum ----------------------------------------------------------------------------------
sample("cumsum", "tokens", lambda: ncd.Identity.of("b t m") >> ncd.CumSum("t"), {"b": 2, "t": 5, "m": 3},
       lambda p, x: torch.cumsum(x[0], -2), cod="b t m")
sample("cumsum", "reverse", lambda: ncd.Identity.of("t m") >> ncd.CumSum("m", reverse=True), {"t": 2, "m": 4},
       lambda p, x: torch.cumsum(x[0].flip(-1), -1).flip(-1))


def _mask(sizes: dict[str, int]) -> tuple[torch.Tensor, ...]:
    return (torch.rand(2, sizes["e"], sizes["t"]) < 0.5,)


sample("cumsum", "router-counts", lambda: ncd.Identity.of("e t [bool]") >> ncd.CumSum("t [bool]"), {"e": 3, "t": 6},
       lambda p, x: torch.cumsum(x[0], -1), inputs=_mask, cod="e t [t + 1]")
error("cumsum", "two-axes", lambda: ncd.CumSum("t m"), r"cumsum runs along one axis, not 't m'", ParseError)
error("cumsum", "reverse-index", lambda: ncd.CumSum("t [4]", reverse=True), r"only float sums run in reverse", ParseError)

# -- running products, log-sum-exps, maxima and minima---------------------------------------------------
from ncd.prims.cumulative import Cumulative, CumulativeBackwardOp, CumulativeOp  # noqa: E402

sample("cumulative", "prod-woven", lambda: ncd.Identity.of("a t b") >> Cumulative("t", "prod"), {"a": 2, "t": 5, "b": 3},
       lambda p, x: torch.cumprod(x[0], -2), atol=1e-4)
sample("cumulative", "logsumexp", lambda: ncd.Identity.of("b t") >> Cumulative("t", "logsumexp"), {"b": 2, "t": 6},
       lambda p, x: torch.logcumsumexp(x[0], -1), atol=1e-4)
for _fn in ("max", "min"):
    sample("cumulative", _fn, lambda fn=_fn: ncd.Identity.of("a t b") >> Cumulative("t", fn), {"a": 2, "t": 6, "b": 3},
           lambda p, x, fn=_fn: getattr(torch, f"cum{fn}")(x[0], -2).values)
    sample("cumulative", f"{_fn}-ties", lambda fn=_fn: ncd.Identity.of("b t") >> Cumulative("t", fn), {"b": 3, "t": 7},
           lambda p, x, fn=_fn: getattr(torch, f"cum{fn}")(x[0], -1).values,  # equal entries: torch's positions
           inputs=lambda sizes: (torch.randint(-2, 3, (2, 3, sizes["t"]), generator=torch.Generator().manual_seed(0))
                                 .float(),))
error("cumulative", "function", lambda: Cumulative("t", "median"), r"running 'median': known running functions are prod,"
      r" logsumexp, max, min", ParseError)
error("cumulative", "axes", lambda: Cumulative("t h", "prod"), r"running prod runs along one float axis, not 't h'", ParseError)


def _running(function: str, x: torch.Tensor) -> torch.Tensor:
    if function in ("max", "min"):
        return getattr(torch, f"cum{function}")(x, -1).values  # type: ignore[no-any-return]
    return torch.cumprod(x, -1) if function == "prod" else torch.logcumsumexp(x, -1)


def _running_vjp(function: str):  # type: ignore[no-untyped-def]
    def vjp(p: object, x: tuple[torch.Tensor, ...]) -> torch.Tensor:
        a = x[0].detach().requires_grad_()
        (dx,) = torch.autograd.grad(_running(function, a), a, x[2])
        return dx
    return vjp


def _running_inputs(function: str):  # type: ignore[no-untyped-def]
    def make(sizes: dict[str, int]) -> tuple[torch.Tensor, ...]:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(3, sizes["t"], generator=gen)
        x[0, 2] = 0.0  # a zero entry: the product's gradient is still exact
        if function in ("max", "min"):  # equal entries: the gradient goes where torch's positions say
            x = x.round()
        return x, _running(function, x), torch.randn(3, sizes["t"], generator=gen)
    return make


for _fn in ("prod", "logsumexp", "max", "min"):
    sample("cumulative_backward", _fn, lambda fn=_fn: Box.make(CumulativeBackwardOp(parse_segment("t"), fn)), {"t": 5},
           _running_vjp(_fn), dom="t, t, t", cod="t", inputs=_running_inputs(_fn), grad=False, atol=1e-4)
error("cumulative_backward", "function", lambda: CumulativeBackwardOp(parse_segment("t"), "median"),
      r"running 'median'", ParseError)
_ = CumulativeOp
