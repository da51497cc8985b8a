"""Samples for layer, RMS and batch normalisation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import ncd
from ncd.errors import LoweringError, ParseError, TypeMismatchError
from tests.opdb import error, sample


def param(params: dict[str, torch.Tensor], suffix: str) -> torch.Tensor:
    hits = [v for k, v in params.items() if k.endswith(suffix)]
    assert len(hits) == 1, (suffix, list(params))
    return hits[0]


def rms_reference(x: torch.Tensor, weight: torch.Tensor | None, dims: tuple[int, ...], eps: float) -> torch.Tensor:
    y = x * torch.rsqrt(x.pow(2).mean(dim=dims, keepdim=True) + eps)
    return y if weight is None else y * weight


# -- layernorm -----------------------------------------------------------------------------
sample("layernorm", "tokens", lambda: ncd.Identity.of("b t m") >> ncd.LayerNorm("m"), {"b": 2, "t": 3, "m": 8},
       lambda p, x: F.layer_norm(x[0], (8,), param(p, "weight"), param(p, "bias")), cod="b t m")
sample("layernorm", "several-axes", lambda: ncd.Identity.of("c x y") >> ncd.LayerNorm("c x y", eps=1e-3),
       {"c": 2, "x": 3, "y": 4}, lambda p, x: F.layer_norm(x[0], (2, 3, 4), param(p, "weight"), param(p, "bias"), eps=1e-3))
sample("layernorm", "woven-after", lambda: ncd.Identity.of("m h") >> ncd.LayerNorm("m"), {"m": 5, "h": 3},
       lambda p, x: F.layer_norm(x[0].transpose(-1, -2), (5,), param(p, "weight"), param(p, "bias")).transpose(-1, -2),
       cod="m h")
sample("layernorm", "no-bias", lambda: ncd.Identity.of("t m") >> ncd.LayerNorm("m", bias=False), {"t": 3, "m": 6},
       lambda p, x: F.layer_norm(x[0], (6,), param(p, "weight")))
sample("layernorm", "no-affine", lambda: ncd.LayerNorm("m", affine=False), {"m": 6},
       lambda p, x: F.layer_norm(x[0], (6,)))
error("layernorm", "segments", lambda: ncd.LayerNorm("m, n"), r"axes 'm, n' must be one segment", ParseError)
error("layernorm", "missing-axis", lambda: ncd.Identity.of("b t m") >> ncd.LayerNorm("k"),
      r"axis k of the second is not in segment 0 \('b t m'\)", TypeMismatchError)

# -- rmsnorm -------------------------------------------------------------------------------
sample("rmsnorm", "hand-written", lambda: ncd.Identity.of("b t m") >> ncd.RMSNorm("m"), {"b": 2, "t": 3, "m": 8},
       lambda p, x: rms_reference(x[0], param(p, "weight"), (-1,), 1e-6))
sample("rmsnorm", "torch", lambda: ncd.Identity.of("t m h") >> ncd.RMSNorm("m h", eps=1e-5), {"t": 3, "m": 4, "h": 2},
       lambda p, x: F.rms_norm(x[0], (4, 2), param(p, "weight"), eps=1e-5))
sample("rmsnorm", "woven-after", lambda: ncd.Identity.of("m h") >> ncd.RMSNorm("m", affine=False), {"m": 5, "h": 3},
       lambda p, x: rms_reference(x[0], None, (-2,), 1e-6))
sample("rmsnorm", "offset", lambda: ncd.Identity.of("b t m") >> ncd.RMSNorm("m", offset=1.0), {"b": 2, "t": 3, "m": 8},
       lambda p, x: rms_reference(x[0], None, (-1,), 1e-6) * (1.0 + param(p, "weight")))  # Gemma's zero-centred scale
sample("rmsnorm", "offset-several-axes", lambda: ncd.Identity.of("t m h") >> ncd.RMSNorm("m h", eps=1e-5, offset=-0.5),
       {"t": 3, "m": 4, "h": 2}, lambda p, x: F.rms_norm(x[0], (4, 2), eps=1e-5) * (param(p, "weight") - 0.5))
error("rmsnorm", "offset-without-weight", lambda: ncd.RMSNorm("m", affine=False, offset=1.0),
      r"rmsnorm: an offset 1.0 is added to the learned weight; without a weight \(affine=False\)", ParseError)
error("rmsnorm", "offset-infinite", lambda: ncd.RMSNorm("m", offset=float("inf")),
      r"rmsnorm: offset must be a finite number, not inf", ParseError)
error("rmsnorm", "eps", lambda: ncd.RMSNorm("m", eps=-1.0), r"rmsnorm: eps must be a finite non-negative number, not -1.0",
      ParseError)

# -- batchnorm -----------------------------------------------------------------------------
def batchnorm_reference(training: bool):
    def reference(p: dict[str, torch.Tensor], x: tuple[torch.Tensor, ...]) -> torch.Tensor:
        if training:
            return F.batch_norm(x[0], None, None, param(p, "weight"), param(p, "bias"), training=True)
        return F.batch_norm(x[0], param(p, "running_mean"), param(p, "running_var"), param(p, "weight"), param(p, "bias"))
    return reference


sample("batchnorm", "2d-train", lambda: ncd.BatchNorm("c x y"), {"c": 3, "x": 4, "y": 5}, batchnorm_reference(True),
       train=True, batch=(4,), atol=1e-4)
sample("batchnorm", "2d-eval", lambda: ncd.BatchNorm("c x y"), {"c": 3, "x": 4, "y": 5}, batchnorm_reference(False),
       batch=(2,))
sample("batchnorm", "1d-train", lambda: ncd.BatchNorm("c", momentum=0.5), {"c": 3}, batchnorm_reference(True),
       train=True, batch=(6,), atol=1e-4)
sample("batchnorm", "named-batch", lambda: ncd.BatchNorm("b c x", channel="c"), {"b": 5, "c": 3, "x": 4},
       batchnorm_reference(True), train=True, batch=(), atol=1e-4)
sample("batchnorm", "channel-last", lambda: ncd.BatchNorm("x c", channel="c"), {"c": 3, "x": 4},
       lambda p, x: F.batch_norm(x[0].flatten(0, -2), None, None, param(p, "weight"), param(p, "bias"),
                                 training=True).view_as(x[0]), train=True, batch=(3,), atol=1e-4)
error("batchnorm", "channel", lambda: ncd.BatchNorm("c x", channel="z"), r"channel axis 'z' is not among its axes 'c x'",
      ParseError)
error("batchnorm", "woven", lambda: (ncd.Identity.of("b c x y") >> ncd.BatchNorm("c x y")).to_torch(b=2, c=3, x=4, y=4),
      r"woven over b=2.*BatchNorm\('b c x y', channel='c'\)", LoweringError)
