"""Samples for the causal and padding masks."""

from __future__ import annotations

import torch

import ncd
from ncd.errors import ParseError, SizeError, TypeMismatchError
from tests.opdb import error, sample


def causal_reference(scores: torch.Tensor, query_dim: int, key_dim: int, window: int | None = None,
                     lower_right: bool = False) -> torch.Tensor:
    rows, cols = scores.shape[query_dim], scores.shape[key_dim]
    query = torch.arange(rows).view(-1, *([1] * (-query_dim - 1))) + (cols - rows if lower_right else 0)
    key = torch.arange(cols).view(-1, *([1] * (-key_dim - 1)))
    blocked = (key > query) | ((key <= query - window) if window is not None else False)
    return scores.masked_fill(blocked, float("-inf"))


sample("causal_mask", "heads-last", lambda: ncd.Identity.of("y x h") >> ncd.CausalMask("y", "x") >> ncd.Softmax("x"),
       {"y": 4, "x": 5, "h": 2}, lambda p, x: torch.softmax(causal_reference(x[0], -3, -2), dim=-2), cod="y x h")
sample("causal_mask", "plain", lambda: ncd.CausalMask("y", "x"), {"y": 3, "x": 3},
       lambda p, x: causal_reference(x[0], -2, -1), grad=False)
sample("causal_mask", "sliding-window", lambda: ncd.Identity.of("y x h") >> ncd.CausalMask("y", "x", window=2),
       {"y": 5, "x": 5, "h": 2}, lambda p, x: causal_reference(x[0], -3, -2, window=2), grad=False)
sample("causal_mask", "sliding-window-softmax",
       lambda: ncd.Identity.of("y x h") >> ncd.CausalMask("y", "x", window=3) >> ncd.Softmax("x"),
       {"y": 6, "x": 6, "h": 2}, lambda p, x: torch.softmax(causal_reference(x[0], -3, -2, window=3), dim=-2), cod="y x h")
sample("causal_mask", "lower-right", lambda: ncd.Identity.of("y x h") >> ncd.CausalMask("y", "x", lower_right=True)
       >> ncd.Softmax("x"), {"y": 3, "x": 5, "h": 2},
       lambda p, x: torch.softmax(causal_reference(x[0], -3, -2, lower_right=True), dim=-2), cod="y x h")
sample("causal_mask", "lower-right-window",
       lambda: ncd.Identity.of("y x h") >> ncd.CausalMask("y", "x", window=2, lower_right=True) >> ncd.Softmax("x"),
       {"y": 3, "x": 6, "h": 2}, lambda p, x: torch.softmax(causal_reference(x[0], -3, -2, 2, True), dim=-2), cod="y x h")
error("causal_mask", "window", lambda: ncd.CausalMask("y", "x", window=0), r"the window 0 must be a whole number >= 1",
      SizeError)
error("causal_mask", "same-axis", lambda: ncd.CausalMask("x", "x"), r"query and key axes must differ, both are 'x'", ParseError)


def padded(sizes: dict[str, int], shape: tuple[int, ...], mask_shape: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(mask_shape, generator=g) > 0.4
    mask[..., 0] = True  # every query keeps at least one key
    return torch.randn(shape, generator=g), mask


sample("padding_mask", "shared-over-heads", lambda: ncd.Identity.of("h y x, x [bool]") >> ncd.PaddingMask("x")
       >> ncd.Softmax("x"), {"h": 2, "y": 3, "x": 5},
       lambda p, x: torch.softmax(x[0].masked_fill(~x[1][..., None, None, :], float("-inf")), dim=-1),
       inputs=lambda s: padded(s, (2, 2, 3, 5), (2, 5)), cod="h y x")
sample("padding_mask", "keys-first", lambda: ncd.Identity.of("x y, x [bool]") >> ncd.PaddingMask("x") >> ncd.Softmax("x"),
       {"y": 3, "x": 5}, lambda p, x: torch.softmax(x[0].masked_fill(~x[1][..., :, None], float("-inf")), dim=-2),
       inputs=lambda s: padded(s, (2, 5, 3), (2, 5)))
error("padding_mask", "float-mask", lambda: ncd.Identity.of("y x, x") >> ncd.PaddingMask("x"),
      r"segment 1 holds float values but bool values are expected", TypeMismatchError)
