"""Operators that were opaque boxes in the corpus and are now boxes, checked against the model on fresh inputs:
``F.affine_grid`` (a spatial transformer's grid: an ``AffineGrid`` box, its transpose in the backward) and a constant
the forward makes times a learned matrix (SAM's ``coords @ positional_embedding``: the learned map of the constant)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ncd


def _trace(model: nn.Module, *inputs: torch.Tensor) -> ncd.TracedDiagram:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ncd.trace(model, *inputs)


def _same_gradients(model: nn.Module, lowered: nn.Module, loss_model: torch.Tensor, loss_lowered: torch.Tensor) -> None:
    """The lowered module's parameter gradients are autograd's on the model (a learned matrix may be held as the
    linear map's weight: its transpose)."""
    mine, theirs = list(model.parameters()), list(lowered.parameters())
    want = torch.autograd.grad(loss_model, mine)
    got = torch.autograd.grad(loss_lowered, theirs)
    for p, w in zip(mine, want):
        twins = [k for k, q in enumerate(theirs) if q.shape == p.shape and torch.equal(q, p)
                 or p.dim() == 2 and q.shape == p.T.shape and torch.equal(q, p.T)]
        assert any(torch.allclose(got[k] if got[k].shape == w.shape else got[k].T, w, rtol=1e-5, atol=1e-5)
                   for k in twins), tuple(p.shape)


class _Transformer(nn.Module):
    """A spatial transformer on a plane or a volume: ``θ`` predicted from the image, its grid sampled."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n
        self.loc = nn.Linear(3 * 4 ** n, n * (n + 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.n
        theta = self.loc(x.flatten(1)).view(-1, n, n + 1) * 0.1 + torch.eye(n, n + 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=n == 3)
        return F.grid_sample(x, grid, align_corners=False), grid


@pytest.mark.parametrize("n", [2, 3])
def test_an_affine_grid_is_one_box_equal_to_the_model_with_autograds_gradients(n: int) -> None:
    g = torch.Generator().manual_seed(n)
    model, shape = _Transformer(n), (2, 3, *[4] * n)
    d = _trace(model, torch.randn(*shape, generator=g))
    assert d.opaque_count == 0, d.opaque
    assert [b.prim.op for b in d.boxes()].count("affine_grid") == 1
    lowered = d.to_torch()
    for _ in range(2):
        x = torch.randn(*shape, generator=g)
        for got, want in zip(lowered(x), model(x)):
            assert torch.equal(got, want)  # the one F.affine_grid call, bit for bit
    x = torch.randn(*shape, generator=g)
    _same_gradients(model, lowered, sum(o.square().sum() for o in model(x)), sum(o.square().sum() for o in lowered(x)))
    again = ncd.load_json(d.to_json())  # untrusted: no opaque call at all
    lowered_again = again.to_torch()
    lowered_again.load_state_dict(d.state_dict(lowered_again))
    for got, want in zip(lowered_again(x), model(x)):
        assert torch.equal(got, want)


@pytest.mark.parametrize("corners", [False, True])
def test_the_backward_diagram_of_an_affine_grid_is_autograds(corners: bool) -> None:
    """``ncd.backward`` of a grid woven over a batch, lowered: autograd's ``∂θ``; its cost is the flop counter's."""
    from torch.utils.flop_counter import FlopCounterMode

    from ncd.prims.affine import AffineGrid

    d = ncd.Identity.of("n k:2 l:3") >> AffineGrid("y x", "k", "l", corners)
    sizes = {"n": 3, "y": 4, "x": 5}
    back = ncd.backward(d)
    assert "affine_grid_transpose" in {b.prim.op for b in back.boxes()}
    theta = torch.randn(3, 2, 3, requires_grad=True)
    counter = FlopCounterMode(display=False)
    with counter:
        out = F.affine_grid(theta, [3, 1, 4, 5], align_corners=corners)
        cotangent = torch.randn_like(out)
        (want,) = torch.autograd.grad(out, theta, cotangent)
    got = back.to_torch(**sizes)(cotangent)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    report = ncd.cost(d, **sizes)
    assert report.forward_matmul + report.backward_matmul == counter.get_total_flops() > 0


class _Positions(nn.Module):
    """SAM's shared image embedding: a grid of coordinates the forward makes (no input reaches it) times a learned
    matrix, then sines and cosines, added to the input's projection."""

    def __init__(self) -> None:
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(2, 6))
        self.proj = nn.Linear(12, 12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid = torch.ones(4, 4)
        coords = torch.stack([grid.cumsum(1) - 0.5, grid.cumsum(0) - 0.5], -1) / 4
        coords = 2 * math.pi * ((2 * coords - 1) @ self.positional_embedding)
        return self.proj(x) + torch.cat([coords.sin(), coords.cos()], -1)


def test_a_constant_times_a_learned_matrix_is_the_learned_map_of_the_constant() -> None:
    g = torch.Generator().manual_seed(0)
    model = _Positions()
    d = _trace(model, torch.randn(2, 4, 4, 12, generator=g))
    assert d.opaque_count == 0, d.opaque
    assert [b.prim.op for b in d.boxes()].count("linear") == 2
    lowered = d.to_torch()
    assert sum(p.numel() for p in lowered.parameters()) == sum(p.numel() for p in model.parameters())
    fresh = torch.randn(2, 4, 4, 12, generator=g)
    torch.testing.assert_close(lowered(fresh), model(fresh), rtol=1e-6, atol=1e-6)
    weights = torch.linspace(-1, 1, 2 * 4 * 4 * 12).reshape(2, 4, 4, 12)
    _same_gradients(model, lowered, (model(fresh) * weights).sum(), (lowered(fresh) * weights).sum())


class _Extrema(nn.Module):
    """A graph network's max-aggregation (into zeros, without their own entries) and a min-aggregation with ties (rounded
    sources) into rows of the messages themselves."""

    def __init__(self) -> None:
        super().__init__()
        self.message = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, m = x.shape
        h = self.message(x)
        at = targets[..., None].expand(b, t, m)
        top = torch.zeros(b, 4, m).scatter_reduce(1, at, h, "amax", include_self=False)
        return top, h[:, :4].scatter_reduce(1, at, (2 * h).round(), "amin")


def test_scatter_reduce_amax_amin_are_boxes_equal_to_the_model_with_autograds_gradients() -> None:
    g = torch.Generator().manual_seed(0)
    model = _Extrema()

    def inputs() -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randn(2, 6, 4, generator=g), torch.randint(0, 4, (2, 6), generator=g)

    d = _trace(model, *inputs())
    assert d.opaque_count == 0, d.opaque
    assert sorted((b.prim.reduce, b.prim.include_self) for b in d.boxes() if b.prim.op == "scatter_extremum") == [
        ("amax", False), ("amin", True)]
    lowered = d.to_torch()
    for _ in range(3):
        x = inputs()
        for got, want in zip(lowered(*x), model(*x)):
            assert torch.equal(got, want)  # the one scatter_reduce call, bit for bit
    x = inputs()
    w = torch.linspace(-1, 1, 32).reshape(2, 4, 4)
    _same_gradients(model, lowered, sum((o * w).sum() for o in model(*x)), sum((o * w).sum() for o in lowered(*x)))
    again = ncd.load_json(d.to_json())
    lowered_again = again.to_torch()
    lowered_again.load_state_dict(d.state_dict(lowered_again))
    for got, want in zip(lowered_again(*x), model(*x)):
        assert torch.equal(got, want)


class _Flags(nn.Module):
    """GLM-5's indexer: flags read at computed positions (``mask.gather``, ``mask[rows, i]``), and a top-k of no entries
    (``topk(x, 0)``) whose sum is zeros."""

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        i = x.argsort(-1)[..., :3]
        kept = m.gather(-1, i)
        picked = (x > 0)[torch.arange(2)[:, None, None], i.clamp(0, 2)]
        none = torch.topk(x, 0, -1)[0].sum(-1)
        return torch.where(kept, x.gather(-1, i), 0.0), none + x.sum(-1), picked


def test_flags_gathered_and_a_topk_of_nothing_are_no_opaque_box() -> None:
    g = torch.Generator().manual_seed(0)
    model = _Flags()

    def inputs() -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randn(2, 3, 5, generator=g), torch.rand(2, 3, 5, generator=g) > 0.5

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d = ncd.trace(model, *inputs())
    assert d.opaque_count == 0, d.opaque
    assert not [w for w in caught if "failed" in str(w.message)], [str(w.message) for w in caught]
    assert [b.prim.op for b in d.boxes()].count("gather") == 3
    lowered = d.to_torch()
    for _ in range(3):
        x = inputs()
        for got, want in zip(lowered(*x), model(*x)):
            assert got.dtype == want.dtype and torch.equal(got, want)


class _Similar(nn.Module):
    """``F.cosine_similarity`` of a projection and its roll along the features' wire, and of the input and the
    projection along the tokens (a middle dim) with a large ``eps``."""

    def __init__(self) -> None:
        super().__init__()
        self.project = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.project(x)
        return F.cosine_similarity(h, h.roll(1, 1), dim=-1) \
            + F.cosine_similarity(x, h, dim=1, eps=0.5).mean(-1, keepdim=True)


def test_cosine_similarity_is_one_box_equal_to_the_model_with_autograds_gradients() -> None:
    g = torch.Generator().manual_seed(0)
    model = _Similar()
    d = _trace(model, torch.randn(2, 5, 4, generator=g))
    assert d.opaque_count == 0, d.opaque
    assert [b.prim.op for b in d.boxes()].count("cosine_similarity") == 2
    lowered = d.to_torch()
    for _ in range(3):
        x = torch.randn(2, 5, 4, generator=g)
        assert torch.equal(lowered(x), model(x))  # the one call, bit for bit
    w = torch.linspace(-1, 1, 10).reshape(2, 5)
    _same_gradients(model, lowered, (model(x) * w).sum(), (lowered(x) * w).sum())
    back = ncd.backward(d)
    assert "cosine_similarity_grad" in {b.prim.op for b in back.boxes()}


class _Codebooks(nn.Module):
    """``torch.cdist`` of tensors of different ranks, broadcast as torch does: tokens against a shared codebook, a
    codebook's first entries against the tokens (``p = 1``), and one more leading wire of size 1."""

    def __init__(self) -> None:
        super().__init__()
        self.project = nn.Linear(4, 4)
        self.code = nn.Parameter(torch.randn(7, 4))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.project(x)
        near = torch.cdist(h, self.code).sum(-1) + torch.cdist(self.code[:3], h, p=1.0).sum(1)
        return near, torch.cdist(h[None], h)


def test_cdist_of_different_ranks_is_one_box_each_equal_to_the_model() -> None:
    g = torch.Generator().manual_seed(0)
    model = _Codebooks()
    d = _trace(model, torch.randn(2, 5, 4, generator=g))
    assert d.opaque_count == 0, d.opaque
    assert [b.prim.op for b in d.boxes()].count("cdist") == 3
    lowered = d.to_torch()
    for _ in range(3):
        x = torch.randn(2, 5, 4, generator=g)
        for got, want in zip(lowered(x), model(x)):
            assert torch.equal(got, want)
    w = [torch.linspace(-1, 1, 10).reshape(2, 5), torch.linspace(-1, 1, 50).reshape(1, 2, 5, 5)]
    _same_gradients(model, lowered, sum((o * v).sum() for o, v in zip(model(x), w)),
                    sum((o * v).sum() for o, v in zip(lowered(x), w)))


class _Unpool(nn.Module):
    """SegNet's decoder: the positions of a max pooling, its values scaled and written back at them
    (``F.max_unpool2d``), on a plane and (``max_unpool3d``) a volume."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n
        self.conv = (nn.Conv2d if n == 2 else nn.Conv3d)(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        pool, unpool = (F.max_pool2d, F.max_unpool2d) if self.n == 2 else (F.max_pool3d, F.max_unpool3d)
        p, i = pool(h, 2, return_indices=True)
        return unpool(p * 2, i, 2, output_size=h.shape[2:])


@pytest.mark.parametrize("n", [2, 3])
def test_max_unpool_is_a_scatter_equal_to_the_model(n: int) -> None:
    g = torch.Generator().manual_seed(n)
    model, shape = _Unpool(n), (2, 3, *[4] * n)
    d = _trace(model, torch.randn(*shape, generator=g))
    assert not any("unpool" in op for op, _ in d.opaque), d.opaque
    assert "scatter_write" in {b.prim.op for b in d.boxes()}
    lowered = d.to_torch()
    for _ in range(3):
        x = torch.randn(*shape, generator=g)
        assert torch.equal(lowered(x), model(x))
    w = torch.linspace(-1, 1, 2 * 3 * 4 ** n).reshape(shape)
    _same_gradients(model, lowered, (model(x) * w).sum(), (lowered(x) * w).sum())
