"""Samples for grid sampling (``F.grid_sample``) and its backward."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import ncd
from ncd.errors import ParseError, SizeError
from ncd.ir.axes import parse_axis, parse_segment
from ncd.ir.diagram import Box
from ncd.prims.sampling import GridSample, GridSampleGradOp, GridSampleOp
from tests.opdb import error, sample


def _grid(shape: tuple[int, ...]) -> torch.Tensor:
    """Positions a little past [-1, 1] (the padding modes differ there), away from the pixel centres' ties."""
    return torch.rand(*shape) * 2.4 - 1.2


def _inputs(image: tuple[int, ...], grid: tuple[int, ...]):
    return lambda s: (torch.randn(2, *image), _grid((2, *grid)))


# deformable attention's layout: the batch on both, channels on the image only
sample("grid_sample", "batch-channels", lambda: ncd.Identity.of("n c y x, n q p k:2") >> GridSample("y x", "q p", "k"),
       {"n": 3, "c": 4, "y": 5, "x": 6, "q": 7, "p": 2},
       lambda p, x: F.grid_sample(x[0].flatten(0, 1), x[1].flatten(0, 1), align_corners=False).unflatten(0, (2, 3)),
       inputs=_inputs((3, 4, 5, 6), (3, 7, 2, 2)), cod="n c q p")
# channels before the batch, nearest and border padding, corners aligned
sample("grid_sample", "nearest-border-channels-first",
       lambda: ncd.Identity.of("c n y x, n q p k:2") >> GridSample("y x", "q p", "k", "nearest", "border", True),
       {"n": 3, "c": 2, "y": 4, "x": 5, "q": 3, "p": 3},
       lambda p, x: F.grid_sample(x[0].transpose(1, 2).flatten(0, 1), x[1].flatten(0, 1), mode="nearest",
                                  padding_mode="border", align_corners=True).unflatten(0, (2, 3)).transpose(1, 2),
       inputs=_inputs((2, 3, 4, 5), (3, 3, 3, 2)), grad=False)
# more positions on the grid only (rows), bicubic with reflection
sample("grid_sample", "bicubic-reflection-rows",
       lambda: ncd.Identity.of("c y x, r q p k:2") >> GridSample("y x", "q p", "k", "bicubic", "reflection"),
       {"c": 2, "y": 5, "x": 4, "r": 3, "q": 2, "p": 3},
       lambda p, x: F.grid_sample(x[0], x[1].flatten(1, 2), mode="bicubic", padding_mode="reflection",
                                  align_corners=False).unflatten(2, (3, 2)),
       inputs=_inputs((2, 5, 4), (3, 2, 3, 2)), cod="c r q p", atol=1e-4)
# a volume (grid_sampler_3d)
sample("grid_sample", "volume", lambda: ncd.Identity.of("n c z y x, n a q p k:3") >> GridSample("z y x", "a q p", "k"),
       {"n": 2, "c": 3, "z": 3, "y": 4, "x": 3, "a": 2, "q": 2, "p": 3},
       lambda p, x: F.grid_sample(x[0].flatten(0, 1), x[1].flatten(0, 1), align_corners=False).unflatten(0, (2, 2)),
       inputs=_inputs((2, 3, 3, 4, 3), (2, 2, 2, 3, 3)))
error("grid_sample", "coordinate-size", lambda: GridSample("y x", "q p", "k:3"), r"one coordinate per image axis \(2\)",
      SizeError)
error("grid_sample", "bicubic-volume", lambda: GridSample("z y x", "a q p", "k", "bicubic"), r"bicubic sampling takes 2",
      ParseError)
error("grid_sample", "position-count", lambda: GridSample("y x", "q", "k"), r"takes 2 or 3 image axes and as many",
      ParseError)
error("grid_sample", "padding", lambda: GridSample("y x", "q p", "k", padding="wrap"), r"padding 'wrap' one of zeros",
      ParseError)


def _gradients(mode: str):
    def reference(p: dict[str, torch.Tensor], x: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        image, grid, g = x
        a, b = image.detach().requires_grad_(), grid.detach().requires_grad_()
        out = F.grid_sample(a[:, None], b, mode=mode, align_corners=False)
        return torch.autograd.grad(out, (a, b), g[:, None], create_graph=True)
    return reference


sample("grid_sample_grad", "bilinear", lambda: Box(GridSampleGradOp(parse_segment("y:4 x:5"), parse_segment("q:3 p:2"),
       parse_axis("k:2"))), {}, _gradients("bilinear"),
       inputs=lambda s: (torch.randn(2, 4, 5), _grid((2, 3, 2, 2)), torch.randn(2, 3, 2)), grad=False)
error("grid_sample_grad", "names", lambda: GridSampleGradOp(parse_segment("y x"), parse_segment("q p"), parse_axis("q:2")),
      r"need names of their own", ParseError)
error("grid_sample", "float", lambda: GridSampleOp(parse_segment("y x [4]"), parse_segment("q p"), parse_axis("k:2")),
      r"samples float images", ParseError)


# -- distances (torch.cdist) -------------------------------------------------------------------------------------------
from ncd.prims.distance import CDist, CDistGradOp, CDistOp  # noqa: E402

sample("cdist", "euclidean", lambda: ncd.Identity.of("i m, j m") >> CDist("i m", "j m"), {"i": 4, "j": 5, "m": 3},
       lambda p, x: torch.cdist(x[0], x[1]))
# past 25 rows: torch's matrix-product formula (the FLOP counter sees its backward's products)
sample("cdist", "matrix-product-batch", lambda: ncd.Identity.of("b i m, b j m") >> CDist("i m", "j m"),
       {"b": 2, "i": 30, "j": 4, "m": 3}, lambda p, x: torch.cdist(x[0], x[1]), atol=1e-4)
# a codebook shared by the batch (woven on the rows' input only), p = 1
sample("cdist", "manhattan-shared-codebook", lambda: ncd.Identity.of("b i m, j m") >> CDist("i m", "j m", p=1.0),
       {"b": 3, "i": 4, "j": 5, "m": 3}, lambda p, x: torch.cdist(x[0], x[1][:, None], p=1.0), cod="b i j")
error("cdist", "features", lambda: CDist("i m", "j n"), r"sharing the last \(the features\)", ParseError)
error("cdist", "p", lambda: CDist("i m", "j m", p=-1.0), r"p=-1.0 must be a number >= 0", ParseError)


def _distance_gradients(p: dict[str, torch.Tensor], x: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    a, b, _, g = x
    a, b = a.detach().requires_grad_(), b.detach().requires_grad_()
    return torch.autograd.grad(torch.cdist(a, b), (a, b), g)


sample("cdist_grad", "euclidean", lambda: Box(CDistGradOp(parse_axis("i:4"), parse_axis("j:3"), parse_axis("m:2"))),
       {}, _distance_gradients, grad=False,
       inputs=lambda s: (a := torch.randn(2, 4, 2), b := torch.randn(2, 3, 2), torch.cdist(a, b), torch.randn(2, 4, 3)))
error("cdist_grad", "names", lambda: CDistGradOp(parse_axis("i"), parse_axis("i"), parse_axis("m")),
      r"need names of their own", ParseError)
error("cdist", "names", lambda: CDistOp(parse_axis("i"), parse_axis("j"), parse_axis("j")), r"need names of their own",
      ParseError)


# -- cosine similarity (F.cosine_similarity) ---------------------------------------------------------------------------
from ncd.prims.distance import CosineSimilarity, CosineSimilarityGradOp, CosineSimilarityOp  # noqa: E402

sample("cosine_similarity", "rows", lambda: ncd.Identity.of("t m, t m") >> CosineSimilarity("m"), {"t": 4, "m": 3},
       lambda p, x: F.cosine_similarity(x[0], x[1], dim=-1))
# one vector compared with every row (woven on the first input only), a large eps (the clamp shows)
sample("cosine_similarity", "broadcast-eps", lambda: ncd.Identity.of("t m, m") >> CosineSimilarity("m", eps=0.5),
       {"t": 4, "m": 3}, lambda p, x: F.cosine_similarity(x[0], x[1][:, None], dim=-1, eps=0.5), cod="t")
error("cosine_similarity", "eps", lambda: CosineSimilarity("m", eps=-1.0), r"eps=-1.0 must be a number >= 0", ParseError)


def _similarity_gradients(p: dict[str, torch.Tensor], x: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    a, b, g = x
    a, b = a.detach().requires_grad_(), b.detach().requires_grad_()
    return torch.autograd.grad(F.cosine_similarity(a, b, dim=-1, eps=0.3), (a, b), g)


def _with_zero(sizes: dict[str, int]) -> tuple[torch.Tensor, ...]:
    """A zero vector (the norm's gradient is 0 there) and a short one (under eps: the clamp)."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 4, 3, generator=g), torch.randn(2, 4, 3, generator=g)
    a[0, 1] = 0.0
    b[1, 2] *= 0.01
    return a, b, torch.randn(2, 4, generator=g)


sample("cosine_similarity_grad", "zero-and-short", lambda: ncd.Identity.of("t m:3, t m:3, t")
       >> Box(CosineSimilarityGradOp(parse_axis("m:3"), 0.3)), {"t": 4}, _similarity_gradients, inputs=_with_zero,
       grad=False, atol=1e-6)
error("cosine_similarity_grad", "eps", lambda: CosineSimilarityGradOp(parse_axis("m"), float("inf")),
      r"eps=inf must be a number >= 0", ParseError)
error("cosine_similarity", "eps-type", lambda: CosineSimilarityOp(parse_axis("m"), True), r"eps=True must be",
      ParseError)
