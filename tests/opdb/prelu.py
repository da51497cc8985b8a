"""Samples for PReLU (learned slopes per channel or one for all) and its transpose."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import ncd
from ncd.errors import ParseError
from ncd.ir.axes import parse_segment
from ncd.ir.diagram import Box
from ncd.prims.prelu import PReLUBackwardOp
from tests.opdb import error, sample
from tests.opdb.core import only

# scaled by 4 so that both sides of zero are met; the reference puts the channels at dim 1, as F.prelu wants
sample("prelu", "channels-first", lambda: ncd.Identity.of("c h w") >> ncd.PReLU("c"), {"c": 3, "h": 4, "w": 2},
       lambda p, x: F.prelu(x[0], only(p, "weight")))
sample("prelu", "channels-last", lambda: ncd.Identity.of("t c") >> ncd.PReLU("c"), {"t": 5, "c": 3},
       lambda p, x: F.prelu(x[0].transpose(1, 2), only(p, "weight")).transpose(1, 2))
sample("prelu", "channels-alone", lambda: ncd.PReLU("c"), {"c": 4},
       lambda p, x: F.prelu(x[0], only(p, "weight")))
sample("prelu", "one-slope", lambda: ncd.Identity.of("t m") >> ncd.PReLU(), {"t": 3, "m": 4},
       lambda p, x: F.prelu(x[0], only(p, "weight")))
error("prelu", "two-axes", lambda: ncd.PReLU("c h"), r"PReLU of 'c h': one channel axis or none, not 2", ParseError)
error("prelu", "segments", lambda: ncd.PReLU("c, h"), r"PReLU takes one segment, not 'c, h'", ParseError)


def _prelu_vjp(x: torch.Tensor, a: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """autograd's ∂x of F.prelu, and its per-entry slope gradient (summed over the batch it is the slopes' gradient)."""
    x = x.detach().requires_grad_()
    dx, = torch.autograd.grad(torch.where(x > 0, x, a * x), x, g)
    return dx, torch.where(x > 0, 0.0, x * g).detach()


def _inputs(sizes: dict[str, int]) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    c = sizes["c"]
    return torch.randn(3, c, generator=gen), torch.rand(c, generator=gen), torch.randn(3, c, generator=gen)


sample("prelu_backward", "channels", lambda: Box.make(PReLUBackwardOp(parse_segment("c"))), {"c": 4},
       lambda p, x: _prelu_vjp(*x), dom="c, c, c", cod="c, c", inputs=_inputs, grad=False)
error("prelu_backward", "two-axes", lambda: PReLUBackwardOp(parse_segment("c h")), r"PReLU of 'c h': one channel axis",
      ParseError)
