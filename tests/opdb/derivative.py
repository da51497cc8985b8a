"""Samples for the primitives of backward diagrams (``ncd.prims.derivative``), with torch.autograd as reference."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import ncd
from ncd.errors import ParseError, TypeMismatchError
from ncd.prims.attention import MaskBackward
from ncd.prims.derivative import Expand, LinearTranspose, LinearWeightGrad
from ncd.prims.elementwise import Derivative
from ncd.prims.embedding import EmbeddingGrad
from ncd.prims.movement import Insert
from ncd.prims.normalization import NormBackward
from ncd.prims.softmax import SoftmaxBackward
from ncd.prims.structure import Zeros
from tests.opdb import error, sample

FORWARD = {
    "relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "exp": torch.exp, "sqrt": torch.sqrt,
    "gelu": F.gelu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"), "silu": F.silu, "log": torch.log,
    "square": torch.square, "abs": torch.abs,
}
OUTPUT_SIDE = {"relu", "tanh", "sigmoid", "exp", "sqrt"}


def _autograd_derivative(function: str, v: torch.Tensor) -> torch.Tensor:
    """f′ from autograd: at the input ``v``, or (output side) at the input whose output is ``v``."""
    fn = FORWARD[function]
    inverse = {"tanh": torch.atanh, "sigmoid": torch.logit, "exp": torch.log, "sqrt": torch.square, "relu": lambda y: y}
    x = (inverse[function](v) if function in OUTPUT_SIDE else v).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(fn(x).sum(), x)
    return grad


def _inputs(function: str):
    def make(sizes: dict[str, int]) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(0)
        x = torch.rand((2, sizes["a"], sizes["b"]), generator=g) * 0.8 + 0.1  # in every function's domain
        if function in ("relu", "abs", "gelu", "gelu_tanh", "silu", "square"):
            x = x * 2 - 1.0
        return (x,)
    return make


for fn in FORWARD:
    sample("derivative", fn, lambda fn=fn: ncd.Identity.of("a b") >> Derivative(fn), {"a": 3, "b": 4},
           lambda p, x, fn=fn: _autograd_derivative(fn, x[0]), cod="a b", inputs=_inputs(fn), grad=False, atol=1e-5)
error("derivative", "unknown", lambda: Derivative("swish2"), r"no derivative known for 'swish2'", ParseError)
error("derivative", "wrong-side", lambda: Derivative("relu", "input"), r"'relu' is read from its output", ParseError)


def _softmax_vjp(y_and_g: tuple[torch.Tensor, ...], dim: int, log: bool) -> torch.Tensor:
    y, g = y_and_g
    x = (torch.log(y) if not log else y).detach().requires_grad_(True)  # log y is a valid pre-image
    out = torch.log_softmax(x, dim) if log else torch.softmax(x, dim)
    (grad,) = torch.autograd.grad(out, x, g, create_graph=True)
    return grad


def _softmax_inputs(sizes: dict[str, int], dim: int = -2, log: bool = False) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn((2, sizes["y"], sizes["x"], sizes["h"]), generator=g)
    y = torch.log_softmax(x, dim) if log else torch.softmax(x, dim)
    return y, torch.randn(y.shape, generator=g)


sample("softmax_backward", "middle-axis", lambda: ncd.Identity.of("y x h, y x h") >> SoftmaxBackward("x"),
       {"y": 3, "x": 4, "h": 2}, lambda p, x: _softmax_vjp(x, -2, False), inputs=_softmax_inputs, grad=False, atol=1e-5)
sample("softmax_backward", "log", lambda: ncd.Identity.of("y x h, y x h") >> SoftmaxBackward("x", log=True),
       {"y": 3, "x": 4, "h": 2}, lambda p, x: _softmax_vjp(x, -2, True),
       inputs=lambda s: _softmax_inputs(s, -2, True), grad=False, atol=1e-5)
error("softmax_backward", "missing-axis", lambda: ncd.Identity.of("y x, y x") >> SoftmaxBackward("k"),
      r"axis k of the second is not in segment 0 \('y x'\)", TypeMismatchError)


def _sum_transpose(x: torch.Tensor) -> torch.Tensor:
    """The transpose of summing ``b`` and ``c`` away from ``b a c``, taken by autograd (vjp of a sum)."""
    z = torch.zeros(x.shape[:-1] + (3, x.shape[-1], 4), requires_grad=True)
    (grad,) = torch.autograd.grad(z.sum(dim=(-3, -1)), z, x, create_graph=True)
    return grad


sample("expand", "new-axes", lambda: Expand("a", "b:3 a c:4"), {"a": 2}, lambda p, x: _sum_transpose(x[0]), cod="b:3 a c:4")
sample("expand", "reorder", lambda: Expand("a b", "b c a"), {"a": 2, "b": 3, "c": 4},
       lambda p, x: x[0].transpose(-1, -2)[..., :, None, :].expand(*x[0].shape[:-2], 3, 4, 2))
error("expand", "missing", lambda: Expand("a b", "a c"), r"axis b of the source is not in the target", TypeMismatchError)

sample("zeros", "two", lambda: ncd.Identity.of("a") @ Zeros("b c"), {"a": 2, "b": 3, "c": 4},
       lambda p, x: (x[0], torch.zeros(3, 4)), batch=())
error("zeros", "bad-type", lambda: Zeros(3), r"expected a type or its text form, not int 3", ParseError)


def _linear_vjp(g: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    x = torch.zeros(g.shape[:-2] + (w.shape[-1],), requires_grad=True)
    out = F.linear(x, w.flatten(0, 1)).unflatten(-1, (g.shape[-2], g.shape[-1]))
    (grad,) = torch.autograd.grad(out, x, g, create_graph=True)
    return grad


def _weight_vjp(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    w = torch.zeros((g.shape[-2] * g.shape[-1], x.shape[-1]), requires_grad=True)
    out = F.linear(x, w).unflatten(-1, (g.shape[-2], g.shape[-1]))
    (grad,) = torch.autograd.grad(out, w, g, create_graph=True)
    return grad.unflatten(0, (g.shape[-2], g.shape[-1]))


sample("linear_transpose", "m-kh", lambda: LinearTranspose("m -> k h"), {"m": 5, "k": 2, "h": 3},
       lambda p, x: _linear_vjp(x[0], x[1]), dom="k h, k h m", cod="m", batch=())
sample("linear_transpose", "same-name", lambda: LinearTranspose("m -> m"), {"m": 4},
       lambda p, x: x[0] @ x[1], dom="m, m m′:m", batch=())
error("linear_transpose", "bad-spec", lambda: LinearTranspose("m k"), r"must have the form 'inputs -> outputs'", ParseError)
sample("linear_weight_grad", "m-kh", lambda: LinearWeightGrad("m -> k h"), {"m": 5, "k": 2, "h": 3},
       lambda p, x: _weight_vjp(x[0], x[1]), dom="m, k h", cod="k h m", batch=())
error("linear_weight_grad", "no-axes", lambda: LinearWeightGrad("-> m"), r"at least one axis", ParseError)


def _norm_vjp(x: torch.Tensor, w: torch.Tensor | None, g: torch.Tensor, norm: str) -> tuple[torch.Tensor, ...]:
    """Autograd's gradients of F.layer_norm / F.rms_norm (per position, weight gradient not summed)."""
    xs = x.detach().requires_grad_(True)
    ws = None if w is None else w.detach().expand_as(x).clone().requires_grad_(True)
    bs = torch.zeros_like(x, requires_grad=True) if norm == "layer" and w is not None else None
    if norm == "layer":
        y = F.layer_norm(xs, x.shape[-1:], eps=1e-5)
    else:
        y = F.rms_norm(xs, x.shape[-1:], eps=1e-6)
    out = y * ws + (bs if bs is not None else 0) if ws is not None else y
    leaves = [xs] + ([ws] if ws is not None else []) + ([bs] if bs is not None else [])
    return torch.autograd.grad(out, leaves, g)


def _norm_inputs(n: int):
    def make(sizes: dict[str, int]) -> tuple[torch.Tensor, ...]:
        gen = torch.Generator().manual_seed(0)
        return tuple(torch.randn((3, sizes["m"]), generator=gen) for _ in range(n))
    return make


sample("norm_backward", "layer", lambda: NormBackward("layer", "m"), {"m": 6},
       lambda p, x: _norm_vjp(x[0], x[1], x[2], "layer"), dom="m, m, m", cod="m, m, m", inputs=_norm_inputs(3), grad=False)
sample("norm_backward", "rms", lambda: NormBackward("rms", "m", eps=1e-6), {"m": 6},
       lambda p, x: _norm_vjp(x[0], x[1], x[2], "rms"), cod="m, m", inputs=_norm_inputs(3), grad=False)
sample("norm_backward", "layer-plain", lambda: NormBackward("layer", "m", affine=False), {"m": 6},
       lambda p, x: _norm_vjp(x[0], None, x[1], "layer"), dom="m, m", cod="m", inputs=_norm_inputs(2), grad=False)
error("norm_backward", "kind", lambda: NormBackward("group", "m"), r"must be 'layer' or 'rms', not 'group'", ParseError)


def _masked_vjp(g: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    s = torch.zeros_like(g, requires_grad=True)
    (grad,) = torch.autograd.grad(s.masked_fill(mask, float("-inf")), s, g, create_graph=True)
    return grad


sample("mask_backward", "causal", lambda: ncd.Identity.of("h y x") >> MaskBackward("x", "y"), {"h": 2, "y": 4, "x": 4},
       lambda p, x: _masked_vjp(x[0], torch.ones(4, 4, dtype=torch.bool).triu(1)), cod="h y x")
sample("mask_backward", "causal-window", lambda: ncd.Identity.of("y x") >> MaskBackward("x", "y", window=2),
       {"y": 5, "x": 5}, lambda p, x: _masked_vjp(x[0], torch.ones(5, 5, dtype=torch.bool).triu(1)
                                                  | torch.ones(5, 5, dtype=torch.bool).tril(-2)), cod="y x")
sample("mask_backward", "padding", lambda: ncd.Identity.of("y x, x [bool]") >> MaskBackward("x"), {"y": 3, "x": 5},
       lambda p, x: _masked_vjp(x[0], ~x[1][..., None, :]), cod="y x", batch=())
error("mask_backward", "missing-axis", lambda: ncd.Identity.of("y x") >> MaskBackward("k", "y"),
      r"axis k of the second is not in segment 0", TypeMismatchError)


def _select_vjp(g: torch.Tensor, n: int, index: int) -> torch.Tensor:
    z = torch.zeros(g.shape + (n,), requires_grad=True)
    (grad,) = torch.autograd.grad(z.select(-1, index), z, g, create_graph=True)
    return grad


def _slice_vjp(g: torch.Tensor, n: int, start: int, stop: int, step: int) -> torch.Tensor:
    z = torch.zeros(g.shape[:-1] + (n,), requires_grad=True)
    (grad,) = torch.autograd.grad(z[..., start:stop:step], z, g, create_graph=True)
    return grad


sample("insert", "index", lambda: ncd.Identity.of("b") >> Insert("t:5", 2), {"b": 3},
       lambda p, x: _select_vjp(x[0], 5, 2), cod="b t:5")
sample("insert", "slice-step", lambda: ncd.Identity.of("s:3 b") >> Insert("t:7", 1, 6, 2, source="s:3"), {"b": 2},
       lambda p, x: _slice_vjp(x[0].transpose(-1, -2), 7, 1, 6, 2).transpose(-1, -2), cod="t:7 b")
error("insert", "bad-axis", lambda: Insert("t, u", 1), r"axis .t, u.: cannot read size", ParseError)


def _table_vjp(i: torch.Tensor, g: torch.Tensor, vocab: int) -> torch.Tensor:
    """Autograd's gradient of an embedding table at each position (not summed)."""
    table = torch.zeros((i.numel(), vocab, g.shape[-1]), requires_grad=True)
    rows = table[torch.arange(i.numel()), i.flatten()]
    (grad,) = torch.autograd.grad(rows, table, g.reshape(-1, g.shape[-1]), create_graph=True)
    return grad.reshape(i.shape + (vocab, g.shape[-1]))


sample("embedding_grad", "rows", lambda: EmbeddingGrad(7, "m"), {"m": 4},
       lambda p, x: _table_vjp(x[0], x[1], 7), dom="[7], m", cod="vocab:7 m", batch=(3,))
sample("embedding_grad", "padding", lambda: EmbeddingGrad(7, "m", padding_idx=2), {"m": 4},
       lambda p, x: _table_vjp(x[0], x[1], 7).index_fill(-2, torch.tensor([2]), 0), dom="[7], m", cod="vocab:7 m",
       batch=(3,), inputs=lambda s: (torch.tensor([2, 0, 2]), torch.randn(3, s["m"])))
error("embedding_grad", "no-dim", lambda: EmbeddingGrad(7, ""), r"must be one segment of feature axes", ParseError)


# -- transposes for diagonals, pooling, batch normalisation and convolutions -----------------
from ncd.ir.axes import Segment  # noqa: E402
from ncd.ir.diagram import Box  # noqa: E402
from ncd.ir.size import size  # noqa: E402
from ncd.prims.convolution_derivative import ConvWeightGradOp, ConvWithWeightOp, conv_weight_segment  # noqa: E402
from ncd.prims.derivative import Diagonal  # noqa: E402
from ncd.prims.normalization import BatchNormBackwardOp, BatchNormStatsOp  # noqa: E402
from ncd.prims.pooling import AvgPoolTransposeOp, MaxPoolArgmaxOp, MaxPoolBackwardOp  # noqa: E402


def _seg(text: str) -> Segment:
    return ncd.parse_type(text)[0]


def _diagonal_vjp(x: torch.Tensor) -> torch.Tensor:
    """The transpose of ``einsum('aba->ba')``, taken by autograd."""
    z = torch.zeros(x.shape[:-2] + (x.shape[-1], x.shape[-2], x.shape[-1]), requires_grad=True)
    (grad,) = torch.autograd.grad(torch.einsum("...aba->...ba", z), z, x, create_graph=True)
    return grad


sample("diagonal", "embed", lambda: Diagonal("a", "a a"), {"a": 4}, lambda p, x: torch.diag_embed(x[0]), cod="a a")
sample("diagonal", "three-axes", lambda: Diagonal("b a", "a b a"), {"a": 3, "b": 2}, lambda p, x: _diagonal_vjp(x[0]))
error("diagonal", "missing", lambda: Diagonal("a", "a b a"), r"the source must hold each axis of the target exactly once",
      TypeMismatchError)

_POOL = (_seg("x:6 y:4"), _seg("x:3 y:2"))


def _pool_argmax(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    y, i = F.max_pool2d(x.reshape(-1, 1, 6, 4), 2, return_indices=True)
    return y.view(*x.shape[:-2], 3, 2), i.view(*x.shape[:-2], 3, 2)


sample("maxpool_argmax", "2d", lambda: ncd.Identity.of("c x:6 y:4") >> Box(MaxPoolArgmaxOp(*_POOL, (2, 2), (2, 2), (0, 0), (1, 1))),
       {"c": 2}, lambda p, x: _pool_argmax(x[0]), cod="c x:3 y:2, c x:3 y:2 [24]", grad=False)
sample("maxpool_argmax", "1d-ceil", lambda: ncd.Identity.of("c x:7") >> Box(MaxPoolArgmaxOp(
       _seg("x:7"), _seg("x:4"), (2,), (2,), (0,), (1,), True)), {"c": 2},
       lambda p, x: tuple(F.max_pool1d(x[0], 2, return_indices=True, ceil_mode=True)), cod="c x:4, c x:4 [7]", grad=False)
error("maxpool_argmax", "positions", lambda: MaxPoolArgmaxOp(_seg("x"), _seg("y"), (2,), (2,), (0,), (1,)),
      r"positions 'y' must name the 1 to 3 spatial axes 'x'", ncd.ParseError)


def _unpool_inputs(sizes: dict[str, int]) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((2, 6, 4), generator=gen)
    _, i = _pool_argmax(x)
    return i, torch.randn((2, 3, 2), generator=gen)


sample("maxpool_backward", "unpool", lambda: ncd.Identity.of("c x:3 y:2 [24], c x:3 y:2") >> Box(MaxPoolBackwardOp(*_POOL)),
       {"c": 2}, lambda p, x: F.max_unpool2d(x[1][:, None], x[0][:, None], 2, output_size=(6, 4))[:, 0],
       inputs=_unpool_inputs, cod="c x:6 y:4", batch=())
error("maxpool_backward", "positions", lambda: MaxPoolBackwardOp(_seg("x y"), _seg("x"), ), r"must name the 1 to 3 spatial",
      ncd.ParseError)


def _pool_vjp(g: torch.Tensor, pool, n: int) -> torch.Tensor:
    z = torch.zeros(g.shape[:-1] + (n,), requires_grad=True)
    (grad,) = torch.autograd.grad(pool(z[..., None, :])[..., 0, :], z, g, create_graph=True)
    return grad


sample("avgpool_transpose", "exclude-pad",
       lambda: Box(AvgPoolTransposeOp(_seg("x:5"), _seg("x:5"), (3,), (1,), (1,), False)), {},
       lambda p, x: _pool_vjp(x[0], lambda t: F.avg_pool1d(t, 3, 1, 1, count_include_pad=False), 5), cod="x:5")
sample("avgpool_transpose", "adaptive-uneven", lambda: Box(AvgPoolTransposeOp(_seg("x:7"), _seg("x:3"), adaptive=True)), {},
       lambda p, x: _pool_vjp(x[0], lambda t: F.adaptive_avg_pool1d(t, 3), 7), cod="x:7")
sample("avgpool_transpose", "ceil-exclude-pad",
       lambda: Box(AvgPoolTransposeOp(_seg("x:8"), _seg("x:5"), (3,), (2,), (1,), False, ceil_mode=True)), {},
       lambda p, x: _pool_vjp(x[0], lambda t: F.avg_pool1d(t, 3, 2, 1, ceil_mode=True, count_include_pad=False), 8),
       cod="x:8")
error("avgpool_transpose", "entries", lambda: AvgPoolTransposeOp(_seg("x"), _seg("x"), (3, 3), (1,), (1,)),
      r"kernel, stride and padding need 1 entries each", ncd.ParseError)


def _bn_stats_reference(training: bool):
    def reference(p: dict, x: tuple) -> tuple:
        w, b = (next(v for k, v in p.items() if k.endswith(n)) for n in ("weight", "bias"))
        if training:
            var, mean = torch.var_mean(x[0], dim=(0, 2, 3), unbiased=False)
        else:
            mean, var = (next(v for k, v in p.items() if k.endswith(n)) for n in ("running_mean", "running_var"))
        y = F.batch_norm(x[0], None if training else mean, None if training else var, w, b, training=training)
        return y, mean, torch.rsqrt(var + 1e-5)
    return reference


sample("batchnorm_stats", "eval", lambda: Box(BatchNormStatsOp(_seg("b c x y"), 1)), {"b": 2, "c": 3, "x": 4, "y": 5},
       _bn_stats_reference(False), cod="b c x y, c, c", batch=(), grad=False)
sample("batchnorm_stats", "train", lambda: Box(BatchNormStatsOp(_seg("b c x y"), 1)), {"b": 4, "c": 3, "x": 4, "y": 5},
       _bn_stats_reference(True), batch=(), train=True, grad=False, atol=1e-4)
error("batchnorm_stats", "channel", lambda: BatchNormStatsOp(_seg("c x"), 2), r"channel position 2 is not an axis of 'c x'",
      ncd.ParseError)


def _bn_inputs(sizes: dict[str, int]) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((4, 3, 5), generator=gen)
    var, mean = torch.var_mean(x, dim=(0, 2), unbiased=False)
    return x, mean, torch.rsqrt(var + 1e-5), torch.randn(3, generator=gen), torch.randn((4, 3, 5), generator=gen)


def _bn_vjp(x: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    xs, w, b = x[0].detach().requires_grad_(True), x[3].detach().requires_grad_(True), torch.zeros(3, requires_grad=True)
    out = F.batch_norm(xs, None, None, w, b, training=True)
    return torch.autograd.grad(out, (xs, w, b), x[4])


sample("batchnorm_backward", "train", lambda: Box(BatchNormBackwardOp(_seg("b c x"), 1)), {"b": 4, "c": 3, "x": 5},
       lambda p, x: _bn_vjp(x), inputs=_bn_inputs, batch=(), grad=False, atol=1e-4, cod="b c x, c, c")
error("batchnorm_backward", "channel", lambda: BatchNormBackwardOp(_seg("c"), 1), r"channel position 1 is not an axis",
      ncd.ParseError)

_C, _D = _seg("c:4 x:3 y:4"), _seg("d:2 x:6 y:8")  # a transposed convolution c -> d, kernel 3, stride 2, padding 1


def _ct_weight() -> Segment:
    return conv_weight_segment(_C, _D, (3, 3), size(2), True)


def _conv_input_vjp(x: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The input gradient of a transposed convolution (the cotangent x[0], its weight x[1]), by autograd."""
    z = torch.zeros((x[0].shape[0], 4, 3, 4), requires_grad=True)
    out = F.conv_transpose2d(z, x[1], stride=2, padding=1, output_padding=1, groups=2)
    (grad,) = torch.autograd.grad(out, z, x[0], create_graph=True)
    return grad


sample("conv_with_weight", "transpose-of-transposed",
       lambda: ncd.Identity.of("b:2 d:2 x:6 y:8") @ ncd.Identity(ncd.ir.Type((_ct_weight(),)))
       >> Box(ConvWithWeightOp(_D, _C, _ct_weight(), (3, 3), (2, 2), (1, 1), (1, 1), (), size(2), False,
                               _seg("b:2"))),
       {}, lambda p, x: _conv_input_vjp(x), cod="b:2 c:4 x:3 y:4", batch=())
_X, _W = _seg("c:3 x:6 y:5"), _seg("d:4 c:3 kx:3 ky:3")  # a convolution whose weight is a wire (BiT's standardised weights)
sample("conv_with_weight", "weight-wire",
       lambda: ncd.Identity.of("b:2 c:3 x:6 y:5") @ ncd.Identity(ncd.ir.Type((_W,)))
       >> Box(ConvWithWeightOp(_X, _seg("d:4 x:3 y:3"), _W, (3, 3), (2, 2), (1, 1), (1, 1), (), size(1), False, _seg("b:2"))),
       {}, lambda p, x: F.conv2d(x[0], x[1], stride=2, padding=1), cod="b:2 d:4 x:3 y:3", batch=())
sample("conv_with_weight", "grouped-dilated",
       lambda: ncd.Identity.of("b:2 c:4 x:7 y:7") @ ncd.Identity.of("d:6 cʹ:2 kx:3 ky:3")
       >> Box(ConvWithWeightOp(_seg("c:4 x:7 y:7"), _seg("d:6 x:3 y:3"), _seg("d:6 cʹ:2 kx:3 ky:3"), (3, 3), (1, 1),
                               (0, 0), (2, 2), (), size(2), False, _seg("b:2"))),
       {}, lambda p, x: F.conv2d(x[0], x[1], dilation=2, groups=2), cod="b:2 d:6 x:3 y:3", batch=())
error("conv_with_weight", "rank", lambda: ConvWithWeightOp(_D, _C, _seg("a b"), (3, 3), (1, 1), (0, 0), (1, 1)),
      r"a weight of 4 axes are needed, not 'a b'", ncd.ParseError)


def _conv_weight_vjp(x: tuple[torch.Tensor, ...]) -> torch.Tensor:
    w = torch.zeros((4, 1, 3, 3), requires_grad=True)
    out = F.conv_transpose2d(x[0], w, stride=2, padding=1, output_padding=1, groups=2)
    (grad,) = torch.autograd.grad(out, w, x[1], create_graph=True)
    return grad


sample("conv_weight_grad", "transposed-grouped",
       lambda: Box(ConvWeightGradOp(_C, _D, _ct_weight(), (3, 3), (2, 2), (1, 1), (1, 1), size(2), True,
                                    _seg("b:2"))),
       {}, lambda p, x: _conv_weight_vjp(x), dom="b:2 c:4 x:3 y:4, b:2 d:2 x:6 y:8", batch=())
error("conv_weight_grad", "rank", lambda: ConvWeightGradOp(_C, _D, _seg("a"), (3, 3), (1, 1), (0, 0), (1, 1)),
      r"a weight of 4 axes are needed, not 'a'", ncd.ParseError)


# -- the transpose of a gather (ncd.prims.gather) ----------------------------------------------
from ncd.errors import SizeError  # noqa: E402
from ncd.prims.gather import GatherTranspose  # noqa: E402


def _scatter_reference(i: torch.Tensor, g: torch.Tensor, t: int, n: int) -> torch.Tensor:
    """``Σ_J onehot(i)[..., J, t] · g[..., J]``: each cotangent entry at its position, repeats added."""
    hot = F.one_hot(i, t).to(g.dtype) * g[..., None]
    return hot.flatten(hot.dim() - 1 - n, -2).sum(-2) if n else hot


sample("gather_transpose", "one-position", lambda: ncd.Identity.of("b [t], b") >> GatherTranspose("t"), {"b": 3, "t": 5},
       lambda p, x: _scatter_reference(x[0], x[1], 5, 0), cod="b t")
sample("gather_transpose", "repeated-positions", lambda: ncd.Identity.of("j k [t], j k") >> GatherTranspose("t", "j k [t]"),
       {"j": 4, "k": 3, "t": 5}, lambda p, x: _scatter_reference(x[0], x[1], 5, 2), cod="t")
error("gather_transpose", "range", lambda: GatherTranspose("t:5", "[4]"),
      r"gather along axis t of size 5: the positions '\[4\]' must be an index segment with range \[5\]", SizeError)
error("gather_transpose", "name", lambda: GatherTranspose("t:5", "t:2 [5]"),
      r"gather along axis t: the positions 't:2 \[5\]' reuse its name", ParseError)
