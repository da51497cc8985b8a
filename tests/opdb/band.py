"""Samples for the triangle of a matrix (``ncd.prims.band``: ``tril``, ``triu``); references: torch."""

from __future__ import annotations

import ncd
from ncd.errors import ParseError
from ncd.prims.band import Band
from tests.opdb import error, sample

sample("band", "lower", lambda: ncd.Identity.of("b i j") >> Band("i j"), {"b": 2, "i": 3, "j": 4},
       lambda p, x: x[0].tril(), cod="b i j")
sample("band", "strict-lower", lambda: Band("i j:i", -1), {"i": 4}, lambda p, x: x[0].tril(-1))
sample("band", "upper-above", lambda: ncd.Identity.of("h i j") >> Band("i j", 1, upper=True), {"h": 2, "i": 4, "j": 3},
       lambda p, x: x[0].triu(1))
sample("band", "woven-after", lambda: ncd.Identity.of("i j c") >> Band("i j", upper=True), {"i": 3, "j": 3, "c": 2},
       lambda p, x: x[0].movedim(-1, 0).triu().movedim(0, -1))
error("band", "one-axis", lambda: Band("i"), r"band: give the two axes of a matrix", ParseError)
error("band", "same-axis", lambda: Band("i i"), r"the rows and columns must be two axes, both are 'i'", ParseError)
error("band", "diagonal", lambda: Band("i j", 0.5), r"the diagonal 0.5 is not a whole number", ParseError)  # type: ignore[arg-type]
