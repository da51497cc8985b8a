"""Samples for the elementwise functions added for the importer (one per row of ``ROWS``; references are torch's own)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import ncd
from ncd.errors import ParseError
from tests.opdb import error, sample

REFS = {
    "rsqrt": torch.rsqrt, "reciprocal": torch.reciprocal, "softplus": F.softplus, "mish": F.mish, "hardswish": F.hardswish,
    "hardsigmoid": F.hardsigmoid, "relu6": F.relu6, "leaky_relu": F.leaky_relu, "elu": F.elu, "erf": torch.erf,
    "sin": torch.sin, "cos": torch.cos, "log1p": torch.log1p, "log2": torch.log2, "expm1": torch.expm1,
    "acos": torch.acos, "log_sigmoid": F.logsigmoid, "celu": F.celu, "selu": F.selu, "hardtanh": F.hardtanh,
    "sign": torch.sign, "trunc": torch.trunc, "round": torch.round, "frac": torch.frac,
    "floor": torch.floor, "ceil": torch.ceil, "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
}
#: functions defined on positive numbers only: sampled after exp (so the input is any real number)
POSITIVE = {"rsqrt", "reciprocal", "log1p", "log2"}
#: functions defined on (-1, 1) only: sampled after a scaled tanh
BOUNDED = {"acos"}
for fn, ref in REFS.items():
    if fn in BOUNDED:
        sample("elementwise", fn, lambda fn=fn: ncd.Identity.of("a b") >> ncd.Tanh() >> ncd.Scale(0.9) >> ncd.elementwise(fn),
               {"a": 3, "b": 4}, lambda p, x, ref=ref: ref(0.9 * torch.tanh(x[0])), dom="a b", cod="a b", atol=1e-4)
    elif fn in POSITIVE:
        sample("elementwise", fn, lambda fn=fn: ncd.Identity.of("a b") >> ncd.Exp() >> ncd.elementwise(fn), {"a": 3, "b": 4},
               lambda p, x, ref=ref: ref(torch.exp(x[0])), dom="a b", cod="a b", atol=1e-4)
    else:
        # scaled by 4 so that the piecewise functions (hardswish, relu6, ...) meet every piece
        sample("elementwise", fn, lambda fn=fn: ncd.Identity.of("a b") >> ncd.Scale(4) >> ncd.elementwise(fn),
               {"a": 3, "b": 4}, lambda p, x, ref=ref: ref(4 * x[0]), dom="a b", cod="a b", atol=1e-4)

#: functions with numeric arguments: (row, its arguments, torch's call with them)
WITH_ARGS = [
    ("leaky_relu", (0.2,), lambda x: F.leaky_relu(x, 0.2)),
    ("leaky_relu", (-0.3,), lambda x: F.leaky_relu(x, -0.3)),
    ("elu", (0.5,), lambda x: F.elu(x, 0.5)),
    ("celu", (0.5,), lambda x: F.celu(x, 0.5)),
    ("softplus", (2.0, 3.0), lambda x: F.softplus(x, 2.0, 3.0)),
    ("softplus", (0.5, 20.0), lambda x: F.softplus(x, 0.5)),
    ("hardtanh", (-0.5, 2.0), lambda x: F.hardtanh(x, -0.5, 2.0)),
]
for fn, args, ref in WITH_ARGS:
    # scaled by 4 so that every piece (and softplus's threshold) is met
    sample("elementwise", f"{fn}-{'-'.join(map(str, args))}",
           lambda fn=fn, args=args: ncd.Identity.of("a b") >> ncd.Scale(4) >> ncd.elementwise(fn, *args),
           {"a": 3, "b": 4}, lambda p, x, ref=ref: ref(4 * x[0]), dom="a b", cod="a b", atol=1e-4)
error("elementwise", "args-count", lambda: ncd.elementwise("leaky_relu", 0.1, 0.2),
      r"elementwise leaky_relu takes 1 argument\(s\) \(negative_slope\), not 2", ParseError)
error("elementwise", "args-none", lambda: ncd.elementwise("relu", 0.1), r"elementwise relu takes 0 argument\(s\) \(none\)",
      ParseError)
error("elementwise", "args-finite", lambda: ncd.elementwise("elu", float("nan")), r"elementwise elu: arguments must be finite",
      ParseError)
