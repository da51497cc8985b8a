"""Samples for tensors that take no input: sinusoidal positions and learned tensors."""

from __future__ import annotations

import math

import torch

import ncd
from ncd.errors import LoweringError, ParseError
from tests.opdb import error, sample


def sinusoid(t: int, m: int) -> torch.Tensor:
    """Written out from the formula in *Attention Is All You Need*, entry by entry."""
    pe = torch.empty(t, m)
    for pos in range(t):
        for i in range(0, m, 2):
            angle = pos / (10000 ** (i / m))
            pe[pos, i] = math.sin(angle)
            pe[pos, i + 1] = math.cos(angle)
    return pe


sample("sinusoidal", "add-to-tokens", lambda: (ncd.Identity.of("t m") @ ncd.Sinusoidal("t m")) >> ncd.Add(),
       {"t": 5, "m": 6}, lambda p, x: x[0] + sinusoid(5, 6), cod="t m")
error("sinusoidal", "three-axes", lambda: ncd.Sinusoidal("t m k"), r"exactly two axes \(position, feature\), not 't m k'",
      ParseError)
error("sinusoidal", "odd", lambda: ncd.Sinusoidal("t m").to_torch(t=3, m=5), r"feature axis m has odd size 5", LoweringError)
sample("parameter", "learned-positions", lambda: (ncd.Identity.of("t m") @ ncd.Parameter("t m", name="P")) >> ncd.Add(),
       {"t": 4, "m": 3}, lambda p, x: x[0] + next(v for k, v in p.items() if k.endswith("p")), cod="t m")
error("parameter", "empty", lambda: ncd.Parameter(""), r"takes one segment with at least one axis", ParseError)
