"""Samples for writing a source's entries at positions (``ScatterWrite``, against ``torch.scatter`` with a source)."""

from __future__ import annotations

import torch

import ncd
from ncd.errors import ParseError, SizeError
from ncd.prims.writes import Put, ScatterWrite
from tests.opdb import error, sample


def _rows(sizes: dict[str, int]) -> tuple[torch.Tensor, ...]:
    """Distinct positions per row (as a top-k gives them), with the harness' leading batch axis of 2."""
    g = torch.Generator().manual_seed(0)
    rows = [torch.randperm(sizes["t"], generator=g)[:sizes["j"]] for _ in range(2 * sizes["b"])]
    return (torch.randn(2, sizes["b"], sizes["t"], sizes["m"], generator=g), torch.stack(rows).reshape(2, sizes["b"], -1),
            torch.randn(2, sizes["b"], sizes["j"], sizes["m"], generator=g))


sample("scatter_write", "rows", lambda: ncd.Identity.of("b t m, b j [t], b j m") >> ScatterWrite("t", "j [t]"),
       {"b": 3, "t": 5, "j": 2, "m": 2},
       lambda p, x: x[0].scatter(-2, x[1][..., None].expand(*x[1].shape, 2), x[2]), inputs=_rows, cod="b t m")
error("scatter_write", "range", lambda: ScatterWrite("t:5", "[4]"), r"gather along axis t of size 5: the positions '\[4\]' must",
      SizeError)


def _repeated(sizes: dict[str, int]) -> tuple[torch.Tensor, ...]:
    """Positions that repeat (messages sent to one target add up), with the harness' leading batch axis of 2."""
    g = torch.Generator().manual_seed(0)
    return (torch.randn(2, sizes["b"], sizes["t"], sizes["m"], generator=g),
            torch.randint(0, sizes["t"], (2, sizes["b"], sizes["j"], sizes["m"]), generator=g),
            torch.randn(2, sizes["b"], sizes["j"], sizes["m"], generator=g))


sample("scatter_write", "sum-repeated", lambda: ncd.Identity.of("b t m, b j m [t], b j m")
       >> ScatterWrite("t", "j [t]", reduce="sum"), {"b": 3, "t": 4, "j": 6, "m": 2},
       lambda p, x: x[0].scatter_add(-2, x[1], x[2]), inputs=_repeated, cod="b t m")
sample("scatter_write", "sum", lambda: ncd.Identity.of("t, j [t], j") >> ScatterWrite("t", "j [t]", reduce="sum"),
       {"t": 4, "j": 3}, lambda p, x: x[0].scatter_add(-1, x[1], x[2]), cod="t")
error("scatter_write", "reduce", lambda: ScatterWrite("t", "j [t]", reduce="amax"), r"unknown reduction 'amax'; known: '', 'sum'",
      ParseError)


def _put_reference(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    out = x.clone()
    out[..., 1, 2:6:2, :] = v
    return out


sample("put", "region", lambda: ncd.Identity.of("b t:3 s:7 m, b s:2 m") >> Put("b, t:3 1, s:7 2:6:2, m"),
       {"b": 2, "m": 3}, lambda p, x: _put_reference(x[0], x[1]), cod="b t:3 s:7 m")
sample("put", "zeroed", lambda: ncd.Identity.of("t:5 m:4") >> Put("t:5 1:4, m:4 3", fill=0.0), {},
       lambda p, x: _put_reference_zero(x[0]), cod="t:5 m:4")


def _put_reference_zero(x: torch.Tensor) -> torch.Tensor:
    out = x.clone()
    out[..., 1:4, 3] = 0
    return out


error("put", "past", lambda: Put("t:5 3:7"), r"put into axis t of size 5: the region ends at entry 6, past its end",
      SizeError)
error("put", "step", lambda: Put("t:5 0:4:0"), r"put into axis t: the step 0 must be a positive whole number",
      SizeError)
