"""Samples for the rotary position embedding, against an independent reference written from RoFormer's formula
(pairs rotated as complex numbers, HF's half-split convention)."""

from __future__ import annotations

import torch

import ncd
from ncd.errors import ParseError, SizeError
from ncd.prims.rotary import Rotary
from tests.opdb import error, sample


def rotate(x: torch.Tensor, base: float = 10000.0, scale: float = 1.0, sign: float = 1.0, offset: int = 0,
           theta: tuple[float, ...] = ()) -> torch.Tensor:
    """``(x_j + i x_{j+k/2}) · e^{± i p θ_j}`` at position ``p`` (the second-to-last dimension, from ``offset``), in float64;
    ``θ_j = base^(-2j/k)`` unless ``theta`` is given."""
    t, k = x.shape[-2], x.shape[-1]
    theta_j = torch.tensor(theta, dtype=torch.float64) if theta else \
        base ** (-torch.arange(0, k // 2, dtype=torch.float64) * 2 / k)
    angle = sign * torch.arange(offset, offset + t, dtype=torch.float64)[:, None] * theta_j[None, :]
    z = torch.complex(x[..., : k // 2].double(), x[..., k // 2:].double()) * torch.polar(torch.full_like(angle, scale), angle)
    return torch.cat((z.real, z.imag), dim=-1).to(x.dtype)


sample("rotary", "one-head", lambda: Rotary("k", "t"), {"t": 5, "k": 8}, lambda p, x: rotate(x[0]), atol=1e-4)
sample("rotary", "heads-woven", lambda: ncd.Identity.of("b h t k") >> Rotary("k", "t"), {"b": 2, "h": 3, "t": 6, "k": 4},
       lambda p, x: rotate(x[0]), atol=1e-4)
sample("rotary", "base-scale", lambda: ncd.Identity.of("t k h") >> Rotary("k", "t", base=500.0, scale=0.5),
       {"t": 7, "k": 6, "h": 2}, lambda p, x: rotate(x[0].movedim(-1, -3), 500.0, 0.5).movedim(-3, -1), atol=1e-4)
sample("rotary", "inverse", lambda: ncd.Identity.of("b t k") >> Rotary("k", "t", base=100.0, scale=2.0, inverse=True),
       {"b": 2, "t": 5, "k": 6}, lambda p, x: rotate(x[0], 100.0, 2.0, sign=-1.0), atol=1e-4)
sample("rotary", "offset", lambda: ncd.Identity.of("b t k") >> Rotary("k", "t", offset="c"),
       {"b": 2, "t": 1, "k": 6, "c": 9}, lambda p, x: rotate(x[0], offset=9), atol=1e-4)
sample("rotary", "frequencies", lambda: ncd.Identity.of("b t k") >> Rotary("k", "t", frequencies=(1.0, 0.375, 0.0)),
       {"b": 2, "t": 6, "k": 6}, lambda p, x: rotate(x[0], theta=(1.0, 0.375, 0.0)), atol=1e-4)
error("rotary", "odd", lambda: Rotary("k:5", "t"), r"rotary on axis k of size 5: the feature axis must have an even size",
      SizeError)
error("rotary", "same-name", lambda: Rotary("k", "k"), r"rotary: the feature axis and the position axis are both named k",
      ParseError)
error("rotary", "base", lambda: Rotary("k:4", "t", base=-1.0), r"rotary on axis k: the base -1.0 must be a positive number",
      ParseError)
error("rotary", "inverse", lambda: Rotary("k:4", "t", inverse=1), r"rotary on axis k: inverse must be True or False, not 1",
      ParseError)
error("rotary", "offset", lambda: Rotary("k:4", "t", offset=-2), r"rotary on axis k: the position offset -2 must be a whole",
      SizeError)
error("rotary", "frequencies", lambda: Rotary("k:6", "t", frequencies=(1.0,)),
      r"rotary on axis k of size 6: 1 frequencies given, one per pair of the axis needs 3", SizeError)
error("rotary", "finite", lambda: Rotary("k:2", "t", frequencies=(float("nan"),)),
      r"rotary on axis k: the frequencies must be a tuple of finite numbers", ParseError)
