"""Samples for dropout."""

from __future__ import annotations

import ncd
from ncd.errors import ParseError
from tests.opdb import error, sample

sample("dropout", "eval-identity", lambda: ncd.Identity.of("a b") >> ncd.Dropout(0.3), {"a": 3, "b": 4},
       lambda p, x: x[0], cod="a b")
sample("dropout", "train-p1", lambda: ncd.Identity.of("a b") >> ncd.Dropout(1.0), {"a": 3, "b": 4},
       lambda p, x: x[0] * 0.0, train=True)
error("dropout", "p", lambda: ncd.Dropout(1.5), r"p must lie in \[0, 1\], not 1.5", ParseError)
