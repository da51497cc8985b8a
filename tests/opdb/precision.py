"""Samples for a wire held in an element type (``ncd.prims.precision``), against torch's own casts (the integer types
are checked against the decoding policy's quantisation in tests/test_decode.py)."""

from __future__ import annotations

import torch

from ncd.errors import ParseError
from ncd.prims.precision import Precision
from tests.opdb import error, sample

sample("precision", "bfloat16", lambda: Precision("x k g", "bfloat16"), {"x": 3, "k": 4, "g": 2},
       lambda p, x: x[0].to(torch.bfloat16).to(x[0].dtype), atol=0.0)
sample("precision", "float8", lambda: Precision("x k", "float8", per="x"), {"x": 3, "k": 4},
       lambda p, x: x[0].to(torch.float8_e4m3fn).to(x[0].dtype), atol=0.0)
error("precision", "unknown", lambda: Precision("x k", "int3"), r"precision of 'x k': unknown element type 'int3'", ParseError)
error("precision", "scale-axis", lambda: Precision("x k", "int8", per="t"),
      r"precision of 'x k': the scale axis 't' is not one of its wires", ParseError)
