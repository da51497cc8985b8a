"""Samples for the inverse of a unit lower-triangular matrix (ncd.prims.triangular), against torch.linalg.inv."""

from __future__ import annotations

import torch

import ncd
from ncd.errors import ParseError
from ncd.prims.triangular import TriangularInverse
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
