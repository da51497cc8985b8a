"""Samples for the elementwise functions added for the importer (one per row of ``ROWS``; references are torch's own)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import ncd
from tests.opdb import sample

REFS = {
    "rsqrt": torch.rsqrt, "reciprocal": torch.reciprocal, "softplus": F.softplus, "mish": F.mish, "hardswish": F.hardswish,
    "hardsigmoid": F.hardsigmoid, "relu6": F.relu6, "leaky_relu": F.leaky_relu, "elu": F.elu, "erf": torch.erf,
    "sin": torch.sin, "cos": torch.cos, "log1p": torch.log1p, "expm1": torch.expm1,
    "acos": torch.acos, "log_sigmoid": F.logsigmoid,
}
#: functions defined on positive numbers only: sampled after exp (so the input is any real number)
POSITIVE = {"rsqrt", "reciprocal", "log1p"}
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
