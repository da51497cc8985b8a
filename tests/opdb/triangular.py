"""Samples for the inverse of a unit lower-triangular matrix (ncd.prims.triangular), against torch.linalg.inv, and for
its backward, against torch.autograd."""

from __future__ import annotations

import torch

import ncd
from ncd.errors import ParseError
from ncd.prims.triangular import TriangularInverse, TriangularInverseBackward
from tests.opdb import error, sample


def _inverse(a: torch.Tensor) -> torch.Tensor:
    """``(1 + tril(a, -1))⁻¹`` of the last two dimensions, by the general inverse (not a triangular solve)."""
    return torch.linalg.inv(torch.eye(a.shape[-1]) + a.tril(-1))


sample("triangular_inverse", "matrix", lambda: TriangularInverse("i j:i"), {"i": 5}, lambda p, x: _inverse(x[0]),
       cod="i j:i")
sample("triangular_inverse", "woven-around", lambda: ncd.Identity.of("h i j:i c") >> TriangularInverse("i j:i"),
       {"h": 2, "i": 4, "c": 3}, lambda p, x: _inverse(x[0].movedim(-1, -3)).movedim(-3, -1), cod="h i j:i c")
error("triangular_inverse", "not-square", lambda: TriangularInverse("i:3 j:4"),
      r"a square matrix: 'i:3 j:4' has i:3 rows and j:4 columns", ParseError)
error("triangular_inverse", "one-axis", lambda: TriangularInverse("i"), r"over two axes \(rows, columns\), not 'i'",
      ParseError)


def _backward_inputs(sizes: dict[str, int]) -> tuple[torch.Tensor, ...]:
    """The stored inverse ``X`` of a random ``A`` (over a batch and ``h``) and a random cotangent of ``X``."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn((2, sizes["h"], sizes["i"], sizes["i"]), generator=g)  # a batch of 2 in front
    return _inverse(a), torch.randn(a.shape, generator=g)


def _autograd_backward(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``∂A`` by torch.autograd through the general inverse, at the ``A`` whose inverse is ``x``."""
    a = (torch.linalg.inv(x) - torch.eye(x.shape[-1])).requires_grad_()  # strictly lower triangular: 1 + A = x⁻¹
    (grad,) = torch.autograd.grad(_inverse(a), a, g)
    return grad


sample("triangular_inverse_backward", "batched", lambda: ncd.Identity.of("h i j:i, h i j:i")
       >> TriangularInverseBackward("i j:i"), {"h": 2, "i": 4}, lambda p, x: _autograd_backward(x[0], x[1]),
       inputs=_backward_inputs, grad=False, atol=1e-4, cod="h i j:i")
error("triangular_inverse_backward", "two-segments", lambda: TriangularInverseBackward("i j:i, i j:i"),
      r"takes one segment, not 'i j:i, i j:i'", ParseError)
