"""Samples for counting flags and summing positions along an axis (``ncd.prims.counting``); references: torch."""

from __future__ import annotations

import ncd
from ncd.errors import ParseError
from ncd.prims.counting import Count
from tests.opdb import error, sample

sample("count", "flags", lambda: ncd.Identity.of("b t [bool]") >> Count("t [bool]"), {"b": 3, "t": 5},
       lambda p, x: x[0].sum(-1), cod="b [t + 1]")
sample("count", "positions-woven-after", lambda: ncd.Identity.of("t c [4]") >> Count("t [4]"), {"t": 3, "c": 2},
       lambda p, x: x[0].sum(-2), cod="c [3*t + 1]")
error("count", "floats", lambda: Count("t"), r"count: sums flags or positions over one axis", ParseError)
error("count", "two-axes", lambda: Count("a b [bool]"), r"count: sums flags or positions over one axis", ParseError)
