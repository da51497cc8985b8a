"""Samples for the entrywise maximum and minimum of two tensors (ncd.prims.extremum)."""

from __future__ import annotations

import torch

import ncd
from ncd.prims.extremum import Clamp, Maximum
from tests.opdb import error, sample


def _ties(sizes: dict[str, int]) -> tuple[torch.Tensor, ...]:
    """Two tensors equal in some entries (torch halves the gradient on a tie)."""
    a = torch.randn(2, sizes["a"], sizes["b"])
    b = torch.where(torch.rand(2, sizes["a"], sizes["b"]) < 0.3, a, torch.randn(2, sizes["a"], sizes["b"]))
    return a, b


sample("extremum", "maximum-with-ties", lambda: ncd.Identity.of("a b, a b") >> Maximum(), {"a": 2, "b": 3},
       lambda p, x: torch.maximum(x[0], x[1]), inputs=_ties)
sample("extremum", "minimum-broadcast", lambda: (ncd.Identity.of("t m") @ ncd.Identity.of("t")) >> Maximum(smaller=True),
       {"t": 3, "m": 4}, lambda p, x: torch.minimum(x[0], x[1][..., None]), cod="t m")
sample("extremum", "running-maximum", lambda: (ncd.Identity.of("m") @ ncd.Identity.of("t m")) >> Maximum(),
       {"t": 3, "m": 4}, lambda p, x: torch.maximum(x[0][..., None, :], x[1]).transpose(-1, -2), cod="m t")
error("extremum", "mismatch", lambda: ncd.Identity.of("a:2, a:3") >> Maximum(), r"axis a has size 2 .* and 3")


def _clamp_ties(sizes: dict[str, int]) -> tuple[torch.Tensor, ...]:
    """Rounded: x at a bound, bounds equal (then torch's clamp gives no gradient where x < lo), lo above hi."""
    gen = torch.Generator().manual_seed(0)
    return tuple(torch.randn(2, sizes["a"], sizes["b"], generator=gen).round() for _ in range(3))


sample("clamp", "with-ties", lambda: ncd.Identity.of("a b, a b, a b") >> Clamp(), {"a": 3, "b": 4},
       lambda p, x: torch.clamp(x[0], x[1], x[2]), inputs=_clamp_ties)
sample("clamp", "broadcast", lambda: ncd.Identity.of("t m, t, m") >> Clamp(), {"t": 3, "m": 4},
       lambda p, x: torch.clamp(x[0], x[1][..., None], x[2][..., None, :]), cod="t m")
error("clamp", "mismatch", lambda: ncd.Identity.of("a:2, a:3, a:2") >> Clamp(), r"axis a has size 2 .* and 3")
error("clamp", "two-operands", lambda: ncd.Identity.of("a b, a b") >> Clamp(),
      r"the first gives 2 segment\(s\), the second takes 3")
