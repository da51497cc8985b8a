"""Samples for selection entry by entry (where) and the logic of boolean masks, against torch."""

from __future__ import annotations

import torch

import ncd
from ncd.errors import ParseError, TypeMismatchError
from ncd.prims.opaque import Constant
from tests.opdb import error, sample

# -- where ---------------------------------------------------------------------------------------
sample("where", "same-wires", lambda: ncd.Identity.of("t m [bool], t m, t m") >> ncd.Where(), {"t": 3, "m": 4},
       lambda p, x: torch.where(*x), cod="t m")
sample("where", "padding-mask", lambda: ncd.Identity.of("t m [bool], t m, m") >> ncd.Where(), {"t": 3, "m": 4},
       lambda p, x: torch.where(x[0], x[1], x[2][:, None, :]))
sample("where", "fill-number", lambda: ncd.Identity.of("t m [bool], t m") >> (ncd.Identity.of("t m [bool], t m") @ Constant(
       "", value=0.5)) >> ncd.Where(), {"t": 3, "m": 4}, lambda p, x: torch.where(x[0], x[1], 0.5), cod="t m")
error("where", "float-condition", lambda: ncd.Identity.of("t m, t m, t m") >> ncd.Where(), r"bool", TypeMismatchError)

# -- logic -----------------------------------------------------------------------------------------
for _op, _fn in (("and", torch.logical_and), ("or", torch.logical_or), ("xor", torch.logical_xor)):
    sample("logic", _op, lambda op=_op: ncd.Identity.of("t m [bool], m [bool]") >> ncd.Logic(op), {"t": 3, "m": 4},
           lambda p, x, fn=_fn: fn(x[0], x[1][:, None, :]), cod="t m [bool]")
sample("logic", "not", lambda: ncd.Identity.of("t m [bool]") >> ncd.Logic("not"), {"t": 3, "m": 4},
       lambda p, x: ~x[0], cod="t m [bool]")
error("logic", "operator", lambda: ncd.Logic("nand"), r"logic: unknown operator 'nand'", ParseError)  # type: ignore[arg-type]
error("logic", "float", lambda: ncd.Identity.of("t") >> ncd.Logic("not"), r"bool", TypeMismatchError)
