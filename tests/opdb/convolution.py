"""Samples for the convolution family: ★, ★ᵀ, learned (transposed) convolution, pooling.

References are independent of the lowering: ★ and ★ᵀ are written with explicit index
arithmetic (gather / ``index_add``), the learned ones with ``torch.nn.functional``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import ncd
from ncd.errors import ParseError, SizeError, TypeMismatchError
from tests.opdb import error, sample


def param(params: dict[str, torch.Tensor], suffix: str) -> torch.Tensor:
    hits = [v for k, v in params.items() if k.endswith(suffix)]
    assert len(hits) == 1, (suffix, list(params))
    return hits[0]


def _source_index(size: int, kernel: int, stride: int, padding: int, dilation: int) -> torch.Tensor:
    """``index[o, j]`` = the input position window ``o`` reads at kernel offset ``j`` (−1: padding)."""
    count = (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    index = torch.tensor([[o * stride + j * dilation - padding for j in range(kernel)] for o in range(count)])
    return torch.where((index >= 0) & (index < size), index, torch.full_like(index, -1))


def windows(x: torch.Tensor, kernel: tuple[int, ...], stride: tuple[int, ...], padding: tuple[int, ...],
            dilation: tuple[int, ...]) -> torch.Tensor:
    """★ by gathering: ``(..., X[, Y]) -> (..., OX[, OY], KX[, KY])`` with zeros outside the input."""
    n = len(kernel)
    sizes = x.shape[-n:]
    indices = [_source_index(sz, *g) for sz, g in zip(sizes, zip(kernel, stride, padding, dilation))]
    padded = torch.cat([x.flatten(-n), x.new_zeros(*x.shape[:-n], 1)], dim=-1)  # position -1 reads the zero
    if n == 1:
        flat = indices[0]
    else:
        (ix, iy), y = indices, sizes[1]
        flat = torch.where((ix[:, None, :, None] < 0) | (iy[None, :, None, :] < 0), -1,
                           ix[:, None, :, None] * y + iy[None, :, None, :])
    flat = torch.where(flat < 0, padded.shape[-1] - 1, flat)
    return padded[..., flat.reshape(-1)].reshape(*x.shape[:-n], *flat.shape)


def windows_t(w: torch.Tensor, sizes: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...],
              padding: tuple[int, ...], dilation: tuple[int, ...]) -> torch.Tensor:
    """★ᵀ by scatter-adding every window entry onto the input position it reads."""
    n = len(sizes)
    indices = [_source_index(sz, *g) for sz, g in zip(sizes, zip(kernel, stride, padding, dilation))]
    if n == 1:
        flat = indices[0]
    else:
        (ix, iy), y = indices, sizes[1]
        flat = torch.where((ix[:, None, :, None] < 0) | (iy[None, :, None, :] < 0), -1,
                           ix[:, None, :, None] * y + iy[None, :, None, :])
    total = 1
    for sz in sizes:
        total *= sz
    flat = torch.where(flat < 0, total, flat).reshape(-1)
    lead = w.shape[: w.dim() - 2 * n]
    out = w.new_zeros(*lead, total + 1).index_add(-1, flat, w.reshape(*lead, -1))
    return out[..., :total].reshape(*lead, *sizes)


# -- ★ and ★ᵀ --------------------------------------------------------------------------------
sample("conv_tensor", "1d-stride-pad-dilation", lambda: ncd.Identity.of("c x") >> ncd.ConvolutionTensor("x", 3, 2, 1, 2),
       {"c": 2, "x": 10}, lambda p, x: windows(x[0], (3,), (2,), (1,), (2,)), cod="c x:x/2-1 kx:3", dom="c x")
sample("conv_tensor", "2d-per-axis", lambda: ncd.Identity.of("c x y") >> ncd.ConvolutionTensor("x y", (3, 2), (2, 1), (1, 0)),
       {"c": 2, "x": 8, "y": 5}, lambda p, x: windows(x[0], (3, 2), (2, 1), (1, 0), (1, 1)), cod="c x:x/2 y:y-1 kx:3 ky:2")
sample("conv_tensor", "2d-named-kernel-axes", lambda: ncd.ConvolutionTensor("x:6 y:6", 2, stride=2, kernel_axes="k l"),
       {}, lambda p, x: windows(x[0], (2, 2), (2, 2), (0, 0), (1, 1)), cod="x:3 y:3 k:2 l:2")
error("conv_tensor", "kernel-too-large", lambda: ncd.ConvolutionTensor("x:2", 3),
      r"axis x of size 2 \(padding 0 on each side\) is shorter than the kernel's span 3", SizeError)
error("conv_tensor", "stride-does-not-divide", lambda: ncd.ConvolutionTensor("x y", 3, stride=2, padding=1).bind(x=7, y=8),
      r"stride 2 does not divide axis x=7.*would be 7/2", SizeError)
error("conv_tensor", "kernel-axis-clash", lambda: ncd.ConvolutionTensor("x y", 3, kernel_axes="x k"),
      r"kernel axes x k must be 2 new name\(s\), distinct from 'x y'", ParseError)

sample("conv_tensor_t", "1d-adjoint", lambda: ncd.Identity.of("c x:x/2-1 kx:3") >> ncd.ConvolutionTensorT("x", 3, 2, 1, 2),
       {"c": 2, "x": 10}, lambda p, x: windows_t(x[0], (10,), (3,), (2,), (1,), (2,)), cod="c x")
sample("conv_tensor_t", "2d-overlapping", lambda: ncd.ConvolutionTensorT("x:7 y:5", (3, 2), (2, 1), (1, 0)),
       {}, lambda p, x: windows_t(x[0], (7, 5), (3, 2), (2, 1), (1, 0), (1, 1)), dom="x:4 y:4 kx:3 ky:2", cod="x:7 y:5")
error("conv_tensor_t", "kernel-entries", lambda: ncd.ConvolutionTensorT("x", (3, 3)),
      r"kernel \(3, 3\) has 2 entries but there are 1 spatial axes", ParseError)
error("conv_tensor_t", "three-axes", lambda: ncd.ConvolutionTensorT("x y z", 3), r"give 1 or 2 spatial axes.*'x y z'", ParseError)


# -- learned convolution -------------------------------------------------------------------------
def conv_ref(x: torch.Tensor, p: dict[str, torch.Tensor], fn, bias: bool = True, **kw) -> torch.Tensor:
    return fn(x, param(p, "weight"), param(p, "bias") if bias else None, **kw)


sample("conv", "2d-stride-pad-groups", lambda: ncd.Conv("c x y -> d x y", 3, stride=2, padding=1, groups=2),
       {"c": 4, "d": 6, "x": 8, "y": 6}, lambda p, x: conv_ref(x[0], p, F.conv2d, stride=2, padding=1, groups=2),
       dom="c x y", cod="d x:x/2 y:y/2", atol=1e-4)
sample("conv", "1d-dilation-no-bias", lambda: ncd.Conv("c x -> d x", 3, dilation=2, bias=False),
       {"c": 3, "d": 2, "x": 9}, lambda p, x: conv_ref(x[0], p, F.conv1d, bias=False, dilation=2), cod="d x:x-4", atol=1e-4)
sample("conv", "depthwise-same", lambda: ncd.Conv("c x y -> c x y", (3, 5), padding="same", groups="c"),
       {"c": 3, "x": 5, "y": 6}, lambda p, x: conv_ref(x[0], p, F.conv2d, padding=(1, 2), groups=3), cod="c x y", atol=1e-4)
sample("conv", "3d", lambda: ncd.Conv("c x y z -> d x y z", 2, stride=(1, 2, 1)),
       {"c": 2, "d": 3, "x": 3, "y": 4, "z": 3}, lambda p, x: conv_ref(x[0], p, F.conv3d, stride=(1, 2, 1)), atol=1e-4,
       cod="d x:x-1 y:y/2 z:z-1")
sample("conv", "woven-trailing-axis", lambda: ncd.Identity.of("c x t") >> ncd.Conv("c x -> d x", 2, stride=2, name="time"),
       {"c": 2, "d": 3, "x": 6, "t": 4},
       lambda p, x: conv_ref(x[0].movedim(-1, 1).flatten(0, 1), p, F.conv1d, stride=2).unflatten(0, (2, 4)).movedim(1, -1),
       cod="d x:x/2 t", atol=1e-4)
sample("conv", "unbatched", lambda: ncd.Conv("c x y -> d x y", 1), {"c": 3, "d": 2, "x": 3, "y": 2},
       lambda p, x: conv_ref(x[0], p, F.conv2d), batch=())
error("conv", "groups-divide", lambda: ncd.Conv("c:4 x -> d:6 x", groups=3), r"groups=3 must divide the channel axis c=4",
      SizeError)
error("conv", "spatial-names", lambda: ncd.Conv("c x -> d y"), r"output spatial axes \(y\) must keep the input's names \(x\)",
      ParseError)
error("conv", "channels", lambda: ncd.Identity.of("c:3 x") >> ncd.Conv("c:4 x -> d x"),
      r"axis c has size 3 in the first and 4 in the second", TypeMismatchError)
error("conv", "bind-odd-size", lambda: ncd.Conv("c x -> d x", 3, stride=2, padding=1).to_torch(c=1, d=1, x=7),
      r"stride 2 does not divide axis x=7", SizeError)
error("conv", "written-size", lambda: ncd.Conv("c x:10 -> d x:5", 3), r"output axis x is written with size 5, but input x=10"
      r" gives 8", SizeError)
error("conv", "same-even-kernel", lambda: ncd.Conv("c x -> d x", 2, padding="same"), r"padding='same' needs an odd effective"
      r" kernel", SizeError)

sample("conv_transpose", "2d-stride-output-padding-groups",
       lambda: ncd.ConvTranspose("c x y -> d x y", 3, stride=2, padding=1, output_padding=1, groups=2),
       {"c": 4, "d": 2, "x": 4, "y": 3},
       lambda p, x: conv_ref(x[0], p, F.conv_transpose2d, stride=2, padding=1, output_padding=1, groups=2),
       cod="d x:2*x y:2*y", atol=1e-4)
sample("conv_transpose", "1d-dilation", lambda: ncd.ConvTranspose("c x -> d x", 2, dilation=3, bias=False),
       {"c": 2, "d": 3, "x": 5}, lambda p, x: conv_ref(x[0], p, F.conv_transpose1d, bias=False, dilation=3), cod="d x:x+3",
       atol=1e-4)
error("conv_transpose", "output-padding", lambda: ncd.ConvTranspose("c x -> d x", 2, stride=2, output_padding=2),
      r"output_padding 2 along axis x must be smaller than the stride 2 or the dilation 1", SizeError)
error("conv_transpose", "spec", lambda: ncd.ConvTranspose("c -> d"), r"must map one segment 'channel spatial...'", ParseError)


# -- pooling -----------------------------------------------------------------------------------------
def pooled(fn, x: torch.Tensor, n: int, *args, **kw) -> torch.Tensor:
    """``fn`` (an ``F.*pool{n}d``) on the last ``n`` dims of ``x``, with any leading dims."""
    lead = x.shape[:-n]
    out = fn(x.reshape(-1, 1, *x.shape[-n:]), *args, **kw)
    return out.reshape(*lead, *out.shape[-n:])


sample("maxpool", "2d-pad", lambda: ncd.Identity.of("c x y") >> ncd.MaxPool("x y", 3, stride=2, padding=1),
       {"c": 2, "x": 8, "y": 6}, lambda p, x: pooled(F.max_pool2d, x[0], 2, 3, 2, 1), cod="c x:x/2 y:y/2")
sample("maxpool", "1d-dilation", lambda: ncd.MaxPool("x", 2, dilation=2), {"x": 10},
       lambda p, x: pooled(F.max_pool1d, x[0], 1, 2, 2, 0, 2), cod="x:x/2-1")
sample("maxpool", "2d-ceil", lambda: ncd.Identity.of("c x:7 y:5") >> ncd.MaxPool("x:7 y:5", 2, ceil_mode=True),
       {"c": 2}, lambda p, x: pooled(F.max_pool2d, x[0], 2, 2, ceil_mode=True), cod="c x:4 y:3")
sample("maxpool", "1d-ceil-pad", lambda: ncd.MaxPool("x:5", 2, padding=1, ceil_mode=True), {},
       lambda p, x: pooled(F.max_pool1d, x[0], 1, 2, 2, 1, ceil_mode=True), cod="x:3")
sample("maxpool", "1d-ceil-symbolic", lambda: ncd.Identity.of("c x") >> ncd.MaxPool("x", 3, stride=2, ceil_mode=True),
       {"c": 2, "x": 8}, lambda p, x: pooled(F.max_pool1d, x[0], 1, 3, 2, ceil_mode=True), cod="c x:x/2")
error("maxpool", "ceil-flag", lambda: ncd.MaxPool("x:4", 2, ceil_mode=1),  # type: ignore[arg-type]
      r"ceil_mode must be True or False, not 1", ParseError)
error("maxpool", "padding", lambda: ncd.MaxPool("x", 2, padding=2), r"padding 2 along axis x is more than half the"
      r" kernel's span 2", SizeError)

sample("avgpool", "2d", lambda: ncd.Identity.of("c x y") >> ncd.AvgPool("x y", 2), {"c": 3, "x": 6, "y": 4},
       lambda p, x: pooled(F.avg_pool2d, x[0], 2, 2), cod="c x:x/2 y:y/2")
sample("avgpool", "1d-exclude-pad", lambda: ncd.AvgPool("x", 3, stride=1, padding=1, count_include_pad=False), {"x": 5},
       lambda p, x: pooled(F.avg_pool1d, x[0], 1, 3, 1, 1, count_include_pad=False), cod="x")
sample("avgpool", "2d-ceil", lambda: ncd.Identity.of("c x:8 y:5") >> ncd.AvgPool("x:8 y:5", 3, stride=2, padding=1, ceil_mode=True),
       {"c": 2}, lambda p, x: pooled(F.avg_pool2d, x[0], 2, 3, 2, 1, ceil_mode=True), cod="c x:5 y:3")
sample("avgpool", "2d-ceil-exclude-pad", lambda: ncd.Identity.of("c x:8 y:5") >> ncd.AvgPool(
       "x:8 y:5", 3, stride=2, padding=1, count_include_pad=False, ceil_mode=True), {"c": 2},
       lambda p, x: pooled(F.avg_pool2d, x[0], 2, 3, 2, 1, ceil_mode=True, count_include_pad=False), cod="c x:5 y:3")
sample("avgpool", "1d-ceil", lambda: ncd.AvgPool("x:12", 4, stride=3, ceil_mode=True), {},
       lambda p, x: pooled(F.avg_pool1d, x[0], 1, 4, 3, ceil_mode=True), cod="x:4")
error("avgpool", "kernel-entries", lambda: ncd.AvgPool("x y", (2, 2, 2)),
      r"kernel \(2, 2, 2\) has 3 entries but there are 2 spatial axes", ParseError)

sample("adaptive_avgpool", "2d-global", lambda: ncd.Identity.of("c x y") >> ncd.AdaptiveAvgPool("x y", 1),
       {"c": 3, "x": 5, "y": 4}, lambda p, x: x[0].mean((-2, -1), keepdim=True), cod="c x:1 y:1")
sample("adaptive_avgpool", "1d-uneven", lambda: ncd.AdaptiveAvgPool("x", 3), {"x": 7},
       lambda p, x: torch.stack([x[0][..., 0:3].mean(-1), x[0][..., 2:5].mean(-1), x[0][..., 4:7].mean(-1)], -1), cod="x:3")
error("adaptive_avgpool", "entries", lambda: ncd.AdaptiveAvgPool("x", (1, 1)),
      r"output \(1, 1\) has 2 entries but there are 1 spatial axes", ParseError)
error("adaptive_avgpool", "zero", lambda: ncd.AdaptiveAvgPool("x", 0), r"axis x has size 0", SizeError)
