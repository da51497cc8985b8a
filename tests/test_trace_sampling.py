"""``F.grid_sample`` traced as one ``GridSample`` box (:mod:`ncd.prims.sampling`; it was an opaque box: deformable
attention in grounding-dino, rt_detr, d_fine, mask2former …): the lowered module equals the model bit for bit on the
traced and a fresh input, so does the one read back from the diagram's JSON (untrusted), parameter gradients are
autograd's, and the backward diagram's ``∂`` box gives autograd's gradients of the image and the grid."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ncd
from tests.test_trace_opaque8 import _gradients


class _Deformable(nn.Module):
    """Multi-scale deformable attention's sampling: values per head as images ``(b·h, d, y, x)``, positions predicted
    from the queries ``(b·h, q, p, 2)``, one ``grid_sample`` per level (as transformers' ``MultiScaleDeformableAttention``)."""

    def __init__(self, mode: str, padding: str, corners: bool, heads: int = 2) -> None:
        super().__init__()
        self.mode, self.padding, self.corners, self.heads = mode, padding, corners, heads
        self.value = nn.Linear(8, 8)
        self.offsets = nn.Linear(8, heads * 3 * 2)

    def forward(self, image: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        b, c, y, x = image.shape
        h, q = self.heads, queries.shape[1]
        values = self.value(image.flatten(2).transpose(1, 2))  # b (y x) m
        values = values.transpose(1, 2).reshape(b * h, 8 // h, y, x)
        grid = torch.tanh(self.offsets(queries)).view(b, q, h, 3, 2).transpose(1, 2).flatten(0, 1) * 1.1
        out = F.grid_sample(values, grid, mode=self.mode, padding_mode=self.padding, align_corners=self.corners)
        return out.view(b, h, 8 // h, q, 3).sum(-1)


class _Volume(nn.Module):
    """A 3-D ``grid_sample`` of an input volume at learned positions (a parameter grid)."""

    def __init__(self) -> None:
        super().__init__()
        self.grid = nn.Parameter(torch.rand(1, 2, 3, 4, 3) * 2 - 1)

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        return F.grid_sample(volume * 2, self.grid.expand(volume.shape[0], -1, -1, -1, -1), align_corners=True)


def _inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 8, 5, 6, generator=g), torch.randn(2, 4, 8, generator=g)


def _traced(model: nn.Module, *inputs: torch.Tensor) -> ncd.Diagram:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, *inputs)
    assert d.opaque_count == 0, d.opaque
    assert "grid_sample" in {b.prim.op for b in d.boxes()}
    return d


@pytest.mark.parametrize("mode, padding, corners", [("bilinear", "zeros", False), ("nearest", "border", True),
                                                    ("bicubic", "reflection", False), ("bilinear", "reflection", True)])
def test_deformable_sampling_is_one_box_equal_to_the_model(mode: str, padding: str, corners: bool) -> None:
    model = _Deformable(mode, padding, corners)
    d = _traced(model, *_inputs(0))
    lowered = d.to_torch()
    for seed in (0, 1):
        assert torch.equal(lowered(*_inputs(seed)), model(*_inputs(seed)))
    _gradients(model, lowered, _inputs(1))
    again = ncd.load_json(d.to_json())  # untrusted: no opaque call
    lowered_again = again.to_torch()
    lowered_again.load_state_dict(d.state_dict(lowered_again))
    assert torch.equal(lowered_again(*_inputs(1)), model(*_inputs(1)))


def test_a_volume_at_learned_positions() -> None:
    model = _Volume()
    volume = torch.randn(2, 3, 4, 5, 3)
    d = _traced(model, volume)
    lowered = d.to_torch()
    fresh = torch.randn(2, 3, 4, 5, 3)
    assert torch.equal(lowered(fresh), model(fresh))
    _gradients(model, lowered, (fresh,))


@pytest.mark.parametrize("mode", ["bilinear", "bicubic", "nearest"])
def test_the_backward_diagram_gives_autograds_gradients_of_image_and_grid(mode: str) -> None:
    """``ncd.backward`` of a sampling woven over batch and channels, lowered: autograd's ``∂image`` and ``∂grid``
    (the grid's summed over the channels it is broadcast over)."""
    from ncd.prims.sampling import GridSample

    d = ncd.Identity.of("n c y x, n q p k:2") >> GridSample("y x", "q p", "k", mode, "border")
    sizes = {"n": 2, "c": 3, "y": 4, "x": 5, "q": 3, "p": 2}
    back = ncd.backward(d)
    assert "grid_sample_grad" in {b.prim.op for b in back.boxes()}
    image = torch.randn(2, 3, 4, 5, requires_grad=True)
    grid = (torch.rand(2, 3, 2, 2) * 2.4 - 1.2).requires_grad_()
    out = F.grid_sample(image, grid, mode=mode, padding_mode="border", align_corners=False)
    cotangent = torch.randn_like(out)
    want = torch.autograd.grad(out, (image, grid), cotangent)
    stored = (image.detach(), grid.detach()[:, None].expand(2, 3, 3, 2, 2))  # the grid as each channel reads it
    got = back.to_torch(**sizes)(*stored, cotangent)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


class _Codebook(nn.Module):
    """A vector quantiser's nearest entry (Mimi's ``cdist(x[None], embed[None])[0].argmin(-1)``), its entry looked up,
    plus a soft assignment by the distances (``cdist`` of a projection with itself too)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.project = nn.Linear(6, 4)
        self.embed = nn.Parameter(torch.randn(7, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.project(x)  # b t m
        nearest = torch.cdist(h.flatten(0, 1)[None], self.embed[None], p=self.p)[0].argmin(-1)
        soft = torch.softmax(-torch.cdist(h, self.embed.expand(h.shape[0], -1, -1), p=self.p), -1) @ self.embed
        return self.embed[nearest].view_as(h) + soft + torch.cdist(h, h, p=self.p).mean(-1, keepdim=True)


@pytest.mark.parametrize("p", [2.0, 1.0])
def test_distances_are_one_box_equal_to_the_model(p: float) -> None:
    """30 tokens: torch's matrix-product formula for ``p = 2`` (past 25 rows), which the lowered module's own
    ``cdist`` call picks too, so the nearest entries agree."""
    model = _Codebook(p)
    g = torch.Generator().manual_seed(0)
    x, fresh = torch.randn(2, 30, 6, generator=g), torch.randn(2, 30, 6, generator=g)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ncd.trace(model, x)
    assert d.opaque_count == 0, d.opaque
    assert [b.prim.op for b in d.boxes()].count("cdist") == 3
    lowered = d.to_torch()
    for inputs in (x, fresh):
        assert torch.equal(lowered(inputs), model(inputs))
    _same_gradients(model, lowered, fresh)
    again = ncd.load_json(d.to_json())
    lowered_again = again.to_torch()
    lowered_again.load_state_dict(d.state_dict(lowered_again))
    assert torch.equal(lowered_again(fresh), model(fresh))


def _same_gradients(model: nn.Module, lowered: nn.Module, x: torch.Tensor) -> None:
    """Autograd's parameter gradients, each parameter matched by its entries (the lowered module holds the codebook
    once, in the model's shape ``(7, 4)``)."""
    want, got = model(x), lowered(x)
    weights = torch.linspace(-1, 1, want.numel()).reshape(want.shape)
    mine, theirs = list(model.parameters()), list(lowered.parameters())
    assert len(mine) == len(theirs)
    want_grads = torch.autograd.grad((want * weights).sum(), mine)
    got_grads = torch.autograd.grad((got * weights).sum(), theirs)
    for p, g in zip(mine, want_grads):
        (k,) = [k for k, q in enumerate(theirs) if q.numel() == p.numel() and torch.equal(q.flatten(), p.flatten())]
        torch.testing.assert_close(got_grads[k].flatten(), g.flatten(), rtol=1e-5, atol=1e-5)


def test_the_backward_diagram_of_distances_gives_autograds_gradients() -> None:
    from ncd.prims.distance import CDist

    d = ncd.Identity.of("b i m, j m") >> CDist("i m", "j m")
    back = ncd.backward(d)
    assert "cdist_grad" in {b.prim.op for b in back.boxes()}
    x, y = torch.randn(2, 30, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True)
    out = torch.cdist(x, y)
    cotangent = torch.randn_like(out)
    want = torch.autograd.grad(out, (x, y), cotangent)
    stored = (x.detach(), y.detach()[None].expand(2, 4, 3), out.detach())  # y as each batch entry reads it
    got = back.to_torch(b=2, i=30, j=4, m=3)(*stored, cotangent)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
