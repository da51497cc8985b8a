"""Samples for arithmetic between two integer tensors and one-hot rows (``ncd.prims.integer``); references: torch."""

from __future__ import annotations

import math

import torch

import ncd
from ncd.errors import ParseError, SizeError
from ncd.prims.arithmetic import Arithmetic
from ncd.prims.integer import Any, AnyOp, Bucket, IndexArithmetic, IndexUnary, OneHot
from tests.opdb import error, sample

# RoBERTa's position ids: the running count of real tokens times the mask (the mask broadcast from b t over nothing)
sample("index_arithmetic", "times-mask", lambda: ncd.Identity.of("b t [8], b t [2]") >> IndexArithmetic("*", "[8]", "[2]"),
       {"b": 2, "t": 5}, lambda p, x: x[0] * x[1], cod="b t [8]")
sample("index_arithmetic", "difference-broadcast",
       lambda: ncd.Identity.of("b t [5], t [3]") >> IndexArithmetic("-", "[5]", "[3]"),
       {"b": 2, "t": 5}, lambda p, x: x[0] - x[1].unsqueeze(-2), cod="b t [5]")


def _two(operator: str, target: str | None = None) -> ncd.Diagram:
    """``a ∘ (b + 1)``: a divisor of at least 1 (integer division by zero raises)."""
    divisor = ncd.Identity.of("b [3]") >> Arithmetic("+", 1, "[3]", "[4]")
    return ncd.Identity.of("b [9]") @ divisor >> IndexArithmetic(operator, "[9]", "[4]", target)


sample("index_arithmetic", "floor-divide", lambda: _two("//"), {"b": 6}, lambda p, x: x[0] // (x[1] + 1), cod="b [9]")
sample("index_arithmetic", "true-divide", lambda: _two("/", ""), {"b": 6}, lambda p, x: x[0] / (x[1] + 1), cod="b", grad=False)
sample("index_arithmetic", "remainder", lambda: _two("%"), {"b": 6}, lambda p, x: x[0] % (x[1] + 1), cod="b [3]")
sample("index_arithmetic", "maximum-bool", lambda: ncd.Identity.of("b [bool], b [3]") >> IndexArithmetic("max", "bool", "[3]"),
       {"b": 6}, lambda p, x: torch.maximum(x[0], x[1]), cod="b [3]")
# bitwise and, or, exclusive or of two integer tensors (ranges: the power of two past both, and one)
for _op, _ref in (("&", torch.bitwise_and), ("|", torch.bitwise_or), ("^", torch.bitwise_xor)):
    sample("index_arithmetic", f"bitwise-{_op}", lambda _op=_op: ncd.Identity.of("b t [9], t [6]")
           >> IndexArithmetic(_op, "[9]", "[6]"), {"b": 2, "t": 5},
           lambda p, x, _ref=_ref: _ref(x[0], x[1].unsqueeze(-2)), cod="b t [17]")
error("index_arithmetic", "float-operand", lambda: IndexArithmetic("+", "", "[3]", "[3]"),
      r"index arithmetic \+: the left operand '\(\)' must be a scalar index or bool segment", ParseError)
error("index_arithmetic", "operator", lambda: IndexArithmetic("<<", "[3]", "[3]", "[3]"),
      r"index arithmetic: unknown operator '<<'", ParseError)
error("index_arithmetic", "float-result", lambda: IndexArithmetic("+", "[3]", "[3]", ""),
      r"index arithmetic \+: the result '\(\)' must be a scalar index segment \(a float for '/'\)", ParseError)
error("index_arithmetic", "no-range", lambda: IndexArithmetic("+", "[n]", "[3]"),
      r"index arithmetic \+: the operands '\[n\]', '\[3\]' bound no range; give the target", ParseError)
# T5's relative-position buckets: |j - i| and -(j - i) of differences of positions, negative ones among them
sample("index_unary", "abs-differences", lambda: ncd.Identity.of("b t [9]") >> IndexUnary("abs", "[9]"), {"b": 2, "t": 5},
       lambda p, x: torch.abs(x[0]), cod="b t [9]", inputs=lambda s: (torch.randint(-8, 9, (2, 2, 5)),))
sample("index_unary", "neg-differences", lambda: ncd.Identity.of("b t [9]") >> IndexUnary("neg", "[9]"), {"b": 2, "t": 5},
       lambda p, x: -x[0], cod="b t [9]", inputs=lambda s: (torch.randint(-8, 9, (2, 2, 5)),))
error("index_unary", "float-operand", lambda: IndexUnary("abs", ""),
      r"index unary abs: the operand '\(\)' must be a scalar index segment", ParseError)
error("index_unary", "function", lambda: IndexUnary("sign", "[3]"), r"index unary: unknown function 'sign'", ParseError)
def _t5_bucket(relative: torch.Tensor, buckets: int, distance: int) -> torch.Tensor:
    """T5's bidirectional ``_relative_position_bucket``, written out as transformers writes it."""
    buckets //= 2
    out = (relative > 0).to(torch.long) * buckets
    n = torch.abs(relative)
    exact = buckets // 2
    large = exact + (torch.log(n.float() / exact) / math.log(distance / exact) * (buckets - exact)).to(torch.long)
    large = torch.min(large, torch.full_like(large, buckets - 1))
    return out + torch.where(n < exact, n, large)


# LayoutLMv3's buckets of the distances between positions (32 buckets up to 128) and box coordinates (64 up to 256):
# near and far distances of both signs, past max_distance too (the last bucket of each sign)
sample("bucket", "positions", lambda: ncd.Identity.of("b t [300]") >> Bucket("[300]", 16, 8, math.log(16), 8, 15),
       {"b": 2, "t": 6}, lambda p, x: _t5_bucket(x[0], 32, 128), cod="b t [32]",
       inputs=lambda s: (torch.tensor([0, 1, -1, 7, -8, 9, -20, 127, -128, 200, -299, 3,
                                       8, -9, 16, -16, 63, -64, 128, -127, 299, 2, -2, 5]).reshape(2, 2, 6),))
sample("bucket", "coordinates-int32", lambda: ncd.Identity.of("b t [1001]") >> Bucket("[1001]", 32, 16, math.log(16), 16, 31),
       {"b": 2, "t": 5}, lambda p, x: _t5_bucket(x[0], 64, 256), cod="b t [64]",
       inputs=lambda s: (torch.randint(-1000, 1001, (2, 2, 5), dtype=torch.int32),))
error("bucket", "float-distances", lambda: Bucket("", 16, 8, math.log(16), 8, 15),
      r"bucket: the distances '\(\)' must be a scalar index segment with a range", ParseError)
error("bucket", "divisor", lambda: Bucket("[9]", 16, 8, 0.0, 8, 15), r"bucket: .*divisor 0.0 finite and positive", ParseError)
sample("one_hot", "router", lambda: ncd.Identity.of("t [4]") >> OneHot("e:4"), {"t": 5},
       lambda p, x: torch.nn.functional.one_hot(x[0], 4), cod="t e:4 [2]")
error("one_hot", "symbolic", lambda: OneHot("e"), r"one-hot along axis e: needs a whole-number size, not e", SizeError)
sample("any", "padding", lambda: ncd.Identity.of("b t [bool]") >> Any("t"), {"b": 3, "t": 4},
       lambda p, x: x[0].any(-1), cod="b [bool]")
sample("any", "all-woven-after", lambda: ncd.Identity.of("h w b [bool]") >> Any("h w", every=True), {"b": 3, "h": 2, "w": 2},
       lambda p, x: x[0].all(-2).all(-2), cod="b [bool]", inputs=lambda s: (torch.rand(2, 2, 2, 3) < 0.9,))
error("any", "floats", lambda: AnyOp(ncd.parse_type("t:3")[0]), r"any/all takes distinct axes of booleans, not 't:3'", ParseError)
