"""Samples for the run-time guard of a traced branch (ncd.prims.guard), against the identity it lets through."""

from __future__ import annotations

import sympy
import torch

import ncd
from ncd.errors import ParseError, TypeMismatchError
from ncd.ir.axes import Segment
from ncd.ir.diagram import Box
from ncd.prims.gather import CompareOp
from ncd.prims.guard import Guard
from ncd.prims.linear import EinsumOp
from tests.opdb import error, sample


def _holding(value: bool, dtype: torch.dtype = torch.bool) -> object:
    """A condition that holds: ``value`` everywhere, over the leading batch axis."""
    return lambda sizes: (torch.full((2,), int(value), dtype=dtype),)


# a condition that holds on every input drawn: ``if x.sum() < 1e6:`` (the batch's every entry, lowered)
sample("guard", "a-sum", lambda: ncd.Copy("m") >> (ncd.Identity.of("m") @ (
       Box(EinsumOp(ncd.Identity.of("m").dom, Segment(()))) >> Box(CompareOp("<", 1e6, Segment(())))
       >> Guard(expected=True, line="model.py:12"))), {"m": 3}, lambda p, x: x[0], cod="m")
sample("guard", "an-index", lambda: Guard(Segment((), "index", sympy.Integer(5)), expected=True), {}, lambda p, x: (),
       inputs=_holding(True, torch.int64), grad=False)
error("guard", "float-condition", lambda: ncd.Identity.of("m") >> Guard(expected=True), r"bool", TypeMismatchError)
error("guard", "a-number", lambda: Guard(Segment(()), expected=True), r"a guard reads one bool or index entry",
      ParseError)
error("guard", "line", lambda: Guard(expected=True, line="x'); import os; ('"), r"a guard's line is a file name",
      ParseError)
